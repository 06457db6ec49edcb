"""``benchmarks/search_information_bound.py`` (issue 33): the oracle estimator it runs is right -
noise-free and with enough evaluations it finds the exact optimum; its picks never beat the
true optimum; the greedy design reduces the posterior variance more than a random one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "search_information_bound.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("search_information_bound")


def _setup(script: ModuleType, seed: int = 0):
    from ofa_deploy.search.encoding import Encoding
    from ofa_deploy.space import SearchSpace

    enc = Encoding(SearchSpace(in_channels=1))
    rng = np.random.default_rng(seed)
    prior_var = np.full(len(script.groups(enc)), 0.05**2)
    return enc, rng, prior_var, rng.normal(0, np.sqrt(prior_var))


def test_noise_free_with_enough_evaluations_finds_the_exact_optimum(script: ModuleType) -> None:
    enc, rng, prior_var, w = _setup(script)
    best = script.optimum_values(enc, w)
    rows = enc.random(rng, 600)
    gaps = script.gaps(enc, w, rows, rng, prior_var * 1e6, 1e-6, best)
    assert all(g is not None and abs(g) < 1e-6 for g in gaps)


def test_noisy_picks_never_beat_the_optimum(script: ModuleType) -> None:
    enc, rng, prior_var, w = _setup(script, 1)
    best = script.optimum_values(enc, w)
    gaps = script.gaps(enc, w, enc.random(rng, 50), rng, prior_var, 0.15, best)
    assert all(g is not None and g <= 1e-9 for g in gaps) and min(gaps) < 0  # 50 noisy ones: not exact


def test_greedy_design_reduces_posterior_variance_more_than_random(script: ModuleType) -> None:
    enc, rng, prior_var, _ = _setup(script, 2)

    def trace(rows: np.ndarray) -> float:
        d = script._additive_design(enc, rows, script.FORM)
        return float(np.trace(np.linalg.inv(d.T @ d / 0.15**2 + np.diag(1 / prior_var))))

    greedy = script.greedy_design(enc, rng, 40, prior_var, 0.15, 200)
    assert greedy.shape == (40, enc.n_var)
    assert trace(greedy) < trace(enc.random(rng, 40))


def test_cli_prints_json_and_refuses_bad_input(tmp_path: Path) -> None:
    evals = ROOT / "results" / "search" / "evals-fmnist-300.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(evals), "--evaluations", "20", "--seeds", "1",
                           "--candidates", "20"], capture_output=True, text=True, check=True)
    doc = json.loads(done.stdout)
    assert len(doc["results"]) == 4 and all(len(r["mean_gap_points"]) == 6 for r in doc["results"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in ([str(bad)], [str(evals), "--seeds", "0"], [str(tmp_path / "missing.json")]):
        run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert run.returncode != 0 and run.stdout == ""
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
