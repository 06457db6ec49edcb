"""reproduce with several seeds: --seeds parsing, the crossed bootstrap against exact and
analytic answers, the per-bucket aggregate, and bad input on the command line."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from ofa_deploy.analyze.intervals import FAILS, HOLDS, NOISE, crossed_bootstrap, difference, verdict
from ofa_deploy.errors import OfaError
from ofa_deploy.reproduce_seeds import aggregate, combine_seed_options, parse_seeds, run_key


def test_parse_seeds():
    assert parse_seeds("0,1,2") == (0, 1, 2) and parse_seeds(" 7 ") == (7,) and parse_seeds("3, 1") == (3, 1)
    for bad, words in (("", "empty"), (" , ", "empty"), ("0,,1", "''"), ("a", "'a'"), ("-1", "'-1'"),
                       ("1.5", "'1.5'"), ("0,1,0", "repeats 0"), ("2,2,3,3", "repeats 2, 3"),
                       (str(2 ** 64), "larger")):
        with pytest.raises(OfaError, match="--seeds") as exc:
            parse_seeds(bad)
        assert words in str(exc.value)


def test_seed_and_seeds_combine():
    assert combine_seed_options(None, None) == (0,)
    assert combine_seed_options(4, None) == (4,)
    assert combine_seed_options(None, "0,1,2") == (0, 1, 2)
    assert combine_seed_options(3, "3") == (3,)
    for seed, seeds in ((0, "0,1"), (1, "0,1"), (2, "3")):
        with pytest.raises(OfaError, match="contradicts"):
            combine_seed_options(seed, seeds)
    # the first seed keeps today's run layout, the others get a suffix
    assert [run_key("ps", s, (0, 1, 2)) for s in (0, 1, 2)] == ["ps", "ps-s1", "ps-s2"]
    assert run_key("rss", 5, (5, 0)) == "rss" and run_key("rss", 0, (5, 0)) == "rss-s0"


def test_bootstrap_hand_computed_cases():
    # one seed, subnets 0 and 1: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % points are the extremes
    assert crossed_bootstrap([[0.0, 1.0]]) == (0.0, 1.0)
    # d[i, j] = 2i + j: resampled mean = 2 x (row mean) + (column mean), each in {0, 1/2, 1} with
    # P(0) = P(1) = 1/4, so P(min 0) = P(max 3) = 1/16 > 2.5 %: the interval is [0, 3]
    assert crossed_bootstrap([[0.0, 1.0], [2.0, 3.0]]) == (0.0, 3.0)
    # a constant difference has a zero-width interval at that value
    lo, hi = crossed_bootstrap(np.full((3, 7), 0.25))
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    # reproducible: numpy with a fixed seed
    data = np.arange(12.0).reshape(3, 4) ** 1.5
    assert crossed_bootstrap(data) == crossed_bootstrap(data)


def test_bootstrap_matches_exact_enumeration():
    """The exact bootstrap distribution of a 2 x 3 matrix (all 2^2 x 3^3 = 108 equally likely
    resamples) against the Monte-Carlo interval."""
    data = np.array([[0.0, 1.0, 5.0], [2.0, 4.0, 9.0]])
    means = [data[np.ix_(r, c)].mean() for r in itertools.product(range(2), repeat=2)
             for c in itertools.product(range(3), repeat=3)]
    values, counts = np.unique(np.round(means, 9), return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    exact_lo = values[np.searchsorted(cdf, 0.025)]  # smallest value with P(X <= v) >= 2.5 %
    exact_hi = values[np.searchsorted(cdf, 0.975)]
    lo, hi = crossed_bootstrap(data, draws=40_000)
    step = np.diff(values).max()
    assert abs(lo - exact_lo) <= step and abs(hi - exact_hi) <= step
    assert lo < data.mean() < hi


def test_bootstrap_analytic_normal_case():
    """One seed, many subnets: the percentile interval of a mean approaches
    mean +- 1.96 sigma / sqrt(n) (sigma with ddof 0, the bootstrap's own variance)."""
    x = np.random.default_rng(7).normal(0.3, 2.0, size=(1, 900))
    lo, hi = crossed_bootstrap(x)
    half = 1.959964 * x.std() / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.04 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.04 * half)


def test_seed_effects_widen_the_interval():
    """Two seeds whose supernets differ by a constant: resampling seeds gives an interval that
    spans both, where pooling the cells as independent would give a narrow one."""
    d = np.vstack([np.full(50, 0.02), np.full(50, -0.01)]) + np.linspace(-1e-3, 1e-3, 50)
    lo, hi = crossed_bootstrap(d)
    assert lo < -0.009 and hi > 0.019 and verdict((lo, hi)) == NOISE
    assert verdict((0.001, 0.02)) == HOLDS and verdict((-0.3, -0.01)) == FAILS and verdict((0.0, 0.1)) == NOISE
    assert verdict((-1e-17, 0.1)) == NOISE and verdict((-0.1, -1e-17)) == NOISE
    both = difference(np.full((3, 4), 0.8), np.full((3, 4), 0.7))
    assert both["mean"] == pytest.approx(0.1) and both["verdict"] == HOLDS
    with pytest.raises(OfaError, match="shapes"):
        difference(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(OfaError, match="finite"):
        crossed_bootstrap([[0.0, float("nan")]])


def _eval(subnets_by_bucket: dict[float, list[tuple[str, float]]]) -> dict:
    subnets = [{"bucket": b, "text": t, "accuracy": a} for b, rows in subnets_by_bucket.items() for t, a in rows]
    return {"subnets": subnets, "buckets": [{"mflops": b, "n": len(rows)} for b, rows in subnets_by_bucket.items()]}


def test_aggregate_per_bucket():
    # bucket 4: RSS beats PS by 10 points for every seed and subnet; bucket 8: RSS - PS is
    # +5 for seed 0 and -5 for seed 1 (a seed effect: inside the noise)
    evals = {}
    for seed, sign in ((0, 1), (1, -1)):
        evals[seed] = {
            "ps": _eval({4.0: [("a", 0.5), ("b", 0.6)], 8.0: [("c", 0.7), ("d", 0.7)]}),
            "rss": _eval({4.0: [("a", 0.6), ("b", 0.7)], 8.0: [("c", 0.7 + sign * 0.05), ("d", 0.7 + sign * 0.05)]}),
            "rss-short": _eval({4.0: [("a", 0.4), ("b", 0.5)], 8.0: [("c", 0.6), ("d", 0.6)]}),
        }
    v = aggregate(evals)
    b4, b8 = v["buckets"]
    assert (b4["mflops"], b4["n_subnets"], v["seeds"], v["eval_seed"]) == (4.0, 2, [0, 1], 0)
    assert b4["mean"]["ps"] == pytest.approx(0.55) and b4["mean"]["rss"] == pytest.approx(0.65)
    assert b4["rss_minus_ps"]["mean"] == pytest.approx(0.1) and b4["rss_minus_ps"]["verdict"] == HOLDS
    assert b4["rss_minus_ps"]["interval"] == pytest.approx([0.1, 0.1])
    assert b4["rss_short_minus_ps"]["verdict"] == FAILS
    assert b4["spread"]["rss"] == pytest.approx(0.1) and b4["spread_rss_minus_ps"]["verdict"] == NOISE
    assert b8["seed_means"]["rss"] == pytest.approx([0.75, 0.65])
    assert b8["rss_minus_ps"]["interval"] == pytest.approx([-0.05, 0.05]) and b8["rss_minus_ps"]["verdict"] == NOISE
    assert v["summary"]["rss_vs_ps"] == {"holds": 1, "fails": 0, "inside the noise": 1}
    assert v["summary"]["rss_short_vs_ps"] == {"holds": 0, "fails": 2, "inside the noise": 0}
    # a run measured on other subnets is refused, not averaged
    evals[1]["rss"] = _eval({4.0: [("a", 0.6), ("z", 0.7)], 8.0: [("c", 0.7), ("d", 0.7)]})
    with pytest.raises(OfaError, match="same subnets"):
        aggregate(evals)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ofa_deploy", "reproduce", "--dataset", "digits", "--quiet",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["--seeds", ""], "--seeds is empty"),
    (["--seeds", "0,1,1"], "repeats 1"),
    (["--seeds", "0,x"], "'x'"),
    (["--seed", "1", "--seeds", "0,1"], "contradicts"),
    (["--fidelity", "paper"], "--fidelity"),
    (["--fidelity", "released-code", "--teacher", "trained"], "--teacher trained contradicts --fidelity"),
    (["--fidelity", "ofa", "--warmup-epochs", "0", "--seeds", "0,1"], "--warmup-epochs 0 contradicts"),
    (["--macs-stem", "2"], "--macs-stem"),
])
def test_bad_seeds_one_line_exit_2_nothing_written(tmp_path, args, words):
    out = tmp_path / "rep"
    proc = _cli(*args, "--out", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_choices_follow_the_fidelity_module():
    from ofa_deploy.cli import cmd_reproduce
    from ofa_deploy.train import fidelity

    assert cmd_reproduce.FIDELITY_PRESETS == tuple(fidelity.FIDELITY_PRESETS)
    assert (cmd_reproduce.PS_LR, cmd_reproduce.TEACHERS, cmd_reproduce.SORTS, cmd_reproduce.DATA_PROTOCOLS) == \
        (fidelity.PS_LR, fidelity.TEACHERS, fidelity.SORTS, fidelity.DATA_PROTOCOLS)


def test_fidelity_options_are_part_of_the_reproduction():
    from ofa_deploy.reproduce import ReproduceOptions

    assert ReproduceOptions().fidelity == "ofa" and "fidelity_switches" not in ReproduceOptions().defining()
    released = ReproduceOptions(fidelity="released-code", switches=(("sort", "none"), ("teacher", None)))
    assert released.fidelity == "released-code" and released.train_fields() == {"fidelity": "released-code",
                                                                               "sort": "none"}
    assert released.choices().teacher == "random" and released.defining()["fidelity"] == "released-code"
    custom = ReproduceOptions(switches=(("teacher", "none"),))
    assert custom.fidelity == "custom" and custom.defining()["fidelity_switches"]["teacher"] == "none"
    assert ReproduceOptions(fidelity="ofa", switches=(("sort", "full"),)).fidelity == "ofa"  # agrees: accepted
