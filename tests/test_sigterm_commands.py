"""``SIGTERM`` to ``eval``, ``catalog build`` and ``reproduce`` (issue 34, item 2): exit 143
with one line, nothing half-written, and what running the command again redoes.

- ``eval`` writes ``eval/NAME.json`` and ``.csv`` only at the end: a stopped one leaves no
  eval file and no temporary file, and running it again evaluates every subnet again.
- ``catalog build`` stores each subnet's accuracy as it is measured: a stopped one leaves an
  intact catalog with the subnets done so far, and running it again redoes only the one
  that was in progress.
- ``reproduce`` trains its runs in-process, so ``SIGTERM`` during a training writes that
  run's checkpoint at the step; running it again reuses the finished runs and continues the
  interrupted one from that step (``test_reproduce.py`` shows the resumed weights equal an
  uninterrupted run's after a ``SIGKILL``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import terminate

WORKER = Path(__file__).with_name("signal_worker.py")
ROOT = str(Path(__file__).resolve().parents[1])


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), **extra}


def _stop_at(args: list, tmp_path: Path, at: int) -> tuple[int, str]:
    """Run ``ofa-deploy ARGS``, ``SIGTERM`` it inside its ``at``-th subnet's accuracy."""
    marker = tmp_path / "in-work"
    proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(OFA_TEST_MARK_AT=str(at), OFA_TEST_MARKER=str(marker)))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, err, _ = terminate(proc, timeout=60)
    return code, err


def _one_line_143(code: int, err: str) -> None:
    assert code == 143, err[-2000:]
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("ofa-deploy: terminated"), err


def _hidden(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".*")]


def test_sigterm_during_eval_leaves_no_eval_file(fake_run: Path, tmp_path: Path):
    code, err = _stop_at(["eval", fake_run, "--per-bucket", "3", "--buckets", "6,8", "--test-subset", "50",
                          "--calib-n", "16", "--device", "cpu", "--quiet"], tmp_path, at=2)
    _one_line_143(code, err)
    eval_dir = fake_run / "eval"
    assert not eval_dir.exists() or list(eval_dir.iterdir()) == []  # rerun: every subnet again
    assert _hidden(fake_run) == []


def test_sigterm_during_catalog_build_keeps_what_was_measured(fake_run: Path, tmp_path: Path):
    db = tmp_path / "c.db"
    args = ["catalog", "build", fake_run, "--target", "cpu", "--catalog", db, "--n", "5", "--finalists", "2",
            "--calib-images", "32", "--test-images", "50", "--warmup-s", "0.02", "--min-iterations", "10",
            "--min-time-s", "0.02"]
    code, err = _stop_at(args, tmp_path, at=3)
    _one_line_143(code, err)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM accuracy").fetchone()[0] == 2  # the two finished subnets
        assert conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0] == 0
    assert not (tmp_path / "artifacts").exists() and _hidden(tmp_path) == []
    again = subprocess.run([sys.executable, "-m", "ofa_deploy", *map(str, args), "--json"], env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["evaluated"] == 3  # only what was not stored: the interrupted subnet and the two after it


@pytest.mark.parametrize("stage", ["rss"])
def test_sigterm_during_reproduce_checkpoints_the_run_in_training(tmp_path: Path, stage: str):
    out = tmp_path / "repro"
    proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", "reproduce", "--dataset", "digits", "--scale", "0.2",
                             "--train-subset", "64", "--test-subset", "40", "--per-bucket", "1", "--buckets", "8",
                             "--calib-n", "32", "--device", "cpu", "--quiet", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    last = out / "runs" / stage / "last.pt"
    deadline = time.monotonic() + 600
    while not last.exists():  # the first epoch of the run is done: the next SIGTERM lands mid-training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    code, err, _ = terminate(proc)
    _one_line_143(code, err)
    assert "checkpoint at" in err
    # reproduce resumes its runs itself: the line says to run the same reproduce again,
    # not `train --resume` on the run directory
    assert "--resume" not in err and "ofa-deploy train" not in err, err
    assert "continue with ofa-deploy reproduce --dataset digits --scale 0.2" in err, err
    assert f"--out {out} (the same command" in err, err
    from ofa_deploy import weights

    ckpt = weights.load_checkpoint(last)  # complete and readable: the resume starts from it
    assert ckpt["epoch"] >= 1
    assert not (out / "runs" / stage / "final.pt").exists()
    assert not json.loads((out / "reproduce.json").read_text()).get("finished")
    assert _hidden(out) == []
