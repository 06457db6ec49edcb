"""Preemption: seconds from ``SIGTERM`` to the exit of ``ofa-deploy train``.

A scheduler's grace period (SLURM ``--signal``'s lead time, Kubernetes'
``terminationGracePeriodSeconds``) must cover this time: on the signal the trainer finishes
the step it is in, writes ``last.pt`` at that step (``torch.save`` of the supernet, its
optimizer and teacher, fsynced, read back and checked, renamed over the previous one) and
exits 143. So the time is one training step plus one checkpoint write plus the process's
exit; the checkpoint's size is reported beside it.

Each trial starts a tiny CPU run (digits, PS with a distilled phase, so the teacher is in
the checkpoint too), waits until its first epoch is checkpointed, sleeps a random part of
an epoch (seeded) and sends ``SIGTERM``; it records the exit status, the seconds from the
signal to the exit and where the checkpoint stopped. Prints JSON (median and max over the
trials). The default ``--batch-size 8`` makes steps short; larger batches show how the
step's own length adds to the time.

    python benchmarks/bench_preempt.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _trial(args: list[str], out: Path, delay: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", "train", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and metrics.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"training ended or stalled before the signal: {proc.communicate()[1]}")
        time.sleep(0.01)
    time.sleep(delay)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    seconds = time.perf_counter() - sent
    import torch

    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    part = ckpt.get("partial")
    return {"exit": proc.returncode, "signal_to_exit_s": round(seconds, 3),
            "stopped_at": {"epoch": ckpt["epoch"] + (1 if part else 0), "step": part["step"] if part else 0},
            "checkpoint_bytes": (out / "last.pt").stat().st_size, "message": err.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-subset", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="seeds the random moments of the signals")
    opts = parser.parse_args()
    args = ["--dataset", "digits", "--method", "ps", "--ps-epochs", "1,3,0,0,0,0", "--train-subset",
            str(opts.train_subset), "--batch-size", str(opts.batch_size), "--seed", "7", "--device", "cpu",
            "--quiet"]
    rng = random.Random(opts.seed)
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.trials):
            trials.append(_trial(args, Path(tmp) / f"run{i}", rng.uniform(0.0, 1.5)))
    times = [t["signal_to_exit_s"] for t in trials]
    print(json.dumps({
        "benchmark": "preempt", "host": platform.node(), "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(), "train_args": args,
        "signal_to_exit_s": {"median": statistics.median(times), "max": max(times), "min": min(times)},
        "all_exit_143": all(t["exit"] == 143 for t in trials), "trials": trials,
    }, indent=2))


if __name__ == "__main__":
    main()
