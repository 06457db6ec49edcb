"""Preemption: ``SIGTERM`` at a random step of a CPU training run writes a checkpoint at that
step and exits 143; ``--resume`` ends bit-identical to a run never stopped. And the signal
edges of the CLI: two Ctrl-Cs 30 ms apart, ``SIGTERM`` before training starts."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import terminate
from test_train_resume import ARGS, _assert_same_run, _env, _metric_lines, _train

from ofa_deploy import run, weights

STEPS = 8  # ARGS: 64 images, batch 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("preempt") / "reference"
    done = _train(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ofa_deploy", "train", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(proc: subprocess.Popen, out: Path, epochs: int) -> None:
    deadline = time.monotonic() + 240
    while len(_metric_lines(out)) < epochs:
        assert proc.poll() is None, f"training ended before the signal: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"training too slow to reach epoch {epochs + 1}"
        time.sleep(0.02)


def _no_temp_files(out: Path) -> None:
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("epochs_done", [1, 2])
def test_sigterm_at_a_random_step_checkpoints_there_and_resumes_bit_identical(tmp_path, reference, epochs_done):
    """Epoch 2 is the first of the distilled kernel phase (teacher built, optimizer fresh at
    the phase start), epoch 3 its second: a stop in either resumes into the same step."""
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.9)  # an epoch of these 8 steps takes ~1.3 s here
    out = tmp_path / "stopped"
    proc = _start([*ARGS, "--out", str(out)])
    _wait_for_epochs(proc, out, epochs_done)
    time.sleep(delay)
    code, err, seconds = terminate(proc)
    assert code == 143, (seed, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("ofa-deploy: terminated by SIGTERM: checkpoint at ") and f"--resume {out}" in err, err
    _no_temp_files(out)
    assert not (out / run.FINAL).exists()
    ckpt = weights.load_checkpoint(out / run.LAST)
    part = ckpt["partial"]
    if part is not None:  # stopped within an epoch (else at an epoch end the step after it)
        assert part["epoch"] == ckpt["epoch"] and 0 < part["step"] <= STEPS
        assert f"epoch {ckpt['epoch'] + 1} step {part['step']}/{STEPS}" in err
    assert len(_metric_lines(out)) == ckpt["epoch"] >= epochs_done
    print(f"seed {seed}: stopped at epoch {ckpt['epoch'] + 1} step {part and part['step']}, "
          f"{seconds:.2f} s from SIGTERM to exit")

    resumed = _train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, reference)
    _no_temp_files(out)


def test_sigterm_twice_stops_twice_and_still_ends_bit_identical(tmp_path, reference):
    """Stopped in epoch 2, resumed, stopped again in the same epoch a few steps on (a
    checkpoint written at a step, resumed from one), resumed: the same run."""
    out = tmp_path / "stopped"
    proc = _start([*ARGS, "--out", str(out)])
    _wait_for_epochs(proc, out, 1)
    time.sleep(0.2)
    assert terminate(proc)[0] == 143
    first = weights.load_checkpoint(out / run.LAST)["partial"]
    inode = (out / run.METRICS).stat().st_ino
    proc = _start(["--resume", str(out), "--quiet"])
    deadline = time.monotonic() + 120
    while (out / run.METRICS).stat().st_ino == inode:  # rewritten once the checkpoint is loaded
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    code, err, _ = terminate(proc)
    assert code == 143, err
    second = weights.load_checkpoint(out / run.LAST)["partial"]
    assert first is not None and (second is None or second["epoch"] > first["epoch"]
                                  or second["step"] >= first["step"])
    resumed = _train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, reference)


def test_sigterm_before_the_first_step_leaves_nothing(tmp_path):
    """Stopped while loading its data: exit 143 in one line, no half-made run directory."""
    out = tmp_path / "early"
    proc = _start([*ARGS, "--out", str(out)])
    deadline = time.monotonic() + 60
    while not out.exists():  # the directory appears once the data are loaded and the loop starts
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    code, err, _ = terminate(proc)
    assert code == 143, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists() or (out / run.LAST).is_file()


def test_two_ctrl_c_30_ms_apart_give_one_line_and_exit_130(tmp_path):
    """The second SIGINT lands in the clean-up of the first (or in the interpreter's
    shutdown): it is ignored, not a KeyboardInterrupt traceback."""
    for attempt in range(3):
        out = tmp_path / f"interrupted-{attempt}"
        proc = _start([*ARGS, "--out", str(out)])
        _wait_for_epochs(proc, out, 1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.03)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        said = err.strip().splitlines()
        # after its first epoch the run has a checkpoint, and the line says how to continue
        assert len(said) == 1 and said[0].startswith("ofa-deploy: interrupted in epoch "), err
        assert f"{out / run.LAST}" in said[0] and f"ofa-deploy train --resume {out}" in said[0], err
        _no_temp_files(out)
