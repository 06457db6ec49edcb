"""Catalog database: schema and migrations, concurrent writers, entries, Pareto front,
budgeted selection, importing results measured elsewhere, and the CLI (no torch needed
for any of it; the build pipeline has its own test file)."""

from __future__ import annotations

import json
import multiprocessing
import random
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ofa_deploy.catalog import Catalog, NothingFits, entries, import_results, pareto, select
from ofa_deploy.catalog.schema import MIGRATIONS, SCHEMA_VERSION, statements
from ofa_deploy.cli import cli
from ofa_deploy.cost import cost
from ofa_deploy.errors import OfaError
from ofa_deploy.io import sha256_file
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1)


def fake_result(p50: float, *, spread: float = 0.1, unstable: bool = False, host: str = "hostA",
                subnet=None, sha: str | None = None, target: str = "cpu") -> dict:
    """A profile result as ``profile --json`` prints it (numbers made up); a Jetson target's
    is measured with TensorRT, as on the device (import refuses another backend's)."""
    lat = {"min": p50 * 0.9, "mean": p50 * 1.02, "std": p50 * spread / 3, "p50": p50, "p90": p50 * (1 + spread),
           "p95": p50 * (1 + 1.2 * spread), "p99": p50 * (1 + 2 * spread), "max": p50 * 3}
    return {"latency_ms": lat, "n": 300, "cov": 0.2 if unstable else 0.02, "unstable": unstable,
            "latency_kind": "host", "backend": "tensorrt" if target.startswith("jetson") else "onnxruntime",
            "precision": "fp32", "batch": 1, "target": target,
            "model": {"path": "/elsewhere/model.onnx", "sha256": sha, **({"subnet": subnet} if subnet else {})},
            "environment": {"hostname": host, "date": "2026-01-01T00:00:00+00:00"}}


def fill(cat: Catalog, tmp: Path, n: int = 12, seed: int = 0) -> list[str]:
    """n random subnets with accuracy, latency and an ONNX artifact each."""
    rng = random.Random(seed)
    cat.set_space(SPACE.to_dict())
    keys = []
    for i in range(n):
        sub = SPACE.sample(rng)
        key = str(sub)
        if key in keys:
            continue
        keys.append(key)
        m, p = cost(SPACE, sub)
        cat.add_subnet(key, sub.to_dict(), m, p)
        cat.add_accuracy(key, run="r", run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                         calib_images=100, images=360, top1=rng.uniform(0.5, 0.95))
        onnx = tmp / f"m{i}.onnx"
        onnx.write_bytes(f"model {i}".encode())
        cat.add_artifact(key, "cpu", "onnx", onnx, sha256_file(onnx))
        cat.add_latency(key, fake_result(m / 1e7 * rng.uniform(0.8, 1.2), sha=sha256_file(onnx)), target="cpu")
    return keys


def test_schema_is_current_and_newer_is_refused(tmp_path: Path):
    with Catalog(tmp_path / "c.db") as cat:
        assert cat.version == SCHEMA_VERSION
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cat.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(OfaError, match="newer"):
        Catalog(tmp_path / "c.db")


def test_migration_from_version_1_keeps_rows(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO subnets VALUES ('k', 'k', '{}', 1, 2, 'd')")
    conn.execute("INSERT INTO latency (subnet, target, backend, precision, batch, p50, p90, p99, mean, std, min, "
                 "cov, n, unstable, stats, environment, source, date, result_sha256) VALUES "
                 "('k', 'cpu', 'onnxruntime', 'fp32', 1, 1, 2, 3, 1, 0.1, 0.5, 0.01, 10, 0, '{}', '{}', 'm', 'd', 'h')")
    conn.commit()
    conn.close()
    with Catalog(path) as cat:
        assert cat.version == SCHEMA_VERSION
        row = cat.conn.execute("SELECT latency_kind, p50 FROM latency").fetchone()
        assert tuple(row) == ("host", 1.0)


def test_not_a_database_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(OfaError, match="not an SQLite database"):
        Catalog(bad)
    with pytest.raises(OfaError, match="does not exist"):
        Catalog(tmp_path / "missing.db", create=False)


def _writer(path: str, worker: int, count: int) -> None:
    with Catalog(path) as cat:
        cat.set_space(SPACE.to_dict())
        rng = random.Random(worker)
        for i in range(count):
            sub = SPACE.sample(rng)
            m, p = cost(SPACE, sub)
            cat.add_subnet(str(sub), sub.to_dict(), m, p)
            result = fake_result(1.0 + worker + i / 1000, host=f"w{worker}")
            cat.add_latency(str(sub), result, target="cpu")


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    with Catalog(path) as cat:
        assert cat.count("latency") == 100
        assert cat.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_space_mismatch_is_refused(tmp_path: Path):
    with Catalog(tmp_path / "c.db") as cat:
        cat.set_space(SPACE.to_dict())
        cat.set_space(SPACE.to_dict())
        with pytest.raises(OfaError, match="another search space"):
            cat.set_space(SearchSpace(in_channels=3).to_dict())


def test_entries_pareto_and_select(tmp_path: Path):
    with Catalog(tmp_path / "c.db") as cat:
        fill(cat, tmp_path)
        items = entries(cat, "cpu")
    assert len(items) >= 10
    for e in items:
        assert set(e) >= {"subnet", "macs", "accuracy", "latency_ms", "onnx"}
        assert set(e["subnet"]) == {"ks", "e", "d"} and Path(e["onnx"]).is_file()
    front = pareto(items)
    # brute force: on the front iff nothing is at least as fast and strictly more accurate
    for e in items:
        dominated = any(o["latency_ms"]["p90"] <= e["latency_ms"]["p90"] and o["accuracy"] > e["accuracy"]
                        for o in items)
        assert (e in front) == (not dominated)
    budgets = sorted(e["latency_ms"]["p90"] for e in items)
    for budget in budgets[::2]:
        chosen = select(items, max_latency_ms=budget)
        assert chosen["latency_ms"]["p90"] <= budget
        assert chosen["accuracy"] == max(e["accuracy"] for e in items if e["latency_ms"]["p90"] <= budget)
    mf = sorted(e["mflops"] for e in items)[3]
    assert select(items, max_mflops=mf)["mflops"] <= mf
    with pytest.raises(NothingFits) as info:
        select(items, max_latency_ms=budgets[0] / 2)
    assert info.value.fastest["latency_ms"]["p90"] == budgets[0]
    assert info.value.fastest["text"] in str(info.value)


def test_unstable_and_newer_measurements(tmp_path: Path):
    with Catalog(tmp_path / "c.db") as cat:
        keys = fill(cat, tmp_path, n=3)
        cat.add_latency(keys[0], fake_result(0.001, unstable=True, host="other"), target="cpu")
        e = {x["key"]: x for x in entries(cat, "cpu")}[keys[0]]
        assert not e["unstable"] and e["latency_ms"]["p50"] > 0.001  # a stable row wins over a newer unstable one
        sub = SPACE.smallest()
        cat.add_subnet(str(sub), sub.to_dict(), *cost(SPACE, sub))
        cat.add_accuracy(str(sub), run="r", run_sha256="abc", dataset="digits", split="test", recalibrated=True,
                         calib_images=1, images=1, top1=0.99)
        cat.add_latency(str(sub), fake_result(0.0001, unstable=True), target="cpu")
        items = entries(cat, "cpu")
    flagged = [x for x in items if x["key"] == str(sub)][0]
    assert flagged["unstable"] and flagged["onnx"] is None
    assert select(items, max_latency_ms=1e9)["key"] != str(sub)  # never selected unless allowed
    assert select(items, max_latency_ms=1e9, allow_unstable=False)["unstable"] is False


def test_import_results_from_another_machine(tmp_path: Path):
    sub = SPACE.middle()
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"exported here")
    sha = sha256_file(onnx)
    jetson = fake_result(0.8, sha=sha, subnet=sub.to_dict(), target="jetson-orin", host="orin")
    jetson["model"]["space"] = SPACE.to_dict()
    jetson["model"]["accuracy"] = {"top1": 0.9, "images": 360}
    jetson["model"]["source"] = {"run_dir": "/runs/x", "checkpoint_sha256": "c0ffee", "dataset": "digits"}
    jetson["latency_kind"] = "device_compute"
    jetson["environment"]["jetson"] = {"nvpmodel": "NV Power Mode: MAXN 0", "jetson_clocks": "on"}
    results = tmp_path / "results.json"
    results.write_text(json.dumps([jetson]))
    with Catalog(tmp_path / "c.db") as cat:
        cat.set_space(SPACE.to_dict())
        cat.add_subnet(str(sub), sub.to_dict(), *cost(SPACE, sub))
        cat.add_artifact(str(sub), "cpu", "onnx", onnx, sha)  # exported for the workstation, same file
        counts = import_results(cat, results)
        assert {k: counts[k] for k in ("results", "added", "duplicates", "targets")} == {
            "results": 1, "added": 1, "duplicates": 0, "targets": ["jetson-orin"]}
        assert import_results(cat, results)["added"] == 0
        (e,) = entries(cat, "jetson-orin")
    assert e["latency_ms"]["p50"] == 0.8 and e["latency_kind"] == "device_compute" and e["host"] == "orin"
    assert e["accuracy"] == 0.9 and e["onnx"] == str(onnx) and e["source"].startswith("imported")


def test_import_errors(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    anonymous = tmp_path / "anon.json"
    anonymous.write_text(json.dumps(fake_result(1.0)))
    with Catalog(tmp_path / "c.db") as cat:
        with pytest.raises(OfaError, match="not a profile result"):
            import_results(cat, bad)
        with pytest.raises(OfaError, match="no search space"):
            import_results(cat, anonymous)
        cat.set_space(SPACE.to_dict())
        with pytest.raises(OfaError, match="which subnet"):
            import_results(cat, anonymous)
        counts = import_results(cat, anonymous, subnet=str(SPACE.smallest()))
        assert counts["added"] == 1
        sidecar = tmp_path / "model.json"
        sidecar.write_text(json.dumps({"format": "ofa-deploy/model", "subnet": SPACE.largest().to_dict(),
                                       "space": SPACE.to_dict()}))
        engine_result = fake_result(2.0, target="jetson-orin")
        (tmp_path / "engine.json").write_text(json.dumps(engine_result))
        assert import_results(cat, tmp_path / "engine.json", model_json=sidecar)["added"] == 1
        assert [e["key"] for e in entries(cat, "jetson-orin")] == [str(SPACE.largest())]


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_list_select_plot(tmp_path: Path):
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path)
    res = _invoke("catalog", "list", "--catalog", str(db), "--target", "cpu", "--json")
    assert res.exit_code == 0, res.output
    items = json.loads(res.output)
    assert isinstance(items, list) and all(Path(e["onnx"]).is_file() for e in items)
    budget = sorted(e["latency_ms"]["p90"] for e in items)[len(items) // 2]
    res = _invoke("catalog", "select", "--catalog", str(db), "--target", "cpu", "--max-latency-ms", str(budget),
                  "--json")
    assert res.exit_code == 0
    chosen = json.loads(res.output)
    assert chosen["latency_ms"]["p90"] <= budget and "subnet" in chosen and "macs" in chosen
    res = _invoke("catalog", "pareto", "--catalog", str(db), "--target", "cpu", "--json")
    assert res.exit_code == 0 and len(json.loads(res.output)) >= 1
    res = _invoke("catalog", "show", items[0]["text"], "--catalog", str(db), "--target", "cpu", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["onnx_verified"] is True
    png = tmp_path / "plot.png"
    res = _invoke("catalog", "plot", "--catalog", str(db), "--target", "cpu", "--out", str(png))
    assert res.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_target_defaults_to_the_catalogs_only_target(tmp_path: Path, capfd):
    """Issue 30: `catalog list` demanded --target of a catalog that holds one target."""
    from ofa_deploy.cli import main

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path)
    with_target = _invoke("catalog", "list", "--catalog", str(db), "--target", "cpu")
    without = _invoke("catalog", "list", "--catalog", str(db))
    assert without.exit_code == 0 and without.output == with_target.output and without.output
    for args in (["pareto"], ["select", "--max-latency-ms", "1000"], ["plot", "--out", str(tmp_path / "p.png")]):
        res = _invoke("catalog", *args, "--catalog", str(db))
        assert res.exit_code == 0, (args, res.output)
    key = json.loads(_invoke("catalog", "list", "--catalog", str(db), "--json").output)[0]["text"]
    assert _invoke("catalog", "show", key, "--catalog", str(db)).exit_code == 0
    # two targets: which one is for the user to say
    with Catalog(db) as cat:
        some = entries(cat, "cpu")[0]
        cat.add_latency(some["key"], fake_result(1.0, target="jetson-orin"), target="jetson-orin")
    capfd.readouterr()
    assert main(["catalog", "list", "--catalog", str(db)]) == 2
    assert "holds 2 targets (cpu, jetson-orin); choose one with --target" in capfd.readouterr().err
    # an empty catalog: nothing to default to
    with Catalog(tmp_path / "empty.db") as cat:
        cat.set_space(SPACE.to_dict())
    assert main(["catalog", "list", "--catalog", str(tmp_path / "empty.db")]) == 2
    assert "no measurements yet" in capfd.readouterr().err


def test_plot_legend_hides_no_point(tmp_path: Path):
    """Issue 30: the legend sat inside the panels and hid 2 of the quickstart's 6 models."""
    import matplotlib.pyplot as plt

    from ofa_deploy.catalog.plot import catalog_figure

    with Catalog(tmp_path / "c.db") as cat:
        fill(cat, tmp_path, n=12, seed=3)
        items = entries(cat, "cpu")
    items[-1]["unstable"] = True
    fig = catalog_figure(items, target="cpu")
    try:
        fig.canvas.draw()
        assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
        box = fig.legends[0].get_window_extent()
        for ax in fig.axes:
            frame = ax.get_window_extent()
            assert not frame.overlaps(box)
            for collection in ax.collections:  # every drawn point lies inside its panel
                for x, y in ax.transData.transform(collection.get_offsets()):
                    assert frame.contains(x, y)
    finally:
        plt.close(fig)


def test_cli_nothing_fits_exits_1_and_names_fastest(tmp_path: Path):
    from ofa_deploy.cli import main

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path)
        fastest = entries(cat, "cpu")[0]
    code = main(["catalog", "select", "--catalog", str(db), "--target", "cpu", "--max-latency-ms", "1e-6"])
    assert code == 1
    code = main(["catalog", "list", "--catalog", str(tmp_path / "none.db"), "--target", "cpu"])
    assert code == 2
    code = main(["catalog", "list", "--catalog", str(db), "--target", "jetson-orin"])
    assert code == 2
    assert fastest["text"]


def test_cli_nothing_fits_message(tmp_path: Path, capfd):
    from ofa_deploy.cli import main

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path)
        fastest = entries(cat, "cpu")[0]
    assert main(["catalog", "select", "--catalog", str(db), "--target", "cpu", "--max-mflops", "0.5"]) == 1
    err = capfd.readouterr().err
    assert "nothing meets that budget" in err and fastest["text"] in err


def test_catalog_and_predictor_work_without_torch(tmp_path: Path):
    import os
    import subprocess
    import sys

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path)
    block = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['ofa-deploy'] + sys.argv[1:]; "
             "runpy.run_module('ofa_deploy', run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", block, "catalog", "list", "--catalog", str(db), "--target", "cpu",
                           "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) >= 10
