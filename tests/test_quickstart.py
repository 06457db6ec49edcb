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


def test_report_embeds_the_catalog_figures_and_compares_no_single_run(first_run):
    """Issue 30: report.md named pareto.png and latency_vs_mflops.png without showing them, and
    gave one run a "speed-up vs reference" column; --fast's chance-level accuracy is explained."""
    out, summary = first_run
    md = (out / "report" / "report.md").read_text()
    for name in ("pareto.png", "latency_vs_mflops.png", "accuracy.png", "train_time.png", "histograms.png"):
        assert f"]({name})" in md, name
    assert "speed-up" not in md.lower() and "Speed-ups are" not in md
    assert summary["accuracy_note"] and "expected" in summary["accuracy_note"]
    assert summary["accuracy_note"] in md


def test_piped_output_has_progress_lines_whole_tables_and_the_fast_note(first_run, capfd):
    """Issue 30: without a terminal the quickstart printed nothing for a minute and wrapped its
    tables at 80 columns; --fast said nothing about its chance-level accuracy."""
    out, summary = first_run
    capfd.readouterr()
    assert main(["quickstart", "--fast", "--device", "cpu", "--out", str(out)]) == 0  # resumes: seconds
    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    for stage in ("train", "evaluate", "catalog", "report"):
        assert any(line.startswith(f"quickstart: {stage}") for line in lines), (stage, captured.err)
    printed = captured.out.splitlines()
    assert any(f"catalog select --catalog {out / 'catalog.db'} --target cpu --max-latency-ms 2" in line
               for line in printed), captured.out
    assert any(len(line) > 80 for line in printed)
    assert summary["accuracy_note"] in printed


def test_progress_lines_are_few_and_say_where_each_stage_is():
    from ofa_deploy.quickstart import ProgressLines

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    import io

    clock, stream = Clock(), io.StringIO()
    say = ProgressLines(stream, every_s=5.0, clock=clock)
    say("train", 0, 10)
    for epoch in range(1, 11):  # an epoch every 2 s: a line every 5 s, and the last
        clock.now += 2.0
        say("train", epoch, 10)
    say("train", 10, 10)  # repeated: no second line
    say("catalog", 0, 6)
    say("catalog", 6, 6)
    say("catalog", 0, 3)  # a new count within the stage
    assert stream.getvalue().splitlines() == [
        "quickstart: train    0/10 epochs (0 s)",
        "quickstart: train    3/10 epochs (6 s)",
        "quickstart: train    6/10 epochs (12 s)",
        "quickstart: train    9/10 epochs (18 s)",
        "quickstart: train    10/10 epochs (20 s)",
        "quickstart: catalog  0/6 (20 s)",
        "quickstart: catalog  6/6 (20 s)",
        "quickstart: catalog  0/3 (20 s)",
    ]


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


def test_every_catalog_model_says_how_to_preprocess_its_input(first_run):
    """Issue 30: the files `catalog select` hands out carry their preprocessing, in model.json
    and in the ONNX metadata."""
    import onnx

    from ofa_deploy.data.preprocessing import ONNX_METADATA_KEY
    from ofa_deploy.schemas import check_preprocessing

    out, summary = first_run
    sidecars = list((out / "artifacts").rglob("model.json"))
    assert len(sidecars) == summary["catalog_entries"]
    for path in sidecars:
        record = json.loads(path.read_text())["preprocessing"]
        check_preprocessing(record, str(path))
        assert (record["dataset"], record["size"], record["mean"], len(record["classes"])) == ("digits", 32,
                                                                                                 [0.3054], 10)
        props = {p.key: p.value for p in onnx.load(str(path.parent / "model.onnx")).metadata_props}
        assert json.loads(props[ONNX_METADATA_KEY]) == record


def test_unstable_entries_are_counted_with_what_to_do(first_run, tmp_path, capsys):
    """Issue 30: the summary (printed and summary.json), report.md and `catalog select` say how
    many entries are unstable and how to re-measure them."""
    import shutil

    out, summary = first_run
    assert (summary["unstable_entries"] > 0) == (summary["unstable_note"] is not None)
    copy = tmp_path / "quickstart"
    shutil.copytree(out, copy)
    with sqlite3.connect(copy / "catalog.db") as db:  # two entries measured on a busy machine
        db.execute("UPDATE latency SET unstable = (id IN (SELECT id FROM latency ORDER BY id LIMIT 2))")
    capsys.readouterr()
    assert main(["quickstart", "--fast", "--device", "cpu", "--out", str(copy), "--quiet"]) == 0
    printed = capsys.readouterr().out
    again = json.loads((copy / "summary.json").read_text())
    assert again["unstable_entries"] == 2 and again["catalog_work"]["measured"] == 0
    for text in (again["unstable_note"], " ".join(printed.split()), (copy / "report" / "report.md").read_text()):
        assert f"2 of {summary['catalog_entries']} entries have unstable latency" in text
        assert "--min-time-s" in text and "catalog import" in text
    capsys.readouterr()
    assert main(["catalog", "select", "--catalog", str(copy / "catalog.db"), "--target", "cpu", "--max-latency-ms",
                 "1000"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "2 of" in err and "unstable latency" in err and "ofa-deploy profile" in err
