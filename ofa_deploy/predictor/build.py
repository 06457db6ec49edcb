"""``predictor build`` and ``predictor check``: measure, fit, validate, compare with MACs.

What the predictor directory holds is ``directory``'s docstring. Measuring (``profile.collect``)
needs the run's supernet (torch) to export subnets; fitting and predicting do not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OfaError
from ..io import atomic_write_json
from ..profile.collect import LatencyDataset, collect, design_subnets, holdout_subnets
from ..profile.protocol import Protocol
from ..space import SearchSpace
from .adapt import check_curve
from .directory import (
    CHECK_FILE,
    DATASET_FILE,
    FIGURE_FILE,
    PREDICTOR_FILE,
    RATIO_STATISTICS,
    Progress,
    drift_warnings,
    load_supernet,
    measuring_environment,
    own_dir,
    predictor_target,
)
from .predictor import LatencyPredictor, MacsBaseline, accuracy_report, cross_validate, fit
from .repeats import MAX_REPEATS, repeat_truth


def build_predictor(
    run_dir: str | Path,
    target: Any,
    out_dir: str | Path,
    *,
    n: int = 300,
    holdout: int = 100,
    seed: int = 0,
    holdout_seed: int = 1,
    statistic: Optional[str] = None,
    protocol: Optional[Protocol] = None,
    rounds: int = 5,
    onnx_dir: Optional[str | Path] = None,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Measure ``n`` designed subnets of the run's space on this machine (resuming any
    earlier measurements in ``out_dir``), fit the predictor to ``statistic`` (default:
    the target's ``predictor_statistic``) and save it with its 5-fold cross-validated
    error, that of a MACs-only fit, and the measured ratios of the other statistics to
    it. Returns the summary.

    ``holdout`` uniform subnets (drawn with ``holdout_seed``, disjoint from the design;
    what ``check_predictor`` evaluates on by default) are measured in the same shuffled,
    interleaved session, never fitted on: measured hours apart, two sets of subnets would
    differ by the machine's drift as much as by anything the predictor could know."""
    from ..targets import load_target

    target = load_target(target) if isinstance(target, (str, Path)) else target
    statistic = statistic or target.measure.predictor_statistic
    if target.backend != "onnxruntime":
        raise OfaError(f"predictor build measures ONNX Runtime on this machine; target {target.name} runs "
                       f"{target.backend} (measure engines on the device and fit there)")
    if n < 10:
        raise OfaError(f"--n {n} is too few to fit a predictor (at least 10)")
    out_dir = own_dir(out_dir, inputs=[("run directory", run_dir), ("--onnx-dir", onnx_dir)])
    supernet = load_supernet(run_dir)
    space: SearchSpace = supernet.space
    protocol = protocol or Protocol.from_target(target)
    dataset = LatencyDataset(out_dir / DATASET_FILE, space)
    design = design_subnets(space, n, seed)
    held = holdout_subnets(space, holdout, holdout_seed, exclude=design) if holdout else []
    started = time.perf_counter()
    measured = collect(supernet, [("train", s) for s in design] + [("holdout", s) for s in held], target, dataset,
                       protocol=protocol, rounds=rounds, onnx_dir=Path(onnx_dir) if onnx_dir else None, seed=seed,
                       progress=progress)
    measure_s = time.perf_counter() - started
    wanted = {str(s) for s in design}
    subs, lat = dataset.split("train", statistic)
    keep = [i for i, s in enumerate(subs) if str(s) in wanted]
    subs, lat = [subs[i] for i in keep], [lat[i] for i in keep]
    validation = cross_validate(space, subs, lat, target=target.name, statistic=statistic, seed=seed)
    macs_pred = np.zeros(len(lat))
    order = np.random.default_rng(seed).permutation(len(lat))
    for f in range(5):
        test = order[f::5]
        train = np.setdiff1d(order, test)
        base = MacsBaseline(space, [subs[i] for i in train], [lat[i] for i in train])
        macs_pred[test] = base.predict([subs[i] for i in test])
    macs_validation = accuracy_report(lat, macs_pred)
    rows = [r for r in dataset.rows.values() if r["split"] == "train" and r["key"] in wanted]
    unstable = sum(1 for r in rows if r["unstable"])
    ratios = {name: float(np.median([r["latency_ms"][name] / r["latency_ms"][statistic] for r in rows]))
              for name in RATIO_STATISTICS if all(name in r["latency_ms"] for r in rows)}
    model = fit(space, subs, lat, target=target.name, statistic=statistic, statistic_ratios=ratios, info={
        "validation": {"method": "5-fold cross-validation on the measured design", **validation},
        "macs_validation": {"method": "5-fold, latency = a * MACs + b", **macs_validation},
        "design": {"n": len(subs), "seed": seed, "unstable_measurements": unstable},
        "drift": dataset.drift_report(statistic),
        "holdout_measured": {"n": len(held), "seed": holdout_seed},
        "protocol": {**protocol.to_dict(), "rounds": rounds, "interleaved": True},
        "environment": measuring_environment(target),
        "run": str(Path(run_dir).resolve()),
        "target_definition": target.record(),  # `predictor check` measures on it, wherever it came from
    })
    model.save(out_dir / PREDICTOR_FILE)
    return {
        "predictor": str(out_dir / PREDICTOR_FILE),
        "target": target.name,
        "statistic": statistic,
        "form": model.form,
        "table_model": model.info["table_model"],
        "measured_now": measured,
        "measure_seconds": round(measure_s, 1),
        "train_subnets": len(subs),
        "holdout_subnets": len(held),
        "unstable_measurements": unstable,
        "drift": model.info["drift"],
        "warnings": drift_warnings(model.info["drift"]),
        "validation": validation,
        "macs_validation": macs_validation,
    }


def check_predictor(
    predictor_path: str | Path,
    run_dir: str | Path,
    *,
    n: int = 100,
    seed: int = 1,
    protocol: Optional[Protocol] = None,
    rounds: int = 5,
    figure: bool = True,
    onnx_dir: Optional[str | Path] = None,
    progress: Optional[Progress] = None,
    curve: Sequence[int] = (),
    repeats: int = 1,
    target: Any = None,
) -> dict[str, Any]:
    """Report the predictor's and the MACs fit's accuracy on ``n`` held-out uniform
    subnets (drawn with ``seed``, none from the training design), measuring those that
    ``build_predictor`` has not measured already, and the coverage of its 90 % intervals.
    ``repeats`` > 1: each held-out subnet is measured that many times (split "holdout",
    then "holdout-2", ..., each pass in its own chunks and order) and scored against the
    geometric mean; ``"truth"`` says how noisy one measurement was (``repeats.py``).
    Writes ``check.json`` (and ``check.png``) beside the predictor. ``curve`` (sizes, for
    a predictor made by ``predictor adapt``): also the learning curve, measuring the
    selection up to its largest size (``adapt.check_curve``). The target is the one the
    predictor records (``target``, ``--target``, must be it: ``directory.predictor_target``)."""

    if not 1 <= repeats <= MAX_REPEATS:
        raise OfaError(f"--repeats {repeats}: give 1 to {MAX_REPEATS}")
    predictor_path = Path(predictor_path)
    model = LatencyPredictor.load(predictor_path)
    if curve and "transfer" not in model.info:
        raise OfaError(f"--curve needs a predictor made by `ofa-deploy predictor adapt`; {predictor_path} was not")
    out_dir = predictor_path.parent
    target = predictor_target(model, predictor_path, target)
    supernet = load_supernet(run_dir)
    space: SearchSpace = supernet.space
    if space.to_dict() != model.space.to_dict():
        raise OfaError(f"run {run_dir} has another search space than the predictor {predictor_path}")
    if protocol is None:  # measure held-out subnets exactly as the training ones were
        saved = model.info.get("protocol", {})
        fields = {k: v for k, v in saved.items() if k in Protocol.__dataclass_fields__}
        protocol = Protocol(**fields) if fields else Protocol.from_target(target)
    dataset = LatencyDataset(out_dir / DATASET_FILE, space)
    # an adapted predictor's measurements are its "adapt" split
    train_subs, train_lat = dataset.split("adapt" if "transfer" in model.info else "train", model.statistic)
    if len(train_subs) < 2:
        raise OfaError(f"{out_dir / DATASET_FILE} has no training measurements for the MACs baseline")
    held = holdout_subnets(space, n, seed, exclude=train_subs)
    splits = ["holdout"] + [f"holdout-{r}" for r in range(2, repeats + 1)]
    measured_now = 0
    # pass after pass, so a subnet's repeats never share a chunk; each pass in its own order (the
    # first in the order a single check uses, so --repeats 1 measures exactly as before)
    for r, split in enumerate(splits):
        measured_now += collect(supernet, [(split, s) for s in held], target, dataset, protocol=protocol,
                                rounds=rounds, onnx_dir=Path(onnx_dir) if onnx_dir else None, seed=seed + 7919 * r,
                                progress=progress)
    found = [dict(zip(map(str, subs), zip(subs, lat))) for subs, lat in
             (dataset.split(split, model.statistic) for split in splits)]
    keys = [str(s) for s in held if all(str(s) in f for f in found)]
    subs = [found[0][k][0] for k in keys]
    truth = None
    if repeats > 1:
        measured, truth = repeat_truth(np.array([[f[k][1] for k in keys] for f in found]))
    else:
        measured = np.array([found[0][k][1] for k in keys])
    wanted = set(keys)
    predicted = model.predict(subs)
    many = holdout_subnets(space, 5000, seed + 10_000)
    t1 = time.perf_counter()
    model.predict(many)
    rate = len(many) / (time.perf_counter() - t1)
    macs_model = MacsBaseline(space, train_subs, train_lat)
    macs_pred = macs_model.predict(subs)
    from scipy.stats import spearmanr

    from ..cost import macs as count_macs

    mm = np.array([count_macs(space, s) for s in subs], dtype=float)
    report: dict[str, Any] = {
        "predictor": str(predictor_path),
        "target": model.target,
        "statistic": model.statistic,
        "holdout": {"n": len(subs), "seed": seed, "sampling": "uniform, disjoint from the training design",
                    "measured_with_training_set": measured_now == 0, "repeats": repeats},
        **({"truth": truth} if truth else {}),
        "predictor_accuracy": accuracy_report(measured, predicted),
        "macs_linear_fit": accuracy_report(measured, macs_pred),
        **({"interval_90": _coverage(model, subs, measured)} if model.uncertainty is not None else {}),
        "macs_spearman": float(spearmanr(mm, measured).statistic),
        "predictions_per_second": round(rate),
        "unstable_measurements": sum(1 for r in dataset.rows.values()
                                     if r["split"] in splits and r["key"] in wanted and r["unstable"]),
        "drift": dataset.drift_report(model.statistic),
        "environment": measuring_environment(target),
    }
    report["warnings"] = drift_warnings(report["drift"])
    atomic_write_json(out_dir / CHECK_FILE, report)
    if figure:
        report["figure"] = str(plot_check(out_dir / FIGURE_FILE, measured, predicted, macs_pred, report))
        atomic_write_json(out_dir / CHECK_FILE, report)
    if curve:
        report["curve"] = check_curve(model, out_dir, supernet, subs, measured, curve, protocol=protocol,
                                      rounds=rounds, onnx_dir=onnx_dir, progress=progress, figure=figure,
                                      target=target)
        atomic_write_json(out_dir / CHECK_FILE, report)
    return report


def _coverage(model: LatencyPredictor, subs: list, measured: np.ndarray) -> dict[str, Any]:
    """How often the stated central 90 % interval holds the measurement."""
    _, lo, hi = model.interval(subs, 0.9)
    assert model.uncertainty is not None  # interval raised otherwise
    return {"coverage": float(np.mean((measured >= lo) & (measured <= hi))),
            "mean_halfwidth_rel": float(np.mean((hi - lo) / (hi + lo))),
            "uncertainty": model.uncertainty.kind, "source": model.uncertainty.source}


def plot_check(path: Path, measured: np.ndarray, predicted: np.ndarray, macs_pred: np.ndarray,
               report: dict[str, Any]) -> Path:
    """Two panels: predictor vs measured and MACs fit vs measured, +-10 % band drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    lo, hi = float(min(measured.min(), predicted.min(), macs_pred.min())), float(max(measured.max(),
                                                                                   predicted.max(), macs_pred.max()))
    line = np.linspace(lo * 0.95, hi * 1.05, 50)
    for ax, pred, name, key in ((axes[0], predicted, "latency predictor", "predictor_accuracy"),
                                (axes[1], macs_pred, "linear fit on MACs", "macs_linear_fit")):
        acc = report[key]
        ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
        ax.plot(line, line, color="0.5", lw=1)
        ax.scatter(measured, pred, s=12, alpha=0.8)
        ax.set_title(f"{name}: {acc['within_10pct']:.0%} within ±10 %, "
                     f"{acc['within_5pct']:.0%} within ±5 %\nSpearman {acc['spearman']:.3f}", fontsize=10)
        ax.set_xlabel(f"measured {report['statistic']} latency (ms)")
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("predicted latency (ms)")
    fig.suptitle(f"target {report['target']}: {report['holdout']['n']} held-out subnets", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path
