"""The held-out truth measured K times (``predictor.repeats``), against simulated
measurements whose true latency is known: the noise it states is the noise put in, and
its ceilings are what the true latency itself scores against the mean of the repeats."""

from __future__ import annotations

import numpy as np
import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.predictor.predictor import accuracy_report
from ofa_deploy.predictor.repeats import repeat_truth


@pytest.mark.parametrize("k,noise", [(2, 0.045), (3, 0.03), (2, 0.01)])
def test_stated_noise_and_ceilings_match_the_simulated_truth(k: int, noise: float):
    rng = np.random.default_rng(k)
    true = np.exp(rng.normal(0.0, 0.2, 4000))
    scales = np.array([1.0, 1.12, 0.93])[:k, None]  # the machine ran faster or slower in each repeat
    measured = true * scales * np.exp(rng.normal(0.0, noise, (k, true.size)))
    mean, report = repeat_truth(measured)
    assert mean == pytest.approx(np.exp(np.log(measured).mean(axis=0)))
    assert report["noise_sd"] == pytest.approx(noise, rel=0.05)
    assert report["truth_noise_sd"] == pytest.approx(noise / np.sqrt(k), rel=0.05)
    assert np.array(report["scale_by_repeat"]) / report["scale_by_repeat"][0] == pytest.approx(
        scales[:, 0] / scales[0, 0], rel=0.01)
    perfect = true * np.exp(np.log(mean / true).mean())  # the true latency at the mean's overall scale
    got = accuracy_report(mean, perfect)
    assert report["ceiling_within_10pct"] == pytest.approx(got["within_10pct"], abs=0.015)
    assert report["ceiling_within_5pct"] == pytest.approx(got["within_5pct"], abs=0.02)
    assert report["ceiling_spearman"] == pytest.approx(got["spearman"], abs=0.003)


def test_check_refuses_a_repeat_count_out_of_range(tmp_path):
    from ofa_deploy.predictor.build import check_predictor

    for bad in (0, 6):
        with pytest.raises(OfaError, match="--repeats"):
            check_predictor(tmp_path / "predictor.json", tmp_path, repeats=bad)


def test_too_few_subnets_state_no_rank_ceiling():
    _, report = repeat_truth(np.array([[1.0, 2.0], [1.1, 2.1]]))
    assert report["spearman_between_repeats"] is None and report["ceiling_spearman"] is None
    assert 0.9 < report["ceiling_within_10pct"] <= 1.0


def test_the_cli_bound_is_the_library_bound():
    from ofa_deploy.cli.cmd_predictor import check
    from ofa_deploy.predictor.repeats import MAX_REPEATS

    option = next(p for p in check.params if p.name == "repeats")
    assert (option.type.min, option.type.max) == (1, MAX_REPEATS)
