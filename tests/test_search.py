"""``ofa-deploy search`` (issue 33, item 2): the engine on a synthetic landscape (picks
within budgets, beats the landscape's random draws, one set of evaluations for two
targets), a real (random-weight) run end to end, and bad input refused in one line with
nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, one_torch_thread, run_cli

from ofa_deploy.search.accuracy import AccuracyModel, spearman
from ofa_deploy.search.encoding import Encoding
from ofa_deploy.search.engine import latency_objective, macs_objective, search
from ofa_deploy.search.synthetic import Landscape
from ofa_deploy.space import SearchSpace, Subnet

SPACE = SearchSpace(in_channels=1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def _predictor(tmp_path: Path, space: SearchSpace = SPACE, target: str = "cpu") -> Path:
    """A latency predictor fitted to made-up latencies proportional to MACs, stating a 5%
    cross-validated error (so it has an upper bound)."""
    from ofa_deploy.cost import macs
    from ofa_deploy.predictor.predictor import fit
    from ofa_deploy.profile.collect import design_subnets

    subs = design_subnets(space, 30, seed=5)
    return fit(space, subs, [macs(space, s) / 1e7 for s in subs], target=target,
               info={"validation": {"rms_log_error": 0.05}}).save(
        tmp_path / f"pred-{target}-{space.in_channels}.json")


def test_encoding_round_trips_and_counts_macs_exactly():
    import random

    from ofa_deploy.cost import macs

    enc = Encoding(SPACE)
    subs = [SPACE.sample(random.Random(i)) for i in range(50)]
    x = enc.encode(subs)
    assert [enc.decode(r) for r in x] == subs
    assert np.allclose(enc.macs(x), [macs(SPACE, s) for s in subs])
    f = enc.features(x)
    cells, depth = len(SPACE.kernel_choices) * len(SPACE.expand_choices), SPACE.num_stages * len(SPACE.depth_choices)
    # per cell, the active blocks using it: their sum is the active blocks; one depth per stage
    shared = f[:, -(cells + depth):-depth]
    assert (shared.sum(axis=1) == [len(list(s.active_blocks())) for s in subs]).all()
    assert (f[:, -depth:].sum(axis=1) == SPACE.num_stages).all()


def test_ridge_predictor_ranks_an_additive_landscape_and_states_its_uncertainty():
    land = Landscape(SPACE, seed=1, noise=0.001)
    rng = np.random.default_rng(0)
    x, xt = land.enc.random(rng, 120), land.enc.random(rng, 500)
    model = AccuracyModel("ridge").fit(land.enc.features(x), np.array(land.measure([land.enc.decode(r) for r in x])))
    mean, sd = model.predict(land.enc.features(xt))
    truth = land.true(xt)
    assert spearman(mean, truth) > 0.8
    assert (sd > 0).all() and np.mean(np.abs(mean - truth) <= 2 * sd) > 0.8


def test_search_beats_random_within_budgets_and_serves_two_targets(tmp_path: Path):
    from ofa_deploy.predictor.predictor import LatencyPredictor

    land = Landscape(SPACE, seed=2, noise=0.002)
    latency = LatencyPredictor.load(_predictor(tmp_path))
    objectives = [macs_objective(land.enc, "macs", [6.0, 10.0]),
                  latency_objective(land.enc, latency, "cpu", [0.8], confidence=None)]
    calls: list[int] = []

    def measure(subs):
        calls.append(len(subs))
        return land.measure(subs)

    hist = search(land.enc, measure, objectives, evaluations=30, seed=0, generations=8)
    assert sum(calls) == hist["evaluations"] == 30  # one set of evaluations for both targets
    assert len({e["subnet"] for e in hist["evaluated"]}) == 30
    assert [r.get("heldout_spearman") is not None for r in hist["rounds"][1:]]
    for name, budgets in (("macs", [6.0, 10.0]), ("cpu", [0.8])):
        picks = hist["objectives"][name]["picks"]
        assert [p["budget"] for p in picks] == budgets
        for p in picks:
            assert p["subnet"] is not None and p["cost"] <= p["budget"]
    # under 10 MFLOPs the pick is better (true accuracy) than the median random subnet within it
    pick = Subnet.parse(hist["objectives"]["macs"]["picks"][1]["subnet"], SPACE)
    x = land.enc.random(np.random.default_rng(5), 3000)
    within = land.true(x)[land.enc.macs(x) <= 10e6]
    assert land.true(land.enc.encode([pick]))[0] > np.median(within)


def test_search_cli_on_a_run_writes_history_and_figure(fake_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "search"
    code, stdout, err = run_cli(capsys, "search", fake_run, "--target", "cpu", "--evaluations", "6", "--out", out,
                                "--max-mflops", "8", "--calib-images", "64", "--test-images", "100",
                                "--generations", "3")
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    assert history["format"] == "ofa-deploy/search" and history["evaluations"] == 6
    assert history["chosen_on"] == "test:half1:seed0" and "reporting split was not read" in history["splits"]
    assert (out / "front.png").stat().st_size > 0
    assert "cpu <= 8 MFLOPs" in stdout
    # the directory is the search's own: --overwrite replaces it, without it it is refused
    code, _, err = run_cli(capsys, "search", fake_run, "--target", "cpu", "--evaluations", "6", "--out", out)
    assert_one_line_error(code, err, "already exists")


def _bad(capsys, tmp_path: Path, run: Path, *args: str, needles: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "search", run, "--out", out, *args)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_search_refuses_bad_input_in_one_line_writing_nothing(fake_run: Path, tmp_path: Path, capsys):
    _bad(capsys, tmp_path, fake_run, "--evaluations", "5", needles=("at least one --target",))
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "0", needles=("--evaluations",))
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--max-mflops", "1",
         needles=("no subnet meets", "1 MFLOPs"))
    for value in ("nan", "inf", "-inf"):
        _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--max-mflops", value,
             needles=("positive finite",))
    predictor = _predictor(tmp_path)
    for value in ("nan", "cpu=inf"):
        _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--predictor", predictor,
             "--max-latency-ms", value, "--confidence", "0.9", needles=("positive finite",))
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--max-latency-ms", "1",
         needles=("needs its latency predictor",))
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--predictor", predictor,
         "--max-latency-ms", "0.0001", needles=("no subnet meets",))
    other_space = _predictor(tmp_path, SearchSpace(in_channels=3))
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--predictor", other_space,
         needles=("another search space",))
    other_target = _predictor(tmp_path, target="jetson-orin")
    _bad(capsys, tmp_path, fake_run, "--target", "cpu", "--evaluations", "5", "--predictor", other_target,
         needles=("jetson-orin",))
