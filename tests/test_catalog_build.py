"""``catalog build`` end to end on a (random-weight) run: every entry complete and its
ONNX hash intact, a rerun does no new work, select honours budgets, and results
profiled elsewhere (an export directory profiled "on a Jetson") import into it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_torch_thread

from ofa_deploy.catalog import Catalog, entries, select
from ofa_deploy.cli import cli
from ofa_deploy.io import sha256_file

FAST = ["--warmup-s", "0.02", "--min-iterations", "20", "--min-time-s", "0.05"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Exports here run beside ONNX Runtime timing on a shared 2-core machine."""
    with one_torch_thread():
        yield


def _build(run: Path, db: Path, *extra: str) -> dict:
    res = CliRunner().invoke(cli, ["catalog", "build", str(run), "--target", "cpu", "--catalog", str(db), "--n", "5",
                                   "--finalists", "3", "--calib-images", "64", "--test-images", "100", *FAST,
                                   "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{"):])


def _predictor(tmp_path: Path) -> Path:
    """A predictor fitted to made-up latencies proportional to MACs (no measuring)."""
    from ofa_deploy.cost import macs
    from ofa_deploy.predictor.predictor import fit
    from ofa_deploy.profile.collect import design_subnets
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    subs = design_subnets(space, 30, seed=5)
    return fit(space, subs, [macs(space, s) / 1e7 for s in subs], target="cpu").save(tmp_path / "pred.json")


def test_build_is_complete_idempotent_and_selectable(fake_run: Path, tmp_path: Path):
    db = tmp_path / "cat" / "catalog.db"
    predictor = _predictor(tmp_path)
    first = _build(fake_run, db, "--predictor", str(predictor), "--budget-ms", "0.5")
    assert first["proxy"] == "predictor"
    assert first["evaluated"] == 5 and first["exported"] == len(first["finalists"]) == first["measured"] >= 1
    with Catalog(db) as cat:
        items = entries(cat, "cpu")
        counts = {t: cat.count(t) for t in ("subnets", "accuracy", "artifacts", "latency")}
    assert len(items) == len(first["finalists"])
    for e in items:
        assert e["accuracy"] is not None and 0 <= e["accuracy"] <= 1 and e["macs"] > 0
        assert e["latency_ms"]["p90"] > 0 and e["n"] >= 20
        assert Path(e["onnx"]).is_file() and sha256_file(e["onnx"]) == e["onnx_sha256"]
        sidecar = json.loads((Path(e["onnx"]).parent / "model.json").read_text())
        assert sidecar["subnet"] == e["subnet"] and sidecar["files"]["model.onnx"]["sha256"] == e["onnx_sha256"]

    again = _build(fake_run, db, "--predictor", str(predictor), "--budget-ms", "0.5")
    assert (again["evaluated"], again["exported"], again["measured"]) == (0, 0, 0)
    assert again["finalists"] == first["finalists"]
    with Catalog(db) as cat:
        assert {t: cat.count(t) for t in counts} == counts

    # latency measured on a busy machine may be flagged unstable; --allow-unstable admits it
    budget = sorted(e["latency_ms"]["p90"] for e in items)[-1]
    chosen = select(items, max_latency_ms=budget, allow_unstable=True)
    assert chosen["latency_ms"]["p90"] <= budget
    res = CliRunner().invoke(cli, ["catalog", "select", "--catalog", str(db), "--target", "cpu",
                                   "--max-latency-ms", "0.000001", "--allow-unstable"])
    assert res.exit_code == 1 and "nothing meets that budget" in res.output
    fastest = min(items, key=lambda e: e["latency_ms"]["p90"])
    assert fastest["text"] in res.output


def test_build_refuses_bad_input(fake_run: Path, tmp_path: Path):
    from ofa_deploy.cli import main

    db = str(tmp_path / "c.db")
    assert main(["catalog", "build", str(fake_run), "--target", "cpu", "--catalog", db, "--budget-ms", "1"]) == 2
    assert main(["catalog", "build", str(tmp_path / "nope"), "--target", "cpu", "--catalog", db]) == 2
    assert main(["catalog", "build", str(fake_run), "--target", "cpu", "--catalog", db, "--predictor",
                 str(tmp_path / "missing.json")]) == 2
    assert main(["catalog", "build", str(fake_run), "--target", "jetson-orin", "--catalog", db]) == 2
    assert not (tmp_path / "artifacts").exists()


def test_build_for_a_device_exports_without_measuring(fake_run: Path, tmp_path: Path):
    db = tmp_path / "catalog.db"
    res = CliRunner().invoke(cli, ["catalog", "build", str(fake_run), "--target", "jetson-orin", "--catalog", str(db),
                                   "--n", "3", "--finalists", "1", "--calib-images", "64", "--test-images", "50",
                                   "--no-measure", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["measured"] == 0 and len(summary["to_measure"]) == len(summary["finalists"]) >= 1
    export_dir = Path(summary["to_measure"][0])
    sidecar = json.loads((export_dir / "model.json").read_text())
    assert sidecar["target"]["name"] == "jetson-orin" and (export_dir / "calibration.npy").is_file()
    with Catalog(db) as cat:
        assert sidecar["precision"] == "fp16"  # the target's default precision, carried by the ONNX
        assert cat.count("latency") == 0 and cat.artifact(sidecar["subnet_text"], "jetson-orin", "onnx",
                                                          "fp16") is not None


def test_jetson_results_import_into_workstation_catalog(fake_run: Path, tmp_path: Path):
    """An export directory profiled elsewhere (here: profiled with torch blocked, then
    relabelled as a Jetson measurement) merges into a catalog built on this machine."""
    db = tmp_path / "catalog.db"
    _build(fake_run, db)
    with Catalog(db) as cat:
        entry = entries(cat, "cpu")[0]
    export_dir = Path(entry["onnx"]).parent
    block_torch = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['ofa-deploy'] + sys.argv[1:]; "
                   "runpy.run_module('ofa_deploy', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", block_torch, "profile", str(export_dir), "--json",
                           "--cov-threshold", "100", *FAST], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"]["subnet"] == entry["subnet"] and result["model"]["sha256"] == entry["onnx_sha256"]
    result["target"] = "jetson-orin"
    result["environment"]["hostname"] = "orin-nano"
    results = tmp_path / "jetson.json"
    results.write_text(json.dumps([result]))
    # an ONNX Runtime CPU measurement is not a Jetson one: refused unless forced, then flagged
    res = CliRunner().invoke(cli, ["catalog", "import", str(results), "--catalog", str(db), "--json"])
    assert res.exit_code != 0 and "--allow-backend-mismatch" in str(res.exception)
    forced = ["--allow-backend-mismatch", "--json"]
    res = CliRunner().invoke(cli, ["catalog", "import", str(results), "--catalog", str(db), *forced])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["added"] == 1 and json.loads(res.output)["linked"] == 1
    res = CliRunner().invoke(cli, ["catalog", "list", "--catalog", str(db), "--target", "jetson", "--json"])
    (imported,) = json.loads(res.output)
    assert imported["subnet"] == entry["subnet"] and imported["host"] == "orin-nano"
    assert imported["accuracy"] == pytest.approx(entry["accuracy"]) and imported["onnx"] == entry["onnx"]
    assert "tensorrt" in imported["backend_mismatch"]
    res = CliRunner().invoke(cli, ["catalog", "import", str(results), "--catalog", str(db), *forced])
    assert json.loads(res.output)["added"] == 0

    # what is profiled is what was exported: a changed file is refused
    import shutil

    from ofa_deploy.errors import OfaError
    from ofa_deploy.profile import profile_model

    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(OfaError, match="does not match"):
        profile_model(copy, "cpu")
