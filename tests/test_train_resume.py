"""kill -9 in the middle of an epoch, --resume, and the weights equal an uninterrupted run's.

These runs train in the CPU default layout (channels-last with the supernet's CPU kernels),
at one torch thread in every process (bit-identity holds at a fixed thread count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ofa_deploy import run, weights

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


def _kill_during_epoch(args: list[str], out: Path, epochs_done: int) -> None:
    """Start ``train *args`` and kill -9 it once ``epochs_done`` epochs are checkpointed
    and the next one is running."""
    proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", "train", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len(_metric_lines(out)) < epochs_done:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, f"training too slow to reach epoch {epochs_done + 1}"
            time.sleep(0.02)
        time.sleep(0.1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / run.FINAL).exists() and len(_metric_lines(out)) == epochs_done


def _assert_same_run(killed: Path, reference: Path) -> None:
    a = weights.load_checkpoint(killed / run.FINAL)
    b = weights.load_checkpoint(reference / run.FINAL)
    for key in ("model", "teacher"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(momentum_a) == len(momentum_b) and all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert a["histogram"] == b["histogram"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(_metric_lines(killed)) == strip(_metric_lines(reference))


def test_kill9_mid_epoch_then_resume_is_bit_identical(tmp_path):
    killed = tmp_path / "killed"
    _kill_during_epoch([*ARGS, "--out", str(killed)], killed, 2)  # epoch 3: second of the distilled kernel phase

    reference = _resume_and_compare(killed, ARGS, tmp_path)
    a = weights.load_checkpoint(killed / run.FINAL)
    b = weights.load_checkpoint(reference / run.FINAL)
    assert a["threads"] == b["threads"] == 1
    assert [r["phase"] for r in _metric_lines(killed)] == ["largest", "kernel", "kernel", "expand-2"]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["completed"] and summary["epochs"] == 4 and summary["train_wall_time_s"] > 0
    assert run.read_config(killed)["run"]["completed"] is True


def test_two_kills_second_in_a_phase_whose_teacher_came_from_a_checkpoint(tmp_path):
    """Killed in the first distilled epoch, resumed, killed again in the second epoch of the
    elastic-expand phase (channels sorted and teacher rebuilt from the checkpoint in the
    resumed process), resumed: bit-identical to an uninterrupted run."""
    args = [*ARGS[:5], "1,1,0,0,2,0", *ARGS[6:]]
    killed = tmp_path / "killed"
    _kill_during_epoch([*args, "--out", str(killed)], killed, 1)
    _kill_during_epoch(["--resume", str(killed), "--quiet"], killed, 3)
    _resume_and_compare(killed, args, tmp_path)
    assert [r["phase"] for r in _metric_lines(killed)] == ["largest", "kernel", "expand-1", "expand-1"]


def _resume_and_compare(killed, args, tmp_path):
    """Resume the killed run to its end, train ``args`` uninterrupted beside it, assert the
    two runs are the same; returns the uninterrupted run's directory."""
    resumed = _train("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    done = _train(*args, "--out", str(reference))
    assert done.returncode == 0, done.stderr
    _assert_same_run(killed, reference)
    return reference


def _env_without_threads() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def test_a_two_thread_run_resumes_at_its_own_count(tmp_path, monkeypatch):
    """``--threads 2``, kill -9 in epoch 2, ``--resume`` with no thread setting at all (the
    default would be one thread): the checkpoint's count is used, bit-identical to an
    uninterrupted ``--threads 2`` run."""
    monkeypatch.setattr(sys.modules[__name__], "_env", _env_without_threads)
    args = [*ARGS[:5], "1,1,0,0,0,0", *ARGS[6:], "--threads", "2"]
    killed = tmp_path / "killed"
    _kill_during_epoch([*args, "--out", str(killed)], killed, 1)
    resumed = _train("--resume", str(killed))  # no --threads, no OMP_NUM_THREADS
    assert resumed.returncode == 0, resumed.stderr
    assert "torch thread" not in resumed.stderr  # nothing to warn about
    reference = tmp_path / "reference"
    done = _train(*args, "--out", str(reference))
    assert done.returncode == 0, done.stderr
    _assert_same_run(killed, reference)
    a = weights.load_checkpoint(killed / run.FINAL)
    assert a["threads"] == 2 and a["sgd"] == "fused"
    assert all(g["fused"] for g in a["optimizer"]["param_groups"])


def test_a_checkpoint_from_before_fused_sgd_resumes_with_per_tensor_sgd(tmp_path, monkeypatch):
    """Runs started before CPU training used fused SGD carry no ``sgd`` key: they continue
    with the per-tensor SGD they were trained with (other last bits than fused)."""
    monkeypatch.setattr(sys.modules[__name__], "_env", _env_without_threads)
    args = ["--dataset", "digits", "--method", "rss", "--epochs", "2", "--train-subset", "64", "--batch-size", "16",
            "--seed", "3", "--device", "cpu", "--quiet"]
    out = tmp_path / "old"
    _kill_during_epoch([*args, "--out", str(out)], out, 1)
    ckpt = weights.load_checkpoint(out / run.LAST)
    assert ckpt["sgd"] == "fused" and ckpt["threads"] == 1
    del ckpt["sgd"]
    for group in ckpt["optimizer"]["param_groups"]:
        group["fused"] = None  # as torch.optim.SGD(...) without fused=True saved it
    torch.save(ckpt, out / run.LAST)
    resumed = _train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    final = weights.load_checkpoint(out / run.FINAL)
    assert final["sgd"] == "per-tensor"
    assert not any(g["fused"] for g in final["optimizer"]["param_groups"])
    fused = tmp_path / "fused"
    assert _train(*args, "--out", str(fused)).returncode == 0
    other = weights.load_checkpoint(fused / run.FINAL)
    assert other["sgd"] == "fused"
    # the same run but for the optimizer's arithmetic in epoch 2 (equal or within rounding)
    diffs = [float((final["model"][k].float() - other["model"][k].float()).abs().max()) for k in other["model"]
             if other["model"][k].is_floating_point()]
    assert max(diffs) < 1e-3
