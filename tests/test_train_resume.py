"""kill -9 in the middle of an epoch, --resume, and the weights equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ofa_deploy import run

ARGS = ["--dataset", "digits", "--method", "ps", "--ps-epochs", "1,2,0,0,0,1", "--train-subset", "64",
        "--batch-size", "8", "--seed", "7", "--device", "cpu", "--quiet"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ofa_deploy", "train", *args], env=_env(), capture_output=True,
                          text=True, timeout=300)


def _metric_lines(out: Path) -> list[dict]:
    path = out / run.METRICS
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def test_kill9_mid_epoch_then_resume_is_bit_identical(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", "train", *ARGS, "--out", str(killed)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len(_metric_lines(killed)) < 2:  # epoch 3 (second of the distilled kernel phase) is running
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "training too slow to reach epoch 3"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / run.FINAL).exists() and len(_metric_lines(killed)) == 2

    resumed = _train("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    done = _train(*ARGS, "--out", str(reference))
    assert done.returncode == 0, done.stderr

    a = run.load_checkpoint(killed / run.FINAL)
    b = run.load_checkpoint(reference / run.FINAL)
    for key in ("model", "teacher"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(momentum_a) == len(momentum_b) and all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert a["histogram"] == b["histogram"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(_metric_lines(killed)) == strip(_metric_lines(reference))
    assert [r["phase"] for r in _metric_lines(killed)] == ["largest", "kernel", "kernel", "expand-2"]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["completed"] and summary["epochs"] == 4 and summary["train_wall_time_s"] > 0
    assert run.read_config(killed)["run"]["completed"] is True
