"""``catalog build --from-search DIR`` (issue 33): the search's picks for the target are the
candidates, exported and measured, recorded as chosen on the search's choosing split and
reported on the other half; a search of another run (or a bad combination) is refused in
one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, make_fake_run, one_torch_thread, run_cli

from ofa_deploy.catalog import Catalog, entries

FAST = ["--warmup-s", "0.02", "--min-iterations", "20", "--min-time-s", "0.05"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run and a search of it (two MFLOPs budgets, seed 2, 100 test images)."""
    root = tmp_path_factory.mktemp("from-search")
    run = make_fake_run(root / "run")
    out = root / "search"
    from ofa_deploy.cli import main

    with one_torch_thread():
        code = main([str(a) for a in ("search", run, "--target", "cpu", "--evaluations", "6", "--out", out,
                                      "--max-mflops", "6", "--max-mflops", "10", "--calib-images", "64",
                                      "--test-images", "100", "--generations", "3", "--seed", "2")])
    assert code == 0
    return run, out


def test_build_from_search_exports_and_measures_the_searchs_picks(searched, tmp_path: Path, capsys):
    run, out = searched
    history = json.loads((out / "history.json").read_text())
    picks = {p["subnet"] for p in history["objectives"]["cpu"]["picks"] if p["subnet"]}
    assert picks and history["test_images"] == 100
    db = tmp_path / "cat" / "catalog.db"
    code, stdout, err = run_cli(capsys, "catalog", "build", run, "--target", "cpu", "--catalog", db,
                                "--from-search", out, "--calib-images", "64", *FAST, "--json")
    assert code == 0, err
    summary = json.loads(stdout[stdout.index("{"):])
    assert {f["text"] for f in summary["finalists"]} == picks
    assert summary["candidates"] == len(picks) and summary["measured"] == summary["exported"] == len(picks)
    assert (summary["chosen_on"], summary["reported_on"]) == ("test:half1:seed2", "test:half2:seed2")
    assert summary["from_search"] == str(out) and "picks of search" in summary["splits"]
    # the choosing accuracy is the search's own measurement (same split, same calibration count)
    measured = {e["subnet"]: e["accuracy"] for e in history["evaluated"]}
    for fin in summary["finalists"]:
        assert fin["choosing_accuracy"] == pytest.approx(measured[fin["text"]])
    with Catalog(db) as cat:
        items = entries(cat, "cpu")
        assert {e["text"] for e in items} == picks
        for e in items:
            assert e["accuracy_info"]["chosen_on"] == "test:half1:seed2"
            assert e["accuracy_info"]["split"] == "test:half2:seed2"
            assert e["latency_ms"]["p90"] > 0
        # the page shows each entry's choosing split and the search behind them (catalog meta)
        from ofa_deploy.catalog.html import page_data

        data = page_data(cat)
    assert {e["chosen_on"] for e in data["targets"][0]["entries"]} == {"test:half1:seed2"}
    [search] = data["searches"]
    assert (search["target"], search["evaluations"], search["chosen_on"]) == ("cpu", 6, "test:half1:seed2")
    assert {p["subnet"] for p in search["picks"] if p["subnet"]} == picks
    assert [e["accuracy"] for e in search["evaluated"]] == [e["accuracy"] for e in history["evaluated"]]
    assert search["search_dir"] == str(out.resolve())


def test_build_from_search_refuses_another_run_and_bad_combinations(searched, tmp_path: Path, capsys):
    run, out = searched
    other = make_fake_run(tmp_path / "other-run", seed=7)
    db = tmp_path / "cat" / "catalog.db"

    def refused(*args: str, needles: tuple[str, ...], on: Path = run) -> None:
        code, _, err = run_cli(capsys, "catalog", "build", on, "--target", "cpu", "--catalog", db,
                               "--from-search", out, "--no-measure", *args)
        assert_one_line_error(code, err, *needles)
        assert not db.parent.exists()

    refused(on=other, needles=("was run on", "checkpoint sha256", "not this run's"))
    refused("--target", "jetson-orin", needles=("did not search for target jetson-orin",))
    refused("--n", "5", needles=("--n", "leave out with --from-search"))
    refused("--seed", "2", needles=("--seed",))
    refused("--test-images", "50", needles=("--test-images 50", "other halves"))
    code, _, err = run_cli(capsys, "catalog", "build", run, "--target", "cpu", "--catalog", db,
                           "--from-search", tmp_path, "--no-measure")
    assert_one_line_error(code, err, "not an `ofa-deploy search` output directory")
    assert not db.parent.exists()
