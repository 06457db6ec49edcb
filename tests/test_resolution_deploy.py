"""Elastic resolution downstream of training: ``eval --resolution``, ``export --resolution``,
the catalog's resolution key (schema 4 and its migration), ``catalog build`` over (subnet,
resolution) and ``catalog select`` choosing a smaller input when that is the best way
under a budget. Runs are random-weight fakes (``make_fake_run``) marked as trained at
24, 28 and 32."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import assert_one_line_error, make_fake_run, one_torch_thread, run_cli
from test_catalog import fake_result
from torch.utils.flop_counter import FlopCounterMode

from ofa_deploy import run, weights
from ofa_deploy.catalog import Catalog, entries, pareto, select
from ofa_deploy.catalog.schema import MIGRATIONS, SCHEMA_VERSION, statements
from ofa_deploy.cli import cli
from ofa_deploy.cost import cost, macs
from ofa_deploy.io import sha256_file
from ofa_deploy.resolution import space_at
from ofa_deploy.space import SearchSpace

TRAINED = [24, 28, 32]
SPACE = SearchSpace(in_channels=1)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _elastic_run(path: Path) -> Path:
    make_fake_run(path)
    config = run.read_config(path)
    config["train"]["resolutions"] = TRAINED
    run.write_config(path, config)
    return path


@pytest.fixture
def elastic_run(tmp_path: Path) -> Path:
    return _elastic_run(tmp_path / "elastic")


# -- eval -----------------------------------------------------------------------------------
def test_eval_untrained_resolution_one_line_nothing_written(capsys, elastic_run, fake_run):
    code, _, err = run_cli(capsys, "eval", elastic_run, "--subnet", "smallest", "--resolution", "20", "--quiet")
    assert_one_line_error(code, err, "--resolution 20", "24, 28, 32")
    code, _, err = run_cli(capsys, "eval", fake_run, "--subnet", "smallest", "--resolution", "24", "--quiet")
    assert_one_line_error(code, err, "--resolution 24", "trained at 32 only", "--resolutions")
    code, _, err = run_cli(capsys, "eval", elastic_run, "--subnet", "smallest", "--resolution", "all", "--name", "x")
    assert_one_line_error(code, err, "--name")
    code, _, err = run_cli(capsys, "eval", elastic_run, "--subnet", "smallest", "--resolution", "big")
    assert code == 2 and "--resolution" in err and "Traceback" not in err
    assert not (elastic_run / "eval").exists() and not (fake_run / "eval").exists()


def test_eval_all_trained_resolutions_recalibrates_and_records_each(capsys, elastic_run):
    from ofa_deploy.data import load_dataset
    from ofa_deploy.evaluate.bn import calibration_images, recalibrate_bn
    from ofa_deploy.evaluate.metrics import evaluate_accuracy

    code, out, err = run_cli(capsys, "eval", elastic_run, "--subnet", "middle", "--resolution", "all",
                             "--calib-n", "64", "--test-subset", "120", "--quiet", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [r["resolution"] for r in results] == TRAINED
    names = sorted(p.name for p in (elastic_run / "eval").glob("*.json"))
    assert names == sorted(f"test-subnet-{SPACE.middle()}-c64-t120{'' if r == 32 else f'-r{r}'}.json"
                           for r in TRAINED)

    # oracle: the weights at R, BN statistics recomputed on training images resized to R
    # (F.interpolate directly), tested on resized test images
    supernet, _ = weights.load_supernet(elastic_run)
    train = load_dataset("digits", "train").images
    test = load_dataset("digits", "test", subset=120, seed=0)
    for result in results:
        r = result["resolution"]
        entry = result["subnets"][0]
        assert entry["macs"] == macs(space_at(SPACE, r), SPACE.middle())
        assert json.loads((elastic_run / "eval" / f"{result['name']}.json").read_text())["resolution"] == r

        def at(x):
            return x if r == 32 else F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False,
                                                   antialias=True)

        net = supernet.extract(SPACE.middle())
        recalibrate_bn(net, at(calibration_images(train, 64, 0)))
        accuracy, _ = evaluate_accuracy(net, at(test.images), test.labels)
        assert abs(accuracy - entry["accuracy"]) <= 2 / 120, (r, accuracy, entry["accuracy"])


# -- export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [24, 28])
def test_macs_at_a_resolution_equal_flop_counter(resolution):
    from ofa_deploy.nn import StaticSubnet

    space = space_at(SPACE, resolution)
    import random

    rng = random.Random(resolution)
    for sub in (space.smallest(), space.middle(), space.largest(), space.sample(rng), space.sample(rng)):
        net = StaticSubnet(space, sub).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.randn(1, 1, resolution, resolution))
        assert counter.get_total_flops() == 2 * macs(space, sub), (resolution, str(sub))
    assert macs(space, space.largest()) < macs(SPACE, SPACE.largest())


def test_export_at_a_trained_resolution(capsys, elastic_run, tmp_path):
    import onnx

    out = tmp_path / "export-24"
    code, stdout, err = run_cli(capsys, "export", elastic_run, "--largest", "--resolution", "24", "--target", "cpu",
                                "--bn-images", "64", "--parity-images", "32", "--no-accuracy", "--out", out, "--json")
    assert code == 0, err
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["resolution"] == 24 and sidecar["space"]["image_size"] == 24
    assert sidecar["input"]["shape"][1:] == [1, 24, 24] and sidecar["parity"]["passed"]
    assert sidecar["macs"] == cost(space_at(SPACE, 24), SPACE.largest())[0]
    graph = onnx.load(str(out / "model.onnx")).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [1, 24, 24]  # (batch, C, R, R); the cpu target has a dynamic batch

    bad = tmp_path / "export-20"
    code, _, err = run_cli(capsys, "export", elastic_run, "--largest", "--resolution", "20", "--target", "cpu",
                           "--out", bad)
    assert_one_line_error(code, err, "--resolution 20", "24, 28, 32")
    assert not bad.exists()


# -- catalog --------------------------------------------------------------------------------
def _schema3_catalog(path: Path, image_size: int) -> str:
    """A catalog as schema 3 wrote it: one subnet with accuracy, ONNX and latency."""
    space = SearchSpace(in_channels=1, image_size=image_size)
    conn = sqlite3.connect(str(path))
    for version in range(3):
        for statement in statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    sub = space.middle()
    key = str(sub)
    m, p = cost(space, sub)
    conn.execute("INSERT INTO meta VALUES ('space', ?)", (json.dumps(space.to_dict(), sort_keys=True),))
    conn.execute("INSERT INTO subnets VALUES (?, ?, ?, ?, ?, 'then')", (key, key, json.dumps(sub.to_dict()), m, p))
    conn.execute("INSERT INTO accuracy (subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images, "
                 "top1, loss, date, precision) VALUES (?, 'r', 'abc', 'digits', 'test', 1, 100, 360, 0.9, NULL, "
                 "'then', 'fp32')", (key,))
    onnx = path.parent / "m.onnx"
    onnx.write_bytes(b"onnx")
    conn.execute("INSERT INTO artifacts (subnet, target, kind, path, sha256, bytes, created, precision) "
                 "VALUES (?, 'cpu', 'onnx', ?, ?, 4, 'then', 'fp32')", (key, str(onnx), sha256_file(onnx)))
    lat = fake_result(1.0)["latency_ms"]
    conn.execute("INSERT INTO latency (subnet, target, backend, precision, batch, artifact_sha256, p50, p90, p99, "
                 "mean, std, min, max, cov, n, unstable, stats, environment, host, source, date, result_sha256) "
                 "VALUES (?, 'cpu', 'onnxruntime', 'fp32', 1, ?, 1, 1.1, 1.2, 1, 0.01, 0.9, 3, 0.02, 300, 0, ?, "
                 "'{}', 'h', 'measured', 'then', 'x')", (key, sha256_file(onnx), json.dumps({"latency_ms": lat})))
    conn.commit()
    conn.close()
    return key


@pytest.mark.parametrize("image_size", [32, 28])
def test_schema3_rows_migrate_at_the_catalogs_image_size(tmp_path, image_size):
    db = tmp_path / "catalog.db"
    key = _schema3_catalog(db, image_size)
    with Catalog(db, readonly=True) as cat:  # an in-memory copy is migrated; the file stays as it was
        items = entries(cat, "cpu")
        assert cat.version == SCHEMA_VERSION == 7
    assert [(e["key"], e["resolution"], e["accuracy"]) for e in items] == [(key, image_size, 0.9)]
    assert items[0]["onnx"] and items[0]["macs"] == cost(SearchSpace(in_channels=1, image_size=image_size),
                                                         SPACE.middle())[0]
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    with Catalog(db) as cat:
        assert cat.version == SCHEMA_VERSION == 7
        for table in ("accuracy", "artifacts", "latency"):
            assert [r[0] for r in cat.conn.execute(f"SELECT resolution FROM {table}")] == [image_size], table
        # the key now holds resolution: the same subnet at another size is a second entry
        cat.add_accuracy(key, run="r", run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                         calib_images=100, images=360, top1=0.8, resolution=24)
        assert cat.count("accuracy") == 2


def _entry(cat: Catalog, tmp: Path, sub, resolution: int, top1: float, p50: float) -> None:
    key = str(sub)
    m, p = cost(SPACE, sub)
    cat.add_subnet(key, sub.to_dict(), m, p)
    cat.add_accuracy(key, run="r", run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                     calib_images=100, images=360, top1=top1, resolution=resolution)
    onnx = tmp / f"{key}-{resolution}.onnx"
    onnx.write_bytes(f"{key} at {resolution}".encode())
    cat.add_artifact(key, "cpu", "onnx", onnx, sha256_file(onnx), resolution=resolution)
    result = fake_result(p50, sha=sha256_file(onnx))
    result["model"]["space"] = space_at(SPACE, resolution).to_dict()  # what profiling the export records
    cat.add_latency(key, result, target="cpu")


def test_select_returns_a_lower_resolution_when_that_is_the_best_way_under_the_budget(tmp_path):
    db = tmp_path / "catalog.db"
    large, middle, small = SPACE.largest(), SPACE.middle(), SPACE.smallest()
    with Catalog(db) as cat:
        cat.set_space(SPACE.to_dict())
        _entry(cat, tmp_path, large, 32, 0.97, 3.0)
        _entry(cat, tmp_path, large, 24, 0.95, 1.6)  # the large net on smaller images
        _entry(cat, tmp_path, middle, 32, 0.93, 1.7)  # a smaller net at full size: slower and worse here
        _entry(cat, tmp_path, small, 32, 0.88, 1.0)
        items = entries(cat, "cpu")
    by = {(e["key"], e["resolution"]): e for e in items}
    assert len(items) == 4 and by[(str(large), 24)]["macs"] == macs(space_at(SPACE, 24), large)
    assert by[(str(large), 24)]["accuracy"] == 0.95 and by[(str(large), 32)]["accuracy"] == 0.97
    assert by[(str(large), 24)]["onnx"].endswith("-24.onnx")
    chosen = select(items, max_latency_ms=2.0)
    assert (chosen["key"], chosen["resolution"]) == (str(large), 24)
    assert [(e["key"], e["resolution"]) for e in pareto(items)] == [(str(small), 32), (str(large), 24),
                                                                     (str(large), 32)]
    res = CliRunner().invoke(cli, ["catalog", "select", "--catalog", str(db), "--target", "cpu",
                                   "--max-latency-ms", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["resolution"] == 24
    res = CliRunner().invoke(cli, ["catalog", "list", "--catalog", str(db), "--target", "cpu"])
    assert res.exit_code == 0 and res.output.count("24px") == 1 and res.output.count("32px") == 3
    res = CliRunner().invoke(cli, ["catalog", "show", str(large), "--catalog", str(db), "--target", "cpu"])
    assert res.exit_code == 0 and "32x32 input" in res.output  # the most accurate entry of that subnet
    from ofa_deploy.catalog.html import page_data

    with Catalog(db, readonly=True) as cat:  # the HTML page tells the two sizes of one subnet apart
        rows = page_data(cat)["targets"][0]["entries"]
    assert sorted(r["key"] for r in rows if r["key"].startswith(str(large))) == [str(large), f"{large}@24"]


FAST = ["--warmup-s", "0.02", "--min-iterations", "20", "--min-time-s", "0.05"]


def test_catalog_build_over_subnet_and_resolution(elastic_run, tmp_path):
    db = tmp_path / "cat" / "catalog.db"
    res = CliRunner().invoke(cli, ["catalog", "build", str(elastic_run), "--target", "cpu", "--catalog", str(db),
                                   "--n", "3", "--finalists", "2", "--calib-images", "64", "--test-images", "100",
                                   "--resolution", "24", "--resolution", "32", *FAST, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["resolutions"] == [24, 32] and summary["evaluated"] == 6
    assert {f["resolution"] for f in summary["finalists"]} <= {24, 32}
    with Catalog(db) as cat:
        rows = cat.conn.execute("SELECT resolution, COUNT(*) FROM accuracy WHERE chosen_on IS NULL "
                                "GROUP BY resolution").fetchall()
        assert sorted(map(tuple, rows)) == [(24, 3), (32, 3)]  # every candidate on the choosing split
        reported = cat.conn.execute("SELECT resolution FROM accuracy WHERE chosen_on IS NOT NULL").fetchall()
        assert sorted(r[0] for r in reported) == sorted(f["resolution"] for f in summary["finalists"])
        items = entries(cat, "cpu")
    assert len(items) == len(summary["finalists"]) >= 1
    for e in items:
        sidecar = json.loads((Path(e["onnx"]).parent / "model.json").read_text())
        assert sidecar["resolution"] == e["resolution"] and sidecar["input"]["shape"][2:] == [e["resolution"]] * 2
        assert e["macs"] == macs(space_at(SPACE, e["resolution"]), SPACE.subnet(**e["subnet"]))
        assert (f"/r{e['resolution']}/" in e["onnx"]) == (e["resolution"] != 32)


def test_catalog_build_refuses_untrained_resolution_and_a_predictor_of_another_size(capsys, elastic_run, tmp_path):
    from ofa_deploy.predictor.predictor import fit
    from ofa_deploy.profile.collect import design_subnets

    db = tmp_path / "catalog.db"
    code, _, err = run_cli(capsys, "catalog", "build", elastic_run, "--target", "cpu", "--catalog", db,
                           "--resolution", "20")
    assert_one_line_error(code, err, "--resolution 20")
    subs = design_subnets(SPACE, 30, seed=5)
    predictor = fit(SPACE, subs, [macs(SPACE, s) / 1e7 for s in subs], target="cpu").save(tmp_path / "pred.json")
    code, _, err = run_cli(capsys, "catalog", "build", elastic_run, "--target", "cpu", "--catalog", db,
                           "--predictor", predictor)
    assert_one_line_error(code, err, "fitted at 32x32", "24, 28", "--resolution 32")
    assert not db.exists()
