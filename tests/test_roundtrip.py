"""The device loop a user walks (issue 30): every model file says how to preprocess its
input; export for a Jetson at home, build the engine and profile it "on the device" (the
TensorRT stand-in of ``trt_fake.py``), import the result at home and ``catalog select``
answers with the very file that was measured and its preprocessing; a CPU-fallback
measurement of a Jetson target is refused by import and, when forced, flagged in list,
select and the HTML page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import trt_fake
from conftest import assert_one_line_error, make_fake_run, one_torch_thread, run_cli

from ofa_deploy.data.preprocessing import ONNX_METADATA_KEY
from ofa_deploy.io import sha256_file
from ofa_deploy.schemas import check_preprocessing

FAST_EXPORT = ["--bn-images", "100", "--parity-images", "32", "--calibration-images", "16"]
FAST_PROFILE = ["--warmup-s", "0.02", "--min-iterations", "20", "--min-time-s", "0.05", "--cov-threshold", "100"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("roundtrip") / "run")


@pytest.fixture(scope="module")
def orin_export(run_dir, tmp_path_factory) -> Path:
    """``export RUN --smallest --target jetson-orin`` (its accuracy measured: select needs it)."""
    from ofa_deploy.cli import main

    out = tmp_path_factory.mktemp("home") / "orin"
    assert main(["export", str(run_dir), "--smallest", "--target", "jetson-orin", "--out", str(out),
                 *FAST_EXPORT]) == 0
    return out


def assert_preprocessing(export_dir: Path, size: int = 32) -> dict:
    """model.json and the ONNX metadata carry the same complete preprocessing record."""
    sidecar = json.loads((export_dir / "model.json").read_text())
    record = sidecar["preprocessing"]
    assert record is not None, export_dir
    check_preprocessing(record, str(export_dir))
    assert record["size"] == size and record["channels"] == 1 and record["color"] == "grey"
    assert record["mean"] == [0.3054] and record["std"] == [0.3236] and record["scale"] == 255.0
    assert record["classes"] == [str(i) for i in range(10)] and record["resize"]
    assert sidecar["input"]["normalization"]["mean"] == [0.3054]  # the older entry, no longer null
    props = {p.key: p.value for p in onnx.load(str(export_dir / "model.onnx")).metadata_props}
    assert json.loads(props[ONNX_METADATA_KEY]) == record
    return record


def test_every_command_that_writes_a_model_records_its_preprocessing(run_dir, orin_export, tmp_path, capsys):
    # export (one subnet, and every bucket); catalog build (measured here, and exported for a
    # device); quickstart's models are catalog-build exports, checked in test_quickstart.py
    assert_preprocessing(orin_export)
    code, out, err = run_cli(capsys, "export", run_dir, "--all-buckets", "--target", "cpu", "--out",
                             tmp_path / "buckets", "--no-accuracy", *FAST_EXPORT)
    assert code == 0, err
    buckets = sorted(p for p in (tmp_path / "buckets").iterdir() if p.is_dir())
    assert buckets
    for d in buckets:
        assert_preprocessing(d)
    for target, extra in (("cpu", ["--warmup-s", "0.02", "--min-iterations", "10", "--min-time-s", "0.02"]),
                          ("jetson-orin", ["--no-measure"])):
        db = tmp_path / f"{target}.db"
        code, out, err = run_cli(capsys, "catalog", "build", run_dir, "--target", target, "--catalog", db, "--n", 3,
                                 "--finalists", 2, "--calib-images", 64, "--test-images", 50, *extra)
        assert code == 0, err
        made = list((tmp_path / "artifacts" / target).rglob("model.json"))
        assert made, target
        for sidecar in made:
            assert_preprocessing(sidecar.parent)


def test_a_record_that_does_not_fit_the_network_is_refused():
    from ofa_deploy.errors import OfaError
    from ofa_deploy.export.pipeline import _preprocessing
    from ofa_deploy.space import SearchSpace

    record = {"version": 1, "size": 32, "resize": "none", "channels": 3, "mean": [0.5] * 3, "std": [0.2] * 3,
              "classes": [str(i) for i in range(10)]}
    with pytest.raises(OfaError, match="does not fit the network"):
        _preprocessing(record, None, SearchSpace(in_channels=1))
    with pytest.raises(OfaError, match="one value per channel"):
        check_preprocessing({**record, "mean": [0.5]}, "x")


def _device_copy(export_dir: Path, where: Path) -> Path:
    """The export directory as copied onto the device."""
    shutil.copytree(export_dir, where)
    return where


def test_device_round_trip_select_answers_with_the_measured_file(orin_export, tmp_path, monkeypatch, capsys):
    # on the device: build the engine and profile it with TensorRT (the stand-in)
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    trt_fake.install(monkeypatch, "10.3")
    from ofa_deploy.export import trt_build, trt_env

    jetson = "# R36 (release), REVISION: 4.3"  # what /etc/nv_tegra_release says on an Orin
    monkeypatch.setattr(trt_build, "jetson_release", lambda: jetson)
    monkeypatch.setattr(trt_env, "jetson_release", lambda: jetson)
    device_dir = _device_copy(orin_export, tmp_path / "device" / "orin")
    code, out, err = run_cli(capsys, "build-engine", device_dir, "--target", "jetson-orin")
    assert code == 0, err
    result_file = tmp_path / "device" / "lat.json"
    code, out, err = run_cli(capsys, "profile", device_dir, "--target", "jetson-orin", "--json", "--out",
                             result_file, *FAST_PROFILE)
    assert code == 0, err
    result = json.loads(result_file.read_text())
    sidecar = json.loads((orin_export / "model.json").read_text())
    assert result["backend"] == "tensorrt" and result["target"] == "jetson-orin"
    assert result["backend_mismatch"] is None and result["model"]["format"] == "engine"
    assert result["model"]["onnx_sha256"] == sidecar["files"]["model.onnx"]["sha256"]
    monkeypatch.undo()  # home has no TensorRT

    # at home: import with the export's model.json, then select
    db = tmp_path / "home.db"
    code, out, err = run_cli(capsys, "catalog", "import", result_file, "--catalog", db, "--model-json",
                             orin_export / "model.json", "--json")
    assert code == 0, err
    counts = json.loads(out)
    assert (counts["added"], counts["linked"], counts["unlinked"], counts["mismatched"]) == (1, 1, 0, 0)
    code, out, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "jetson-orin",
                             "--max-latency-ms", 10000, "--json")
    assert code == 0, err
    entry = json.loads(out)
    onnx_file = Path(entry["onnx"])
    assert onnx_file == (orin_export / "model.onnx").resolve()
    assert sha256_file(onnx_file) == entry["onnx_sha256"] == result["model"]["onnx_sha256"]
    assert entry["preprocessing"] == sidecar["preprocessing"] and entry["backend_mismatch"] is None
    assert entry["precision"] == "fp16" and entry["accuracy"] == pytest.approx(sidecar["accuracy"]["top1"])
    code, out, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "jetson",
                             "--max-latency-ms", 10000)
    assert code == 0, err
    assert f"onnx: {onnx_file}" in out and "preprocessing: 32x32 grey" in out and "mean [0.3054]" in out

    # the measured file must be the export's: another export's model.json is refused, nothing written
    other = tmp_path / "other"
    shutil.copytree(orin_export, other)
    record = json.loads((other / "model.json").read_text())
    record["files"]["model.onnx"]["sha256"] = "0" * 64
    (other / "model.json").write_text(json.dumps(record))
    code, out, err = run_cli(capsys, "catalog", "import", result_file, "--catalog", tmp_path / "none.db",
                             "--model-json", other / "model.json")
    assert_one_line_error(code, err, "another export")
    assert not (tmp_path / "none.db").exists()


def test_a_cpu_fallback_is_refused_and_flagged_when_forced(orin_export, tmp_path, capsys):
    # `profile --target jetson-orin` here: no engine, no TensorRT -> ONNX Runtime on the CPU
    result_file = tmp_path / "fallback.json"
    code, out, err = run_cli(capsys, "profile", orin_export, "--target", "jetson-orin", "--json", "--out",
                             result_file, *FAST_PROFILE)
    assert code == 0, err
    result = json.loads(result_file.read_text())
    assert result["backend"] == "onnxruntime" and "tensorrt" in result["backend_mismatch"]
    assert "not a jetson-orin measurement" in err

    db = tmp_path / "home.db"
    code, out, err = run_cli(capsys, "catalog", "import", result_file, "--catalog", db, "--model-json",
                             orin_export / "model.json")
    assert_one_line_error(code, err, "not a jetson-orin measurement", "--allow-backend-mismatch")
    assert not db.exists()
    # a result relabelled to the Jetson (an older result without the field) is refused the same way
    result.pop("backend_mismatch")
    relabelled = tmp_path / "relabelled.json"
    relabelled.write_text(json.dumps(result))
    code, out, err = run_cli(capsys, "catalog", "import", relabelled, "--catalog", db)
    assert_one_line_error(code, err, "not a jetson-orin measurement")

    code, out, err = run_cli(capsys, "catalog", "import", result_file, "--catalog", db, "--model-json",
                             orin_export / "model.json", "--allow-backend-mismatch")
    assert code == 0, err
    assert "BACKEND MISMATCH" in err
    code, out, err = run_cli(capsys, "catalog", "list", "--catalog", db, "--target", "jetson-orin")
    assert code == 0 and "BACKEND MISMATCH" in out, err
    code, out, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "jetson-orin",
                             "--max-latency-ms", 10000)
    assert code == 0 and "BACKEND MISMATCH" in out and "not a jetson-orin measurement" in err, err
    code, out, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "jetson-orin",
                             "--max-latency-ms", 10000, "--json")
    assert "CPUExecutionProvider" in json.loads(out)["backend_mismatch"]
    page = tmp_path / "page.html"
    code, out, err = run_cli(capsys, "catalog", "html", "--catalog", db, "--out", page)
    assert code == 0, err
    assert "backend mismatch" in page.read_text().lower()


def test_select_says_why_nothing_is_usable_without_suggesting_what_was_given(tmp_path):
    from ofa_deploy.catalog.entries import NothingFits, select

    item = {"accuracy": 0.5, "unstable": True, "onnx": None, "latency_ms": {"p90": 1.0}, "mflops": 1.0,
            "text": "x"}
    with pytest.raises(NothingFits) as given:
        select([item], max_latency_ms=5, allow_unstable=True)
    assert "--allow-unstable" not in str(given.value) and "--model-json" in str(given.value)
    with pytest.raises(NothingFits) as not_given:
        select([item], max_latency_ms=5)
    assert "--allow-unstable" in str(not_given.value) and "--remeasure-unstable" in str(not_given.value)


def test_schema_4_catalog_migrates_and_flags_its_fallback_rows(tmp_path):
    """Catalog schema 5 adds latency.backend_mismatch; a schema-4 catalog opens (read-only:
    migrated in memory; for writing: in place), its rows measured on a fallback flagged."""
    import sqlite3

    from ofa_deploy.catalog import Catalog, entries
    from ofa_deploy.catalog.schema import SCHEMA_VERSION
    from ofa_deploy.cost import cost
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    path = tmp_path / "old.db"
    lat = {"min": 1.0, "mean": 1.1, "std": 0.01, "p50": 1.1, "p90": 1.2, "p95": 1.2, "p99": 1.3, "max": 2.0}
    with Catalog(path) as cat:
        cat.set_space(space.to_dict())
        for sub, fallback in ((space.smallest(), "TensorRT is not installed here; used the target's fallback"),
                              (space.largest(), None)):
            cat.add_subnet(str(sub), sub.to_dict(), *cost(space, sub))
            cat.add_latency(str(sub), {"latency_ms": lat, "n": 100, "cov": 0.01, "backend": "onnxruntime",
                                       "precision": "fp16", "fallback": fallback}, target="jetson-orin")
    with sqlite3.connect(path) as conn:  # as schema 4 left it
        conn.execute("ALTER TABLE latency DROP COLUMN backend_mismatch")
        conn.execute("ALTER TABLE accuracy DROP COLUMN chosen_on")  # schema 6's
        for column in ("drop_points", "max_drop", "reverted"):  # schema 7's
            conn.execute(f"ALTER TABLE artifacts DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 4")
    before = path.read_bytes()
    with Catalog(path, readonly=True) as cat:
        flagged = {e["key"]: e["backend_mismatch"] for e in entries(cat, "jetson-orin")}
    assert path.read_bytes() == before
    assert flagged == {str(space.smallest()): "TensorRT is not installed here; used the target's fallback",
                       str(space.largest()): None}
    with Catalog(path) as cat:
        assert cat.version == SCHEMA_VERSION == 7
        assert {e["key"]: e["backend_mismatch"] for e in entries(cat, "jetson-orin")} == flagged
