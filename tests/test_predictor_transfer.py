"""Predictor transfer (issue 16): active selection, the transfer model against a made-up
device with a known scale and corrections, interval calibration against known noise,
uncertainty of predictors written before it existed, and `predictor adapt` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, one_torch_thread, run_cli

from ofa_deploy.errors import OfaError
from ofa_deploy.predictor.features import Featurizer
from ofa_deploy.predictor.predictor import LatencyPredictor, accuracy_report, fit
from ofa_deploy.predictor.transfer import (
    SELECT_STRENGTH,
    adapt,
    make_prior,
    population,
    posterior,
    rows,
    select,
    selection_order,
)
from ofa_deploy.predictor.uncertainty import t_quantile
from ofa_deploy.profile.collect import design_subnets, holdout_subnets
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1)
FEAT = Featurizer(SPACE)


@pytest.fixture(scope="module")
def source() -> LatencyPredictor:
    """A source device whose blocks multiply (as the 2-core CPU's do), fitted on 150 subnets."""
    table = np.random.default_rng(3).uniform(0.01, 0.05, len(FEAT.keys))

    def device(subs):
        return np.exp(-1.0 + FEAT.counts(subs) @ table)

    train = design_subnets(SPACE, 150, seed=0)
    return fit(SPACE, train, device(train), target="cpu", statistic="min", forms=("multiplicative",),
               statistic_ratios={"p90": 1.2}, info={"validation": {"n": 150, "rms_log_error": 0.03}})


BLOCKS = FEAT.physics[:, [i for i, op in enumerate(FEAT.physics_ops) if op == "block"]].sum(axis=1)
DW7 = FEAT.physics[:, [i for i, op in enumerate(FEAT.physics_ops) if op == "depthwise7"]].sum(axis=1)


def _target(source, subs, noise=0.0, seed=0):
    """The new device, an eager framework's: 1.7x the source, plus 0.03 ms per block and
    0.4 ms per MMAC of 7x7 depthwise convolution, log-normal noise."""
    rng = np.random.default_rng(seed)
    counts = FEAT.counts(subs)
    return ((1.7 * source.predict(subs) + 0.03 * counts @ BLOCKS + 0.4 * counts @ DW7)
            * np.exp(noise * rng.standard_normal(len(subs))))


def _rows(source, subs, prior):
    return rows(source, FEAT.counts(subs), prior)


def test_selection_is_deterministic_nested_and_beats_random(source):
    pop = population(SPACE, 400, seed=0)
    cand = holdout_subnets(SPACE, 200, seed=1)
    prior = make_prior(source, FEAT.counts(pop))
    pc, pp = _rows(source, cand, prior), _rows(source, pop, prior)
    first = select(pc, pp, prior, 12)
    assert first == select(pc, pp, prior, 12) and len(set(first)) == 12
    assert select(pc, pp, prior, 5) == first[:5]  # a smaller budget measures a prefix
    assert first == selection_order(source, cand, pop, 12)
    relative_c, relative_p = pc / pc[:, :1], pp / pp[:, :1]  # rows over the prior's prediction (a S(x))

    def population_variance(idx):
        post = posterior(relative_c[idx], np.zeros(len(idx)), prior, SELECT_STRENGTH)
        return float(np.einsum("ij,ij->i", relative_p @ post.cov, relative_p).sum())

    rng = np.random.default_rng(0)
    randoms = [population_variance(list(rng.choice(len(cand), 12, replace=False))) for _ in range(10)]
    assert population_variance(first) < min(randoms)
    with pytest.raises(OfaError, match="cannot choose"):
        select(pc[:3], pp, prior, 4)


def test_adapt_recovers_a_known_scale_and_per_operation_costs(source):
    pop = population(SPACE, 400, seed=0)
    cand = holdout_subnets(SPACE, 200, seed=1)
    held = holdout_subnets(SPACE, 150, seed=2, exclude=cand)
    chosen = [cand[i] for i in selection_order(source, cand, pop, 20)]
    model = adapt(source, chosen, _target(source, chosen, noise=0.01), target="new", statistic="min", pop=pop)
    assert model.form == "hybrid"
    truth = _target(source, held)
    report = accuracy_report(truth, model.predict(held))
    assert report["within_5pct"] >= 0.95 and report["spearman"] > 0.99, report
    # what the target adds to the scaled source, regressed on the two operations it charges for
    counts = FEAT.counts(held)
    added = model.predict(held) - model.info["transfer"]["source_scale"] * source.predict(held)
    per_block, per_dw7, _ = np.linalg.lstsq(np.column_stack([counts @ BLOCKS, counts @ DW7, np.ones(len(held))]),
                                            added, rcond=None)[0]
    assert abs(model.info["transfer"]["source_scale"] - 1.7) < 0.2 and abs(per_block - 0.03) < 0.01
    assert abs(per_dw7 - 0.4) < 0.1
    # the source alone is off by the scale: the transfer did the work
    assert accuracy_report(truth, source.predict(held))["within_10pct"] < 0.1


def test_intervals_cover_about_their_level_with_known_noise(source):
    """Devices drawn from the transfer model's prior (per-operation costs at the selection's
    strength, in units of the typical latency), 0.5-3x as slow as that, 3 % log-normal noise:
    the stated 90 % intervals must hold about 90 % of held-out measurements (not just be wide)."""
    pop = population(SPACE, 400, seed=0)
    cand = holdout_subnets(SPACE, 200, seed=1)
    held = holdout_subnets(SPACE, 200, seed=2, exclude=cand)
    prior = make_prior(source, FEAT.counts(pop))
    pc, ph = _rows(source, cand, prior), _rows(source, held, prior)
    chosen = select(pc, _rows(source, pop, prior), prior, 20)
    dim = len(prior.mean)
    root = np.linalg.cholesky(prior.cov(SELECT_STRENGTH)[2:, 2:] + 1e-12 * np.eye(dim - 2))
    coverage = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        theta = np.concatenate([[rng.uniform(0.8, 1.25), 0.05 * rng.standard_normal()],
                                root @ rng.standard_normal(dim - 2)])
        scale = rng.uniform(0.5, 3.0)
        measured = scale * pc[chosen] @ theta * np.exp(0.03 * rng.standard_normal(20))
        truth = scale * ph @ theta * np.exp(0.03 * rng.standard_normal(len(held)))
        assert np.all(measured > 0) and np.all(truth > 0)
        model = adapt(source, [cand[i] for i in chosen], measured, target="new", statistic="min", pop=pop)
        _, lo, hi = model.interval(held, 0.9)
        coverage.append(np.mean((truth >= lo) & (truth <= hi)))
    assert 0.85 <= float(np.mean(coverage)) <= 0.95, coverage


def test_t_quantiles_match_the_tables():
    # Student t table: t_{0.95}(10) = 1.812, t_{0.975}(20) = 2.086, t_{0.9}(5) = 1.476
    assert abs(t_quantile(0.95, 10) - 1.812) < 2e-3
    assert abs(t_quantile(0.975, 20) - 2.086) < 2e-3
    assert abs(t_quantile(0.9, 5) - 1.476) < 2e-3
    assert abs(t_quantile(0.95, math.inf) - 1.645) < 1e-3


def test_files_without_uncertainty_still_load(source, tmp_path: Path):
    data = source.to_dict()
    data.pop("uncertainty", None)
    data["validation"] = {"n": 100, "mean_abs_rel_error": 0.04}  # as files before rms_log_error recorded it
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = LatencyPredictor.load(path)
    subs = holdout_subnets(SPACE, 5, seed=4)
    pred, sd = old.predict_distribution(subs)
    assert np.allclose(sd, 0.04 * math.sqrt(math.pi / 2)) and old.uncertainty.kind == "cross-validation"
    _, lo, hi = old.interval(subs, 0.9)
    assert np.allclose(hi / pred, np.exp(1.6449 * sd), rtol=1e-3) and np.all(lo < pred)
    assert np.all(old.upper_bound(subs, 0.9) < hi)  # one-sided 90 % sits inside the two-sided 90 %
    del data["validation"]
    path.write_text(json.dumps(data))
    bare = LatencyPredictor.load(path)
    assert bare.predict(subs).shape == (5,)
    with pytest.raises(OfaError, match="no uncertainty"):
        bare.interval(subs)


def test_adapted_predictor_round_trips(source, tmp_path: Path):
    pop = population(SPACE, 200, seed=0)
    subs = holdout_subnets(SPACE, 8, seed=5)
    model = adapt(source, subs, _target(source, subs, 0.01), target="new", statistic="min", pop=pop)
    model.save(tmp_path / "p.json")
    again = LatencyPredictor.load(tmp_path / "p.json")
    held = holdout_subnets(SPACE, 20, seed=6)
    assert np.allclose(again.interval(held)[2], model.interval(held)[2])
    assert again.uncertainty.kind == "bayesian" and again.uncertainty.dof > 2


def test_an_adapted_predictor_adapts_again(source, tmp_path: Path):
    """A hybrid's source may itself be a hybrid (cpu -> a -> b): the nested model saves,
    loads and predicts the same."""
    pop = population(SPACE, 200, seed=0)
    subs = holdout_subnets(SPACE, 12, seed=5)
    first = adapt(source, subs, _target(source, subs, 0.01), target="a", statistic="min", pop=pop)
    second = adapt(first, subs, 2.0 * np.asarray(first.predict(subs)), target="b", statistic="min", pop=pop)
    second.save(tmp_path / "b.json")
    again = LatencyPredictor.load(tmp_path / "b.json")
    held = holdout_subnets(SPACE, 20, seed=6)
    assert np.allclose(again.predict(held), second.predict(held), rtol=1e-12)
    assert np.allclose(again.interval(held)[2], second.interval(held)[2])
    assert again.to_dict()["base"]["form"] == "hybrid" and again.to_dict()["base"]["base"]["form"] == "multiplicative"
    assert accuracy_report(2.0 * np.asarray(first.predict(held)), again.predict(held))["within_5pct"] >= 0.95


def test_malformed_hybrid_predictors_are_refused_in_one_line(source, tmp_path: Path):
    pop = population(SPACE, 200, seed=0)
    subs = holdout_subnets(SPACE, 8, seed=5)
    good = adapt(source, subs, _target(source, subs, 0.01), target="new", statistic="min", pop=pop).to_dict()

    def nested(depth):
        data = json.loads(json.dumps(good))
        inner = data["base"]
        for _ in range(depth):
            inner = {**inner, "form": "hybrid", "base": inner, "base_scale": 1.0, "floor": 1e-6}
        data["base"] = inner
        return data

    cases = {
        "no base": ({k: v for k, v in good.items() if k != "base"}, "missing field 'base'"),
        "negative floor": ({**good, "floor": -1.0}, "floor must be a positive number"),
        "nan scale": ({**good, "base_scale": "nan"}, "non-finite|base_scale"),
        "base of another space": ({**good, "base": {**good["base"], "table": {"x": 1.0}}}, "no table entry"),
        "too deep": (nested(9), "nest deeper than 8"),
        "base on a multiplicative": ({**good, "form": "multiplicative"}, "only a hybrid has one|uncertainty cov"),
        # integers too large for a float (JSON holds them) once escaped as an OverflowError traceback
        "huge intercept": ({**good, "intercept": 10**400}, "must be finite numbers"),
        "huge base number": ({**good, "base": {**good["base"], "intercept": 10**400}}, "too large for a float"),
        "huge floor": ({**good, "floor": 10**400}, "floor must be a positive number"),
        "huge uncertainty": ({**good, "uncertainty": {**good["uncertainty"], "scale2": 10**400}}, "too large"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(OfaError, match=message) as info:
            LatencyPredictor.load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), name
    path = tmp_path / "deep-but-fine.json"
    path.write_text(json.dumps(nested(6)))
    assert LatencyPredictor.load(path).form == "hybrid"


@pytest.fixture
def saved_source(source, tmp_path: Path) -> Path:
    path = tmp_path / "source" / "predictor.json"
    source.save(path)
    return path


PROTOCOL = ["--rounds", "1", "--warmup-s", "0.02", "--min-iterations", "5", "--min-time-s", "0.02"]


def test_adapt_cli_end_to_end(capsys, fake_run: Path, saved_source: Path, tmp_path: Path):
    out = tmp_path / "adapted"
    args = ["predictor", "adapt", "--from", saved_source, "--target", "cpu-2t", "--run", fake_run, "--budget", "6",
            "--step", "3", "--out", out, "--onnx-dir", tmp_path / "onnx", *PROTOCOL, "--json"]
    with one_torch_thread():
        code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["measured"] == 6 and summary["measured_now"] == 6 and summary["stopped"] == "budget"
    assert err.count("measured: estimated mean error") == 2  # progress after each step, on stderr
    saved = json.loads((out / "predictor.json").read_text())
    assert saved["target"] == "cpu-2t" and saved["uncertainty"]["kind"] == "bayesian"
    assert saved["transfer"]["source_target"] == "cpu" and saved["selection"]["budget"] == 6
    rows = [json.loads(line) for line in (out / "latency.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "adapt" for r in rows) == 6 and {r["target"] for r in rows} == {"cpu-2t"}
    assert sum(r["split"] == "anchor" for r in rows) == 4  # two anchors in each of the two steps
    assert saved["drift"]["anchored_chunks"] == 2
    with one_torch_thread():
        code, stdout, err = run_cli(capsys, *args)  # resumes: nothing left to measure
    assert code == 0 and json.loads(stdout)["measured_now"] == 0
    assert 0 <= json.loads(stdout)["checked_error"] < 10  # the 3-subnet fit on the 3 measured after it
    with one_torch_thread():  # the same, told to a person
        code, stdout, err = run_cli(capsys, *[a for a in args if a != "--json"])
    assert code == 0 and "6 measured subnets, 0 now; stopped by budget" in stdout
    assert "the previous fit's on the last subnets measured" in stdout
    with one_torch_thread():
        code, stdout, err = run_cli(capsys, "predictor", "check", "--predictor", out, "--run", fake_run, "--n", "3",
                                    "--curve", "2,4", "--onnx-dir", tmp_path / "onnx", *PROTOCOL, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert 0.0 <= report["interval_90"]["coverage"] <= 1.0
    assert report["drift"]["anchored_chunks"] == 3 and isinstance(report["warnings"], list)  # 2 adapt + 1 held-out
    assert [p["n"] for p in report["curve"]["points"]] == [2, 4] and (out / "curve.png").is_file()
    assert report["curve"]["points"][1]["scratch"] is None and "macs" in report["curve"]["points"][1]


def _fake_measuring(monkeypatch, anchor_swing: float) -> None:
    """Measuring without exporting or timing: a subnet's latency is a function of its MACs;
    the anchors read ``anchor_swing`` apart, in opposite directions, from one chunk to the next
    (a machine whose speed changes between models, not between chunks)."""
    from ofa_deploy.cost import macs
    from ofa_deploy.profile import collect as collect_module
    from ofa_deploy.profile.collect import anchor_subnets
    from ofa_deploy.space import Subnet

    anchors = [str(a) for a in anchor_subnets(SPACE)]
    calls = []

    def export(supernet, sub, target, out_dir):
        return Path(out_dir) / "model.onnx"

    def measure(paths, target, **kwargs):
        calls.append(len(calls))
        out = []
        for p in paths:
            ms = 0.1 + macs(SPACE, Subnet.parse(p.parent.name, SPACE)) / 1e7
            if p.parent.name in anchors:
                ms *= anchor_swing ** ((anchors.index(p.parent.name) + len(calls)) % 2)
            out.append({"latency_ms": {s: ms for s in ("min", "mean", "p50", "p90", "p95", "p99", "max", "std")},
                        "n": 10, "cov": 0.01, "unstable": False})
        return out

    monkeypatch.setattr(collect_module, "export_for_timing", export)
    monkeypatch.setattr(collect_module, "measure_interleaved", measure)


def test_adapt_stops_early_once_the_checked_error_is_below_the_target(capsys, monkeypatch, fake_run: Path,
                                                                       saved_source: Path, tmp_path: Path):
    # measured latencies are a function of MACs here (real timings of the tiny test models on a loaded
    # machine once made the first fit's error on the next step's subnets exceed even 90 %)
    _fake_measuring(monkeypatch, 1.0)
    args = ["predictor", "adapt", "--from", saved_source, "--target", "cpu-2t", "--run", fake_run, "--budget", "9",
            "--step", "3", "--json"]
    # an estimated error below --target-error, and the first fit's error on the next step's subnets (measured
    # after it) below it too, end measuring after the second step of three
    code, stdout, err = run_cli(capsys, *args, "--out", tmp_path / "early", "--target-error", "0.9")
    assert code == 0, err
    early = json.loads(stdout)
    assert early["stopped"] == "target_error" and early["measured"] == 6 and early["estimated_error"] <= 0.9, early
    assert 0.0 <= early["checked_error"] <= 0.9 and "the previous fit's error on them" in err
    # a target no fit reaches: the whole budget, each step checked
    code, stdout, err = run_cli(capsys, *args, "--out", tmp_path / "strict", "--target-error", "0.0001")
    assert code == 0, err
    strict = json.loads(stdout)
    assert strict["stopped"] == "budget" and strict["measured"] == 9 and strict["checked_error"] > 0.0001


@pytest.mark.parametrize("swing", [1.0, 1.3])
def test_adapt_warns_when_the_anchors_say_the_machine_is_noisy(capsys, monkeypatch, fake_run: Path,
                                                                saved_source: Path, tmp_path: Path, swing: float):
    _fake_measuring(monkeypatch, swing)
    code, stdout, err = run_cli(capsys, "predictor", "adapt", "--from", saved_source, "--target", "cpu", "--run",
                                fake_run, "--budget", "6", "--step", "2", "--out", tmp_path / "a", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["measured"] == 6 and summary["drift"]["anchored_chunks"] == 3
    if swing == 1.0:
        assert summary["warnings"] == [] and "warning:" not in err
        return
    assert summary["drift"]["anchor_noise_sd"] > 0.1
    (warning,) = summary["warnings"]
    assert "the latency measurements are noisy" in warning and "3 chunks" in warning
    assert err.count(f"warning: {warning}") == 1  # also told on stderr, once


def test_adapt_refuses_bad_input(capsys, fake_run: Path, saved_source: Path, tmp_path: Path):
    out = tmp_path / "adapted"
    base = ["predictor", "adapt", "--from", saved_source, "--run", fake_run, "--out", out]
    code, _, err = run_cli(capsys, *base, "--target", "cpu", "--budget", "0")
    assert_one_line_error(code, err, "--budget 0")
    code, _, err = run_cli(capsys, *base, "--target", "cpu", "--budget", "99999999999999999999")
    assert_one_line_error(code, err, "--budget 99999999999999999999: at most 500")
    code, _, err = run_cli(capsys, *base, "--target", "jetson-orin")
    assert_one_line_error(code, err, "jetson-orin", "--no-measure", "--import")
    broken = tmp_path / "broken.json"
    broken.write_text(saved_source.read_text()[:200])
    code, _, err = run_cli(capsys, "predictor", "adapt", "--from", broken, "--run", fake_run, "--out", out,
                           "--target", "cpu")
    assert_one_line_error(code, err, "--from", "broken.json")
    for size, needle in ((dict(in_channels=3), "in_channels 3 vs 1"), (dict(in_channels=1, image_size=64),
                                                                         "image_size 64 vs 32")):
        space = SearchSpace(**size)
        subs = holdout_subnets(space, 8, seed=0)
        other = fit(space, subs, np.linspace(1.0, 2.0, 8), target="cpu", forms=("multiplicative",))
        other.save(tmp_path / "other.json")
        code, _, err = run_cli(capsys, "predictor", "adapt", "--from", tmp_path / "other.json", "--run", fake_run,
                               "--out", out, "--target", "cpu")
        assert_one_line_error(code, err, "another search space", needle)
    assert not out.exists()


def test_catalog_select_holds_the_budget_to_the_upper_bound(capsys, source, saved_source: Path, tmp_path: Path):
    from test_catalog import fill

    from ofa_deploy.catalog.db import Catalog
    from ofa_deploy.space import Subnet

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path, n=16)
    code, stdout, err = run_cli(capsys, "catalog", "list", "--catalog", db, "--target", "cpu", "--json")
    items = json.loads(stdout)
    upper = source.upper_bound([Subnet.from_dict(e["subnet"], SPACE) for e in items], 0.9, "p90")
    bound = {e["key"]: max(e["latency_ms"]["p90"], u) for e, u in zip(items, upper)}
    budget = sorted(bound.values())[len(items) // 2]
    expected = max((e for e in items if bound[e["key"]] <= budget), key=lambda e: e["accuracy"])
    code, stdout, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "cpu", "--max-latency-ms",
                                budget, "--predictor", saved_source, "--confidence", "0.9", "--json")
    assert code == 0, err
    chosen = json.loads(stdout)
    assert chosen["key"] == expected["key"] and chosen["budget_latency_ms"] <= budget
    assert chosen["p90_upper_ms"] > source.predict(Subnet.from_dict(chosen["subnet"], SPACE), "p90")
    code, _, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "cpu", "--max-latency-ms", "1",
                           "--confidence", "0.9")
    assert_one_line_error(code, err, "--confidence needs --predictor")
    code, _, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--target", "cpu", "--max-latency-ms", "1",
                           "--predictor", saved_source, "--confidence", "1.5")
    assert_one_line_error(code, err, "--confidence")
    code, _, err = run_cli(capsys, "catalog", "build", tmp_path / "no-run", "--target", "cpu", "--catalog",
                           tmp_path / "new.db", "--confidence", "0.9")
    assert_one_line_error(code, err, "--confidence needs --predictor")
    assert not (tmp_path / "new.db").exists()


def test_a_device_target_is_chosen_here_measured_there_and_imported(capsys, fake_run: Path, saved_source: Path,
                                                                    tmp_path: Path):
    from test_catalog import fake_result

    out = tmp_path / "orin"
    base = ["predictor", "adapt", "--from", saved_source, "--run", fake_run, "--out", out, "--target", "jetson-orin",
            "--budget", "3"]
    with one_torch_thread():
        code, stdout, err = run_cli(capsys, *base, "--no-measure", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert len(summary["to_measure"]) == 3 and not (out / "predictor.json").exists()
    results = []
    for i, path in enumerate(summary["to_measure"]):
        sidecar = json.loads((Path(path) / "model.json").read_text())
        assert Path(path).parent == out / "to-measure" and sidecar["subnet_text"] == summary["chosen"][i]
        results.append(fake_result(2.0 + i, subnet=sidecar["subnet"], target="jetson-orin"))
    (tmp_path / "r.json").write_text(json.dumps(results))
    code, stdout, err = run_cli(capsys, *base, "--import", tmp_path / "r.json", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["imported"] == 3 and summary["measured"] == 3 and summary["measured_now"] == 0
    saved = LatencyPredictor.load(out / "predictor.json")
    assert saved.target == "jetson-orin" and saved.uncertainty.kind == "bayesian"
    wrong = [fake_result(2.0, subnet=results[0]["model"]["subnet"], target="cpu")]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    code, _, err = run_cli(capsys, *base, "--import", tmp_path / "wrong.json")
    assert_one_line_error(code, err, "measured on target cpu, not jetson-orin")


def test_device_results_are_cut_into_chunks_by_the_anchors_and_their_drift_divided_out(
        capsys, fake_run: Path, saved_source: Path, tmp_path: Path):
    """The device warms up after the first two subnets: from then on everything, anchors too,
    reads 25 % slower. The import sees it through the anchors profiled between the steps."""
    from test_catalog import fake_result

    from ofa_deploy.profile.collect import LatencyDataset

    out = tmp_path / "orin"
    base = ["predictor", "adapt", "--from", saved_source, "--run", fake_run, "--out", out, "--target", "jetson-orin",
            "--budget", "4", "--step", "2"]
    with one_torch_thread():
        code, stdout, err = run_cli(capsys, *base, "--no-measure", "--json")
    assert code == 0, err
    plan = json.loads(stdout)
    a, s = plan["anchors"], plan["to_measure"]
    assert len(a) == 2 and all(Path(d).parent == out / "to-measure" / "anchors" for d in a)
    assert plan["order"] == a + s[:2] + a + s[2:] + a
    with one_torch_thread():  # the same plan, told to a person: numbered, in order
        code, stdout, err = run_cli(capsys, *base, "--no-measure")
    assert code == 0 and "again after every 2" in stdout and f"   10  {a[1]}" in stdout
    results = []
    for i, d in enumerate(plan["order"]):
        sidecar = json.loads((Path(d) / "model.json").read_text())
        ms = 2.0 + 0.1 * (a + s).index(d)  # each subnet, each anchor, its own latency
        r = fake_result(ms * (1.25 if i >= 4 else 1.0), subnet=sidecar["subnet"], target="jetson-orin")
        r["environment"]["date"] = f"2026-01-01T00:00:{i:02d}+00:00"
        results.append(r)
    # one file per profile run, given in another order than measured: the dates decide
    files = []
    for i, r in reversed(list(enumerate(results))):
        files += ["--import", tmp_path / f"r{i}.json"]
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    code, stdout, err = run_cli(capsys, *base, *files, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["imported"] == 4 and summary["measured"] == 4
    assert summary["drift"]["anchored_chunks"] == 3 and summary["warnings"] == []
    assert summary["drift"]["factors"] == {"0": 0.8, "1": 1.0, "2": 1.0}  # the warm device is the norm
    data = LatencyDataset(out / "latency.jsonl", SPACE)
    first = data.rows[("adapt", plan["chosen"][0])]
    assert first["chunk"] == 0 and data.latency(first, "min") == pytest.approx(first["latency_ms"]["min"] / 0.8)
    assert data.rows[("adapt", plan["chosen"][3])]["chunk"] == 1
    lines = (out / "latency.jsonl").read_text()
    code, stdout, err = run_cli(capsys, *base, *files, "--json")  # importing again adds nothing
    assert code == 0 and json.loads(stdout)["imported"] == 0 and (out / "latency.jsonl").read_text() == lines


def test_predict_cli_states_each_prediction_with_its_interval(capsys, source, saved_source: Path):
    sub = SPACE.middle()
    code, stdout, err = run_cli(capsys, "predictor", "predict", "--predictor", saved_source, str(sub), "--json")
    assert code == 0, err
    row = json.loads(stdout)["predictions"][0]
    lo, hi = row["interval_90_ms"]
    assert lo < row["predicted_min_ms"] < hi and row["relative_se"] == pytest.approx(0.03)
    assert hi / row["predicted_min_ms"] == pytest.approx(math.exp(1.6449 * 0.03), rel=1e-3)
