"""Shared fixtures. Tests run on a 2-core CPU with no GPU and no network."""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores are shared by everything on these machines: keep torch from oversubscribing."""
    try:
        import torch
    except ImportError:
        yield
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest -n: the cores are shared out
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // workers))
    yield


@contextmanager
def one_torch_thread():
    """Torch at one intra-op thread inside the block, the previous count restored after.

    Tiny networks gain nothing from a second thread, spinning OpenMP workers slow each step
    several times on a shared 2-core machine, and bit-identity checks need one fixed count."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def make_fake_run(run_dir: Path, *, dataset: str = "digits", in_channels: int = 1, num_classes: int = 10,
                  seed: int = 0, perturb_bn: bool = True) -> Path:
    """A run directory as ``ofa-deploy train`` leaves it, with random (untrained) weights
    and, by default, non-trivial BN statistics - for tests of the tools that read runs."""
    import torch

    from ofa_deploy import run
    from ofa_deploy.nn import Supernet
    from ofa_deploy.space import SearchSpace

    torch.manual_seed(seed)
    space = SearchSpace(in_channels=in_channels, num_classes=num_classes)
    net = Supernet(space)
    if perturb_bn:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.normal_(1.0, 0.2)
                    m.bias.normal_(0.0, 0.2)
            for name, p in net.named_parameters():
                if "transforms" in name:
                    p.add_(0.05 * torch.randn_like(p))
    run_dir.mkdir(parents=True, exist_ok=True)
    run.write_config(run_dir, {
        "run": {"name": run_dir.name, "method": "rss", "seed": seed, "completed": True},
        "data": {"dataset": dataset},
        "space": space.to_dict(),
        "train": {"epochs": 0},
    })
    torch.save({"model": net.state_dict(), "epoch": 0}, run_dir / run.FINAL)
    return run_dir


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path / "fake-run")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``ofa-deploy ARGS`` in this process: (exit code, stdout, stderr)."""
    from ofa_deploy.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and exactly one ``ofa-deploy: error:`` line on stderr containing every needle."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofa-deploy: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def terminate(proc, timeout: float = 120) -> tuple:
    """SIGTERM the subprocess ``proc`` and wait up to ``timeout`` s (killed if still running):
    (exit status, stderr, seconds from the signal to the exit)."""
    import signal
    import time

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err, time.monotonic() - sent


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` imported as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
