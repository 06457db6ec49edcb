"""The catalog knows precision: entries keyed by subnet x target x precision x batch, accuracy
per precision, ``--precision`` filters on list/select/pareto/plot, ``select`` over every
precision by default, and catalogs of schema 2 (before precision) migrated and usable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ofa_deploy.catalog import Catalog, entries, pareto, select
from ofa_deploy.catalog.schema import MIGRATIONS, SCHEMA_VERSION, statements
from ofa_deploy.cli import cli
from ofa_deploy.cost import cost
from ofa_deploy.io import sha256_file
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1)
SMALL, LARGE = SPACE.smallest(), SPACE.largest()


def result(p50: float, precision: str, sha: str, *, batch: int = 1) -> dict:
    """A profile result as ``profile --json`` prints it (numbers made up, steady)."""
    lat = {"min": p50 * 0.95, "mean": p50, "std": p50 * 0.01, "p50": p50, "p90": p50 * 1.05, "p95": p50 * 1.06,
           "p99": p50 * 1.1, "max": p50 * 1.5}
    return {"latency_ms": lat, "n": 300, "cov": 0.01, "unstable": False, "latency_kind": "host",
            "backend": "onnxruntime", "precision": precision, "batch": batch, "target": "cpu",
            "model": {"path": "model.onnx", "sha256": sha},
            "environment": {"hostname": "h", "date": f"2026-01-01T00:00:0{len(precision)}+00:00"}}


def add_model(cat: Catalog, tmp: Path, sub, precision: str, top1: float, p50: float, *, batch: int = 1) -> None:
    key = str(sub)
    m, p = cost(SPACE, sub)
    cat.add_subnet(key, sub.to_dict(), m, p)
    cat.add_accuracy(key, run="r", run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                     calib_images=100, images=360, top1=top1, precision=precision)
    onnx = tmp / f"{key[:20]}-{precision}.onnx".replace("/", "_")
    onnx.write_bytes(f"{key} {precision}".encode())
    cat.add_artifact(key, "cpu", "onnx", onnx, sha256_file(onnx), precision)
    cat.add_latency(key, result(p50, precision, sha256_file(onnx), batch=batch), target="cpu")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """Two subnets at fp32 and int8: int8 is faster and a little less accurate."""
    path = tmp_path / "c.db"
    with Catalog(path) as cat:
        cat.set_space(SPACE.to_dict())
        add_model(cat, tmp_path, SMALL, "fp32", 0.80, 1.0)
        add_model(cat, tmp_path, SMALL, "int8", 0.79, 0.6)
        add_model(cat, tmp_path, LARGE, "fp32", 0.90, 3.0)
        add_model(cat, tmp_path, LARGE, "int8", 0.89, 1.8)
    return path


def test_entries_are_per_precision_with_their_own_accuracy(catalog: Path):
    with Catalog(catalog, readonly=True) as cat:
        items = entries(cat, "cpu")
        assert [(e["key"] == str(LARGE), e["precision"]) for e in items] == [
            (False, "int8"), (False, "fp32"), (True, "int8"), (True, "fp32")]
        by = {(e["key"], e["precision"]): e for e in items}
        assert by[(str(LARGE), "int8")]["accuracy"] == 0.89 and by[(str(LARGE), "fp32")]["accuracy"] == 0.90
        assert all(e["accuracy_precision"] == e["precision"] for e in items)
        assert by[(str(SMALL), "int8")]["onnx"].endswith("-int8.onnx")
        assert {e["precision"] for e in entries(cat, "cpu", precision="int8")} == {"int8"}
        assert cat.precisions("cpu") == ["fp32", "int8"]
        assert entries(cat, "cpu", precision="fp16") == []


def test_select_any_precision_and_filtered(catalog: Path):
    with Catalog(catalog, readonly=True) as cat:
        items = entries(cat, "cpu")
        # under 2 ms: the large subnet only fits in int8, and beats the small one in fp32
        best = select(items, max_latency_ms=2.0)
        assert (best["key"], best["precision"]) == (str(LARGE), "int8")
        fp32 = select(entries(cat, "cpu", precision="fp32"), max_latency_ms=2.0)
        assert (fp32["key"], fp32["precision"]) == (str(SMALL), "fp32")
        # the front over both precisions: small int8, small fp32 (more accurate), large int8, large fp32
        assert [(e["key"], e["precision"]) for e in pareto(items)] == [
            (str(SMALL), "int8"), (str(SMALL), "fp32"), (str(LARGE), "int8"), (str(LARGE), "fp32")]


def test_same_subnet_two_precisions_keep_separate_artifacts_and_accuracy(tmp_path: Path):
    with Catalog(tmp_path / "c.db") as cat:
        cat.set_space(SPACE.to_dict())
        add_model(cat, tmp_path, SMALL, "fp32", 0.8, 1.0)
        add_model(cat, tmp_path, SMALL, "int8", 0.7, 0.5)
        key = str(SMALL)
        assert cat.artifact(key, "cpu", "onnx", "fp32")["path"] != cat.artifact(key, "cpu", "onnx", "int8")["path"]
        assert {r["precision"]: r["top1"] for r in cat.accuracy_rows(key)} == {"fp32": 0.8, "int8": 0.7}
        found = cat.find_accuracy(key, run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                                  calib_images=100, images=360, precision="int8")
        assert found["top1"] == 0.7
        assert cat.find_latency(key, "cpu", precision="int8")["precision"] == "int8"
        assert cat.count("accuracy") == 2 and cat.count("artifacts") == 2


def _schema2_catalog(path: Path, tmp: Path) -> str:
    """A catalog as schema 2 wrote it (no precision in accuracy/artifacts), one entry."""
    conn = sqlite3.connect(path)
    for version in (0, 1):
        for statement in statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    key = str(SMALL)
    m, p = cost(SPACE, SMALL)
    onnx = tmp / "old.onnx"
    onnx.write_bytes(b"old model")
    sha = sha256_file(onnx)
    conn.execute("INSERT INTO meta VALUES ('space', ?)", (json.dumps(SPACE.to_dict(), sort_keys=True),))
    conn.execute("INSERT INTO subnets VALUES (?, ?, ?, ?, ?, 'd')", (key, key, json.dumps(SMALL.to_dict()), m, p))
    conn.execute("INSERT INTO accuracy (subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images, "
                 "top1, loss, date) VALUES (?, 'r', 'abc', 'digits', 'test', 1, 100, 360, 0.75, 0.5, 'd')", (key,))
    conn.execute("INSERT INTO artifacts (subnet, target, kind, path, sha256, bytes, created) "
                 "VALUES (?, 'cpu', 'onnx', ?, ?, 9, 'd')", (key, str(onnx), sha))
    r = result(1.0, "fp32", sha)
    conn.execute("INSERT INTO latency (subnet, target, backend, precision, batch, artifact_sha256, p50, p90, p99, "
                 "mean, std, min, max, cov, n, unstable, stats, environment, host, source, date, result_sha256, "
                 "latency_kind) VALUES (?, 'cpu', 'onnxruntime', 'fp32', 1, ?, 1, 1.05, 1.1, 1, 0.01, 0.95, 1.5, "
                 "0.01, 300, 0, ?, '{}', 'h', 'measured', 'd', 'x', 'host')",
                 (key, sha, json.dumps({k: v for k, v in r.items() if k != "environment"})))
    # and a jetson row that was measured as an fp16 engine built from that fp32 ONNX
    conn.execute("INSERT INTO latency (subnet, target, backend, precision, batch, artifact_sha256, p50, p90, p99, "
                 "mean, std, min, max, cov, n, unstable, stats, environment, host, source, date, result_sha256, "
                 "latency_kind) VALUES (?, 'jetson-orin', 'tensorrt', 'fp16', 1, NULL, 0.3, 0.31, 0.4, 0.3, 0.01, "
                 "0.29, 0.5, 0.01, 300, 0, ?, '{}', 'j', 'imported', 'd', 'y', 'device')",
                 (key, json.dumps({k: v for k, v in result(0.3, "fp16", "z").items() if k != "environment"})))
    conn.commit()
    conn.close()
    return key


def test_schema_2_catalog_reads_read_only_and_migrates_on_write(tmp_path: Path):
    path = tmp_path / "old.db"
    key = _schema2_catalog(path, tmp_path)
    before = path.read_bytes()
    with Catalog(path, readonly=True) as cat:  # migrated in memory only
        (e,) = entries(cat, "cpu")
        assert (e["key"], e["precision"], e["accuracy"], e["accuracy_precision"]) == (key, "fp32", 0.75, "fp32")
        assert e["onnx"] == str(tmp_path / "old.onnx")
        # the fp16 engine row has no fp16 accuracy: the fp32 one stands in and says so
        (j,) = entries(cat, "jetson-orin")
        assert (j["precision"], j["accuracy"], j["accuracy_precision"]) == ("fp16", 0.75, "fp32")
    assert path.read_bytes() == before
    with Catalog(path) as cat:
        assert cat.version == SCHEMA_VERSION == 7
        assert [r["precision"] for r in cat.accuracy_rows(key)] == ["fp32"]
        assert cat.artifact(key, "cpu")["precision"] == "fp32"
        add_model(cat, tmp_path, SMALL, "int8", 0.74, 0.5)  # the new key accepts a second precision
        assert {e["precision"] for e in entries(cat, "cpu")} == {"fp32", "int8"}


def _cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_precision_filters(catalog: Path, tmp_path: Path):
    res = _cli("catalog", "list", "--catalog", catalog, "--target", "cpu")
    assert res.exit_code == 0 and res.output.count("int8") == 2 and res.output.count("fp32") == 2
    res = _cli("catalog", "list", "--catalog", catalog, "--target", "cpu", "--precision", "int8", "--json")
    assert res.exit_code == 0 and {e["precision"] for e in json.loads(res.output)} == {"int8"}
    res = _cli("catalog", "select", "--catalog", catalog, "--target", "cpu", "--max-latency-ms", "2", "--json")
    chosen = json.loads(res.output)
    assert res.exit_code == 0 and (chosen["key"], chosen["precision"]) == (str(LARGE), "int8")
    res = _cli("catalog", "select", "--catalog", catalog, "--target", "cpu", "--max-latency-ms", "2",
               "--precision", "fp32", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["key"] == str(SMALL)
    res = _cli("catalog", "pareto", "--catalog", catalog, "--target", "cpu", "--precision", "int8", "--json")
    assert res.exit_code == 0 and [e["precision"] for e in json.loads(res.output)] == ["int8", "int8"]
    res = _cli("catalog", "show", str(SMALL), "--catalog", catalog, "--target", "cpu", "--precision", "int8",
               "--json")
    assert res.exit_code == 0 and json.loads(res.output)["precision"] == "int8"
    png = tmp_path / "p.png"
    res = _cli("catalog", "plot", "--catalog", catalog, "--target", "cpu", "--precision", "int8", "--out", png)
    assert res.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_precision_bad_input(catalog: Path, capsys):
    from ofa_deploy.cli import main

    code = main(["catalog", "list", "--catalog", str(catalog), "--target", "cpu", "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no entries for target cpu at batch 1 in fp16" in err[0]
    assert "precisions measured there: fp32, int8" in err[0]
    code = main(["catalog", "select", "--catalog", str(catalog), "--target", "cpu", "--precision", "int4",
                 "--max-latency-ms", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "int4" in err[0]


def test_build_int8_stores_its_own_accuracy_beside_fp32(fake_run: Path, tmp_path: Path):
    """``catalog build --precision int8`` then fp32 for the same subnet: two entries, each
    with its own ONNX, latency and accuracy (int8's measured on the int8 file)."""
    from conftest import one_torch_thread

    from ofa_deploy.export import read_sidecar
    from ofa_deploy.profile import Protocol
    from ofa_deploy.search.build import build_catalog

    quick = Protocol(warmup_s=0.01, min_iterations=5, min_time_s=0.01, cov_threshold=10.0, max_retries=0)
    db = tmp_path / "cat" / "catalog.db"
    space = SearchSpace(in_channels=1)
    with one_torch_thread():
        for precision in ("int8", "fp32"):
            summary = build_catalog(fake_run, "cpu", db, candidates=[space.smallest()], calib_n=64, test_images=50,
                                    protocol=quick, precision=precision, calibration_images=16)
            assert summary["precision"] == precision and summary["exported"] == summary["measured"] == 1
    with Catalog(db, readonly=True) as cat:
        items = {e["precision"]: e for e in entries(cat, "cpu")}
        assert set(items) == {"fp32", "int8"}
        int8 = items["int8"]
        assert int8["accuracy_precision"] == "int8" and Path(int8["onnx"]).parent.parent.name == "int8"
        sidecar = read_sidecar(Path(int8["onnx"]).parent)
        assert sidecar["precision"] == "int8" and int8["accuracy"] == pytest.approx(sidecar["accuracy"]["top1"])
        assert items["fp32"]["accuracy"] == pytest.approx(sidecar["accuracy"]["fp32_top1"], abs=1 / 50 + 1e-9)
        assert cat.find_latency(str(space.smallest()), "cpu", precision="int8")["artifact_sha256"] == \
            int8["onnx_sha256"]


def test_schema_6_records_the_split_that_chose_each_accuracy(tmp_path: Path):
    """A schema-2 catalog migrates to 6 with its accuracy's choosing split unrecorded (NULL);
    a reported accuracy (test, chosen on val) is what an entry shows, with both splits."""
    path = tmp_path / "old.db"
    key = _schema2_catalog(path, tmp_path)
    with Catalog(path) as cat:
        assert cat.version == 7
        (row,) = cat.accuracy_rows(key)
        assert row["chosen_on"] is None and row["split"] == "test"
        common = dict(run="r", run_sha256="abc", dataset="digits", recalibrated=True, calib_images=100)
        assert cat.add_accuracy(key, split="val", images=200, top1=0.9, **common)  # a candidate's, chose
        assert cat.add_accuracy(key, split="test", images=5000, top1=0.7, chosen_on="val", **common)
        (e,) = entries(cat, "cpu")
        assert e["accuracy"] == 0.7
        assert (e["accuracy_info"]["split"], e["accuracy_info"]["chosen_on"]) == ("test", "val")
        # the same evaluation stored again without a choosing split keeps the recorded one
        assert not cat.add_accuracy(key, split="test", images=5000, top1=0.7, **common)
        assert entries(cat, "cpu")[0]["accuracy_info"]["chosen_on"] == "val"
