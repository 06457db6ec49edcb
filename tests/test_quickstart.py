"""`ofa-deploy quickstart --fast`: the whole pipeline end to end, and its resume."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ofa_deploy.buckets import PAPER_BUCKETS
from ofa_deploy.cli import main
from ofa_deploy.io import sha256_file
from ofa_deploy.space import SearchSpace, Subnet


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    assert main(["quickstart", "--fast", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_pipeline_leaves_run_eval_exports_catalog_and_report(first_run):
    out, summary = first_run
    assert (out / "run" / "final.pt").is_file() and (out / "run" / "summary.json").is_file()
    evaluation = json.loads((out / "run" / "eval" / "quickstart.json").read_text())
    assert [b["mflops"] for b in evaluation["buckets"]] == list(PAPER_BUCKETS)
    assert all(b["n"] == 1 for b in evaluation["buckets"])
    for name in ("report.md", "accuracy.png", "train_time.png", "histograms.png", "pareto.png",
                 "latency_vs_mflops.png"):
        assert (out / "report" / name).is_file(), name
    assert "Catalog (target cpu)" in (out / "report" / "report.md").read_text()
    assert summary["catalog_entries"] == len(PAPER_BUCKETS)


def test_catalog_entries_are_complete_and_hashes_match(first_run, capsys):
    out, _ = first_run
    capsys.readouterr()
    assert main(["catalog", "list", "--catalog", str(out / "catalog.db"), "--target", "cpu", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == len(PAPER_BUCKETS)
    space = SearchSpace(in_channels=1, num_classes=10)
    for item in items:
        Subnet.from_dict(item["subnet"], space)
        assert item["accuracy"] is not None and item["macs"] > 0
        assert item["latency_ms"]["p90"] >= item["latency_ms"]["p50"] > 0
        onnx = Path(item["onnx"])
        sidecar = json.loads((onnx.parent / "model.json").read_text())
        assert sidecar["files"]["model.onnx"]["sha256"] == sha256_file(onnx)


def test_rerun_resumes_and_does_no_work_twice(first_run):
    out, summary = first_run
    with sqlite3.connect(out / "catalog.db") as db:
        before = db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]
    assert main(["quickstart", "--fast", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["catalog_work"] == {"evaluated": 0, "exported": 0, "measured": 0}
    assert again["buckets"] == summary["buckets"]
    with sqlite3.connect(out / "catalog.db") as db:
        assert db.execute("SELECT COUNT(*) FROM latency").fetchone()[0] == before
