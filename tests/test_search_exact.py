"""The search's exact optimiser of additive models (``search.exact``), the features it
works on (``Encoding.features`` / ``gains``), the ridge posterior draws, and the search's
pick by the fitted mean (issue 33)."""

from __future__ import annotations

import itertools

import numpy as np

from ofa_deploy.search.accuracy import AccuracyModel
from ofa_deploy.search.encoding import Encoding
from ofa_deploy.search.engine import macs_objective, nsga2, search
from ofa_deploy.search.exact import best_under_budgets, pareto
from ofa_deploy.search.synthetic import Landscape
from ofa_deploy.space import PAPER_STAGES, SearchSpace, Subnet

SPACE = SearchSpace(in_channels=1)
BUDGETS = [5.0, 6.0, 8.0, 12.0]


def test_pareto_keeps_the_cheapest_best_points():
    cost = np.array([3.0, 1.0, 2.0, 2.0, 4.0, 1.0])
    gain = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.5])
    assert pareto(cost, gain).tolist() == [1, 2, 0]
    assert pareto(np.zeros(0), np.zeros(0)).tolist() == []


def test_exact_optimum_matches_the_landscape_and_is_within_budget():
    for seed in range(3):
        land = Landscape(SPACE, seed=seed)
        found = best_under_budgets(land.enc, land.a, land.b, BUDGETS)
        for budget, (row, gain) in zip(BUDGETS, found):
            x = row[None, :]
            assert land.enc.macs(x)[0] <= budget * 1e6
            assert (land.enc.canonical(x) == x).all()
            assert abs(land.true(x)[0] - land.optimum(budget)[0]) < 1e-12
            # the returned gain is the model's sum for that subnet (the landscape less its offset)
            assert abs(land.offset + land.scale * gain - land.true(x)[0]) < 1e-12
    assert best_under_budgets(land.enc, land.a, land.b, [0.1]) == [None]


def test_exact_optimum_equals_brute_force_on_a_small_space():
    """Two stages, two choices each: every subnet enumerated, random gains (negative ones
    too), budgets from the cheapest to none."""
    space = SearchSpace(in_channels=1, kernel_choices=(3, 5), expand_choices=(3, 6), depth_choices=(1, 2),
                        stages=PAPER_STAGES[:2])
    enc = Encoding(space)
    rows = np.unique(enc.canonical(np.array(list(itertools.product(*[range(u + 1) for u in enc.upper])))), axis=0)
    cost = enc.macs(rows) / 1e6
    for seed in range(5):
        rng = np.random.default_rng(seed)
        g, h = rng.normal(size=(enc.n, enc.nk, enc.ne)), rng.normal(size=(enc.stages, enc.nd))
        value = (g[np.arange(enc.n)[None, :], rows[:, : enc.n], rows[:, enc.n: 2 * enc.n]] * enc.active(rows)).sum(1) \
            + h[np.arange(enc.stages)[None, :], rows[:, 2 * enc.n:]].sum(1)
        budgets = [float(b) for b in np.quantile(cost, [0.0, 0.3, 0.7, 1.0])]
        for budget, (row, gain) in zip(budgets, best_under_budgets(enc, g, h, budgets)):
            best = value[cost <= budget].max()
            assert abs(gain - best) < 1e-9
            i = int(np.flatnonzero((rows == row).all(axis=1))[0])
            assert abs(value[i] - best) < 1e-9 and cost[i] <= budget


def test_features_are_additive_and_gains_reproduce_a_linear_model():
    enc = Encoding(SPACE)
    rng = np.random.default_rng(3)
    x = enc.random(rng, 200)
    f = enc.features(x)
    assert f.shape == (200, enc.n_features)
    # an absent block contributes nothing: two subnets differing only in an absent block's
    # (canonicalised) choice have equal features
    w = rng.normal(size=enc.n_features)
    g, h = enc.gains(w)
    direct = (g[np.arange(enc.n)[None, :], x[:, : enc.n], x[:, enc.n: 2 * enc.n]] * enc.active(x)).sum(1) \
        + h[np.arange(enc.stages)[None, :], x[:, 2 * enc.n:]].sum(1)
    assert np.allclose(f @ w, direct)
    # per active block, exactly one cell one-hot is set; shared counts sum to the active blocks
    active = enc.active(x).sum(1)
    cells = enc.nk * enc.ne
    per = cells + 2
    local = f[:, : enc.n * per].reshape(200, enc.n, per)
    assert (local[:, :, :cells].sum(axis=(1, 2)) == active).all()
    assert (f[:, enc.n * per: enc.n * per + cells].sum(1) == active).all()


def test_ridge_draws_centre_on_the_fit_and_its_optimum_matches_predict():
    land = Landscape(SPACE, seed=4)
    rng = np.random.default_rng(0)
    x = land.enc.random(rng, 80)
    y = np.array(land.measure([land.enc.decode(r) for r in x]))
    model = AccuracyModel("ridge").fit(land.enc.features(x), y)
    assert model.additive and not AccuracyModel("mlp").additive
    draws = np.stack([model.sample_weights(np.random.default_rng(i)) for i in range(400)])
    spread = draws.std(axis=0)
    assert spread.min() > 0
    assert np.abs(draws.mean(axis=0) - model.weights()).max() < 5 * spread.max() / np.sqrt(400)
    assert np.allclose(np.stack([model.sample_weights(np.random.default_rng(1), 0.0)]), model.weights())
    # the exact optimum of the fitted mean is at least as good (predicted) as NSGA-II's best
    (row, _), = best_under_budgets(land.enc, *land.enc.gains(model.weights()), [8.0])
    exact_pred = model.predict(land.enc.features(row[None, :]))[0][0]
    pop, _ = nsga2(land.enc, lambda z: model.predict(land.enc.features(z))[0], lambda z: land.enc.macs(z) / 1e6,
                   8.0, pop=60, generations=30, seed=0)
    within = land.enc.macs(pop) <= 8e6
    assert exact_pred >= model.predict(land.enc.features(pop[within]))[0].max() - 1e-12


def test_search_picks_by_fitted_mean_and_exploits_exactly_in_its_last_round():
    land = Landscape(SPACE, seed=6, noise=0.002)
    hist = search(land.enc, land.measure, [macs_objective(land.enc, budgets=BUDGETS)], evaluations=40, seed=1)
    assert hist["evaluations"] == 40 and hist["picked_by"] == "fitted"
    assert hist["rounds"][-1]["exploit"] and not hist["rounds"][1]["exploit"]
    assert all(r["heldout_spearman"] is not None for r in hist["rounds"][1:])
    subs = [Subnet.parse(e["subnet"], SPACE) for e in hist["evaluated"]]
    model = AccuracyModel("ridge").fit(land.enc.features(land.enc.encode(subs)),
                                       np.array([e["accuracy"] for e in hist["evaluated"]]))
    fitted = model.predict(land.enc.features(land.enc.encode(subs)))[0]
    cost = land.enc.macs(land.enc.encode(subs)) / 1e6
    for pick in hist["objectives"]["macs"]["picks"]:
        within = np.flatnonzero(cost <= pick["budget"])
        assert pick["index"] == int(within[np.argmax(fitted[within])])
        assert pick["cost"] <= pick["budget"] and abs(pick["fitted"] - fitted[pick["index"]]) < 1e-12
    # the last round evaluated (at least) one subnet per budget: the fitted mean's exact optima
    last = [Subnet.parse(e["subnet"], SPACE) for e in hist["evaluated"] if e["round"] == hist["rounds"][-1]["round"]]
    assert len(last) >= len(BUDGETS)
    # and the search beats the median random subnet by far under every budget
    x = land.enc.random(np.random.default_rng(5), 3000)
    for pick in hist["objectives"]["macs"]["picks"]:
        within = land.true(x)[land.enc.macs(x) <= pick["budget"] * 1e6]
        assert land.true(land.enc.encode([Subnet.parse(pick["subnet"], SPACE)]))[0] > np.quantile(within, 0.9)


def test_fitted_landscape_recovers_an_additive_function_and_its_optimum_is_brute_force():
    """``Landscape.fitted`` on noise-free evaluations of a known additive function (tiny
    space, every subnet enumerated): the fit is exact, its default noise (the LOO residual
    SD) is ~0, and its ``optimum`` is the brute-force best under every budget."""
    import pytest

    from ofa_deploy.errors import OfaError

    space = SearchSpace(in_channels=1, kernel_choices=(3, 5), expand_choices=(3, 6), depth_choices=(1, 2),
                        stages=PAPER_STAGES[:2])
    enc = Encoding(space)
    rows = np.unique(enc.canonical(np.array(list(itertools.product(*[range(u + 1) for u in enc.upper])))), axis=0)
    cost = enc.macs(rows) / 1e6
    rng = np.random.default_rng(7)
    g, h = rng.normal(0, 0.01, size=(enc.n, enc.nk, enc.ne)), rng.normal(0, 0.01, size=(enc.stages, enc.nd))
    value = 0.9 + (g[np.arange(enc.n)[None, :], rows[:, : enc.n], rows[:, enc.n: 2 * enc.n]]
                   * enc.active(rows)).sum(1) + h[np.arange(enc.stages)[None, :], rows[:, 2 * enc.n:]].sum(1)
    train = rng.choice(len(rows), 120, replace=False)  # fitted on some, checked on all
    land = Landscape.fitted(space, [enc.decode(r) for r in rows[train]], value[train], seed=3)
    info = land.fit_info
    assert info is not None and info["n"] == 120 and info["r2"] > 1 - 1e-9 and info["loo_sd"] < 1e-6
    assert land.noise == info["loo_sd"] and land.structured_oracle([5.0]) == [None]
    assert np.abs(land.true(rows) - value).max() < 1e-6
    for budget in [float(b) for b in np.quantile(cost, [0.0, 0.3, 0.7, 1.0])]:
        best, at = land.optimum(budget)
        assert abs(best - value[cost <= budget].max()) < 1e-6 and at <= budget + 1e-9
    # noise: fixed per subnet, drawn per seed; the landscape itself does not depend on the seed
    subs = [enc.decode(r) for r in rows[:50]]
    noisy = Landscape.fitted(space, [enc.decode(r) for r in rows[train]], value[train], noise=0.01, seed=3)
    other = Landscape.fitted(space, [enc.decode(r) for r in rows[train]], value[train], noise=0.01, seed=4)
    assert noisy.measure(subs) == noisy.measure(subs) != other.measure(subs)
    assert np.array_equal(noisy.a, other.a) and 0.003 < np.std(np.array(noisy.measure(subs)) - value[:50]) < 0.03
    for bad in (dict(accuracies=value[:2]), dict(accuracies=np.r_[value[:119], np.nan]), dict(noise=-1.0)):
        kwargs = {"accuracies": value[train], **bad}
        with pytest.raises(OfaError):
            Landscape.fitted(space, [enc.decode(r) for r in rows[train]], **kwargs)


def test_fitted_landscape_form_chosen_by_leave_one_out():
    """A landscape without kernel x expand interactions (a kernel term plus an expand term
    per block) is fitted exactly by the ``marginal`` form, and ``auto`` picks that form on
    noisy data from it (fewer numbers, smaller leave-one-out error); data with per-cell
    interactions make ``auto`` pick ``joint``. An unknown form is one ``OfaError``."""
    import pytest

    from ofa_deploy.errors import OfaError

    space = SearchSpace(in_channels=1, kernel_choices=(3, 5, 7), expand_choices=(3, 4, 6), depth_choices=(1, 2),
                        stages=PAPER_STAGES[:2])
    enc = Encoding(space)
    rng = np.random.default_rng(11)
    rows = enc.random(rng, 400)
    k, e = rng.normal(0, 0.01, size=(enc.n, enc.nk)), rng.normal(0, 0.01, size=(enc.n, enc.ne))
    cells = rng.normal(0, 0.01, size=(enc.n, enc.nk, enc.ne))
    blocks, active = np.arange(enc.n)[None, :], enc.active(rows)
    kernel, expand = rows[:, : enc.n], rows[:, enc.n: 2 * enc.n]
    marginal = 0.9 + ((k[blocks, kernel] + e[blocks, expand]) * active).sum(1)
    joint = 0.9 + (cells[blocks, kernel, expand] * active).sum(1)
    subs = [enc.decode(r) for r in rows]
    exact = Landscape.fitted(space, subs, marginal, form="marginal")
    assert exact.fit_info is not None and exact.fit_info["form"] == "marginal"
    assert np.abs(exact.true(rows) - marginal).max() < 1e-6
    noisy = marginal + rng.normal(0, 0.002, len(rows))
    auto = Landscape.fitted(space, subs, noisy)
    assert auto.fit_info is not None and auto.fit_info["form"] == "marginal"
    assert auto.fit_info["loo_sd_marginal"] < auto.fit_info["loo_sd_joint"]
    picked = Landscape.fitted(space, subs, joint + rng.normal(0, 0.002, len(rows))).fit_info
    assert picked is not None and picked["form"] == "joint"
    with pytest.raises(OfaError, match="landscape form"):
        Landscape.fitted(space, subs, marginal, form="cells")
