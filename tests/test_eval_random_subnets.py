"""``benchmarks/eval_random_subnets.py`` (issue 33's fitted landscape): evaluations resume from
a partial file without re-evaluating a subnet, and bad input is refused in one line with
nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_benchmark, one_torch_thread


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("eval_random_subnets")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def _run(script: ModuleType, capsys, *args: object) -> tuple[int, str]:
    try:
        code = script.main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("eval_random_subnets.py: error: "), err
    assert needle in lines[0] and "Traceback" not in err, err


def test_evaluations_resume_from_a_partial_file(script: ModuleType, fake_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "evals" / "e.json"
    code, err = _run(script, capsys, fake_run, "--count", 2, "--out", out, "--calib-images", 32)
    assert code == 0, err
    # the fake run has no hold-out: it falls back as the search does, and says so
    assert "no validation hold-out" in err
    first = json.loads(out.read_text())
    assert first["format"] == script.FORMAT and first["chosen_on"] == "test:half1:seed0"
    assert len(first["evaluations"]) == 2 and all(0 <= e["val_top1"] <= 1 for e in first["evaluations"])
    code, err = _run(script, capsys, fake_run, "--count", 3, "--out", out, "--calib-images", 32)
    assert code == 0 and "2 of 3 already evaluated" in err, err
    second = json.loads(out.read_text())
    # the first two entries are kept as they were (timings included: not evaluated again),
    # the third is the next subnet of the same seeded draw
    assert second["evaluations"][:2] == first["evaluations"]
    drawn = script.draw(__import__("ofa_deploy.space", fromlist=["SearchSpace"]).SearchSpace(in_channels=1), 3, 0)
    assert [e["subnet"] for e in second["evaluations"]] == [str(s) for s in drawn]
    assert [s["resumed_from"] for s in second["sessions"]] == [0, 2]
    # a file of another seed is not continued
    code, err = _run(script, capsys, fake_run, "--count", 3, "--out", out, "--calib-images", 32, "--seed", 1)
    _one_line_error(code, err, "another run, split, calibration or --seed")
    assert json.loads(out.read_text()) == second


def test_bad_input_is_one_line_and_writes_nothing(script: ModuleType, fake_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "e.json"
    _one_line_error(*_run(script, capsys, fake_run, "--count", 0, "--out", out), "--count must be at least 1")
    _one_line_error(*_run(script, capsys, fake_run, "--count", "x", "--out", out), "whole number")
    _one_line_error(*_run(script, capsys, fake_run, "--count", 10**20, "--out", out), "--count must be at most")
    _one_line_error(*_run(script, capsys, fake_run, "--out", out), "--count")
    _one_line_error(*_run(script, capsys, tmp_path / "nowhere", "--count", 2, "--out", out), "does not exist")
    assert not out.exists()
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    _one_line_error(*_run(script, capsys, fake_run, "--count", 2, "--out", corrupt), "not valid JSON")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    _one_line_error(*_run(script, capsys, fake_run, "--count", 2, "--out", other), "is not a")
    assert corrupt.read_text() == "{not json"
    _one_line_error(*_run(script, capsys, fake_run, "--count", 2, "--out", tmp_path), "is a directory")
