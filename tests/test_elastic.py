"""A dying rank under ``torchrun --max-restarts`` (issue 34, item 3): two gloo workers on a
CPU, rank 1 killed with ``SIGKILL`` in the middle of the second epoch (``elastic_worker.py``,
a test-only hook, kills it once), the group restarted by torchrun on the same command line
resumes from the last checkpoint and finishes, and its weights are bit-identical to those
of an uninterrupted two-worker run. The surviving rank says what happened in one line.

Small on purpose: 128 digits images, batches of 32 (4 steps an epoch), 2 epochs; each
torchrun takes about 20 s on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from ofa_deploy import run, weights

TORCHRUN = Path(sys.executable).with_name("torchrun")
WORKER = Path(__file__).with_name("elastic_worker.py")
ARGS = ["train", "--dataset", "digits", "--method", "rss", "--per-batch", "2", "--train-subset", "128",
        "--batch-size", "32", "--epochs", "2", "--seed", "4", "--device", "cpu", "--quiet"]
TIMING = {"epoch_time_s", "images_per_s", "wall_time_s", "time_s"}


def _torchrun(out: Path, env: dict, restarts: int) -> subprocess.CompletedProcess:
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "--max-restarts", str(restarts),
                           str(WORKER), *ARGS, "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=400)


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / run.METRICS).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_a_killed_worker_restarts_the_group_from_its_checkpoint_and_ends_bit_identical(tmp_path):
    marker = tmp_path / "killed-once"
    killed = tmp_path / "killed"
    proc = _torchrun(killed, {"OFA_TEST_KILL_RANK": "1", "OFA_TEST_KILL_STEP": "6",
                              "OFA_TEST_KILL_MARKER": str(marker)}, restarts=1)
    assert marker.is_file(), proc.stderr[-3000:]  # rank 1 did die, at step 2 of epoch 2
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lost = [line for line in proc.stderr.splitlines() if "ofa-deploy: error: rank 0: " in line]
    assert len(lost) == 1 and "another worker has stopped" in lost[0] and "last checkpoint" in lost[0]

    clean = tmp_path / "clean"
    proc = _torchrun(clean, {}, restarts=0)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = weights.load_checkpoint(clean / run.FINAL)["model"]
    b = weights.load_checkpoint(killed / run.FINAL)["model"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _metrics(clean) == _metrics(killed)
    assert json.loads((clean / run.HISTOGRAM).read_text()) == json.loads((killed / run.HISTOGRAM).read_text())
