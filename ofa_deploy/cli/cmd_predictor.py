"""``ofa-deploy predictor build|check|predict``: a latency predictor per target."""

from __future__ import annotations

from pathlib import Path

import click

from ..targets import PREDICTOR_STATISTICS
from .common import MAX_COUNT, SEED, echo_warnings, emit_json, limit_float, limit_int


@click.group("predictor")
def command() -> None:
    """Fit, check and query a per-target latency predictor (an OFA-keyed per-block table fitted to measured subnets)."""


def _protocol_options(func):
    func = click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Keep the exported ONNX files here and reuse them [default: temporary].")(func)
    func = click.option("--rounds", type=click.IntRange(1, MAX_COUNT), default=5, show_default=True,
                        help="Interleaved measuring rounds per subnet.")(func)
    func = click.option("--min-time-s", type=limit_float("min_time_s"), default=None,
                        help="Measuring seconds per subnet, over all rounds [default: the target's].")(func)
    func = click.option("--min-iterations", type=limit_int("min_iterations"), default=None,
                        help="Timed iterations per subnet, over all rounds [default: the target's].")(func)
    func = click.option("--warmup-s", type=limit_float("warmup_s"), default=None,
                        help="Warm-up seconds per subnet, over all rounds [default: the target's].")(func)
    return func


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


@command.command("build")
@click.option("--target", required=True, help="Target name or profile .toml (an onnxruntime target).")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Training run directory.")
@click.option("--n", "count", type=click.IntRange(10, MAX_COUNT), default=300, show_default=True,
              help="Designed subnets to measure.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Predictor directory [default: predictors/<target>].")
@click.option("--statistic", type=click.Choice(PREDICTOR_STATISTICS), default=None,
              help="Which latency statistic to fit [default: the target's predictor_statistic].")
@click.option("--holdout", type=click.IntRange(0, MAX_COUNT), default=100, show_default=True,
              help="Held-out subnets measured alongside (never fitted on) for `predictor check`.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the designed set.")
@click.option("--holdout-seed", type=SEED, default=1, show_default=True, help="Seed of the held-out draw.")
@_protocol_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def build(target, run_dir, count, out, statistic, holdout, seed, holdout_seed, onnx_dir, rounds, min_time_s,
          min_iterations, warmup_s, as_json) -> None:
    """Measure a designed set of subnets of RUN on this machine and fit the predictor.

    Measurements are appended to latency.jsonl as they finish, so an interrupted build
    resumes; the predictor is saved with its cross-validated error and a MACs-only fit's.
    The held-out subnets `predictor check` uses are measured in the same session. Every
    measuring chunk also re-measures two anchor subnets, and each chunk's drift (the machine
    runs 5-20 % apart between chunks), shrunk by what the anchors' own noise explains, is
    divided out before fitting.
    """
    from ..predictor.build import build_predictor
    from ..profile import Protocol
    from ..targets import load_target

    tgt = load_target(target)
    out = out or Path("predictors") / tgt.name
    protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s)
    with _progress() as bar:
        task = bar.add_task("measuring", total=count + holdout)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        summary = build_predictor(run_dir, tgt, out, n=count, holdout=holdout, seed=seed, holdout_seed=holdout_seed,
                                  statistic=statistic, protocol=protocol, rounds=rounds, onnx_dir=onnx_dir,
                                  progress=progress)
    echo_warnings(summary)
    if as_json:
        emit_json(summary)
        return
    v, m = summary["validation"], summary["macs_validation"]
    click.echo(f"predictor: {summary['predictor']} ({summary['form']} model, {summary['table_model']} table, of the "
               f"{summary['statistic']} latency, {summary['train_subnets']} subnets, "
               f"{summary['measured_now']} measured now, {summary['unstable_measurements']} flagged unstable)")
    click.echo(f"5-fold validation: {v['within_10pct']:.1%} within ±10%, {v['within_5pct']:.1%} within ±5%, "
               f"Spearman {v['spearman']:.3f}")
    click.echo(f"MACs linear fit:   {m['within_10pct']:.1%} within ±10%, {m['within_5pct']:.1%} within ±5%, "
               f"Spearman {m['spearman']:.3f}")
    factors = list(summary["drift"]["factors"].values())
    if len(factors) > 1:
        click.echo(f"drift between the {len(factors)} measuring chunks, seen by the anchor subnets and divided out: "
                   f"{min(factors):.3f}-{max(factors):.3f}x")


@command.command("check")
@click.option("--predictor", "predictor_path", required=True, type=click.Path(path_type=Path),
              help="predictor.json (or its directory).")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Training run directory.")
@click.option("--n", "count", type=click.IntRange(3, MAX_COUNT), default=100, show_default=True,
              help="Held-out subnets to measure.")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the held-out draw (build's --holdout-seed: reuse what build measured).")
# 5 = predictor.repeats.MAX_REPEATS, not imported: that would load numpy with the CLI (test_repeats keeps them equal)
@click.option("--repeats", type=click.IntRange(1, 5), default=1, show_default=True,
              help="Measure each held-out subnet this many times (each pass in its own chunks and order) and score "
                   "against the geometric mean; reports how noisy one measurement is and the best any predictor "
                   "could score against the mean.")
@click.option("--curve", default="", metavar="SIZES",
              help="Adapted predictors: also the learning curve after these many measured subnets, e.g. 5,10,20,50 "
                   "(measures the selection up to the largest); writes curve.json and curve.png.")
@click.option("--target", default=None,
              help="The predictor's target, name or profile .toml [default: the definition the predictor records]; "
                   "needed only for a predictor of a custom target made before predictors recorded it.")
@_protocol_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(predictor_path, run_dir, count, seed, repeats, curve, target, onnx_dir, rounds, min_time_s, min_iterations,
          warmup_s, as_json) -> None:
    """Measure held-out subnets and report the predictor's accuracy next to MACs'.

    Writes check.json and check.png beside the predictor. Without protocol flags the
    held-out subnets are measured exactly as the training ones were.
    """
    from ..predictor.build import check_predictor
    from ..predictor.directory import predictor_file, predictor_target
    from ..predictor.predictor import LatencyPredictor
    from ..profile import Protocol

    predictor_path = predictor_file(predictor_path)
    sizes = _sizes(curve)
    protocol = None
    tgt = predictor_target(LatencyPredictor.load(predictor_path), predictor_path, target)  # refused before measuring
    if any(v is not None for v in (min_time_s, min_iterations, warmup_s)):
        protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s)
    with _progress() as bar:
        task = bar.add_task("measuring", total=count)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        report = check_predictor(predictor_path, run_dir, n=count, seed=seed, protocol=protocol, rounds=rounds,
                                 onnx_dir=onnx_dir, progress=progress, curve=sizes, repeats=repeats, target=tgt)
    echo_warnings(report)
    if as_json:
        emit_json(report)
        return
    p, m = report["predictor_accuracy"], report["macs_linear_fit"]
    click.echo(f"{report['holdout']['n']} held-out subnets on {report['target']} ({report['statistic']}):")
    click.echo(f"  predictor:       {p['within_10pct']:.1%} within ±10%, {p['within_5pct']:.1%} within ±5%, "
               f"Spearman {p['spearman']:.3f}, mean |error| {p['mean_abs_rel_error']:.1%}")
    click.echo(f"  MACs linear fit: {m['within_10pct']:.1%} within ±10%, {m['within_5pct']:.1%} within ±5%, "
               f"Spearman {m['spearman']:.3f}, mean |error| {m['mean_abs_rel_error']:.1%}")
    if "interval_90" in report:
        click.echo(f"  90 % intervals hold {report['interval_90']['coverage']:.1%} of the measurements "
                   f"({report['interval_90']['uncertainty']})")
    if "truth" in report:
        t = report["truth"]
        click.echo(
            f"  the measurements: one carries {t['noise_sd']:.1%} noise (sd between the {t['repeats']} repeats); "
            f"against their mean a perfect predictor would score {t['ceiling_within_10pct']:.0%} within ±10%, "
            f"{t['ceiling_within_5pct']:.0%} within ±5%"
            + (f", Spearman {t['ceiling_spearman']:.3f}" if t["ceiling_spearman"] is not None else "")
        )
    click.echo(f"  {report['predictions_per_second']:,} predictions per second; figure {report.get('figure')}")
    for point in (report.get("curve") or {}).get("points", []):
        a, sc, mc = point["adapt"], point.get("scratch"), point.get("macs")
        click.echo(f"  after {point['n']:>3}: adapt {a['within_10pct']:.0%} within ±10%, {a['within_5pct']:.0%} "
                   f"within ±5%, Spearman {a['spearman']:.3f}, 90% coverage {a['coverage_90']:.0%}"
                   + (f"; scratch {sc['within_10pct']:.0%}" if sc else "; scratch -")
                   + (f"; MACs {mc['within_10pct']:.0%}" if mc else ""))


def _sizes(text: str) -> tuple[int, ...]:
    from ..errors import OfaError

    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise OfaError(f"--curve {text!r}: give comma-separated counts, e.g. 5,10,20,50") from None
    if any(n < 1 or n > MAX_COUNT for n in sizes):
        raise OfaError(f"--curve {text!r}: counts must be between 1 and {MAX_COUNT}")
    return sizes


@command.command("adapt")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="The source predictor (predictor.json or its directory), fitted on another target.")
@click.option("--target", required=True, help="The new target (name or profile .toml).")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Training run directory.")
@click.option("--budget", type=int, default=20, show_default=True,
              help="At most this many subnets are measured on the new target.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The adapted predictor's directory.")
@click.option("--target-error", type=float, default=None,
              help="Stop measuring once the estimated mean relative error is below this (0.03 = 3 %) and so "
                   "was the previous fit's error on the subnets measured since (never after the first step).")
@click.option("--step", type=click.IntRange(1, MAX_COUNT), default=5, show_default=True,
              help="Subnets measured between refits (each refit may stop early).")
@click.option("--statistic", type=click.Choice(PREDICTOR_STATISTICS), default=None,
              help="Which latency statistic to fit [default: the target's predictor_statistic].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the candidates and population.")
@click.option("--no-measure", is_flag=True,
              help="Export the chosen subnets to OUT/to-measure for profiling on the device; fit nothing.")
@click.option("--import", "imports", multiple=True, type=click.Path(path_type=Path),
              help="`profile --json` results of the exported subnets, measured on the device (repeatable).")
@_protocol_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def adapt(source, target, run_dir, budget, out, target_error, step, statistic, seed, no_measure, imports, onnx_dir,
          rounds, min_time_s, min_iterations, warmup_s, as_json) -> None:
    """Fit a predictor for TARGET from a source predictor and at most --budget measured subnets.

    Which subnets to measure is chosen before measuring: those that most reduce the
    adapted model's predictive variance over a population sample (deterministic by
    --seed). The model is the source with a device scale and per-feature corrections
    shrunk toward it (Bayesian linear regression); every prediction carries an interval.
    Progress goes to stderr; measurements are appended to OUT/latency.jsonl, so an
    interrupted run resumes.
    """
    from ..predictor.adapt import adapt_predictor
    from ..profile import Protocol
    from ..targets import load_target

    tgt = load_target(target)
    protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s)
    summary = adapt_predictor(source, run_dir, tgt, out, budget=budget, target_error=target_error, seed=seed,
                              step=step, statistic=statistic, protocol=protocol, rounds=rounds, onnx_dir=onnx_dir,
                              measure=not no_measure, imports=imports,
                              say=lambda message: click.echo(message, err=True))
    echo_warnings(summary)
    if as_json:
        emit_json(summary)
        return
    if "to_measure" in summary:
        click.echo(f"profile these on the device in this order (`ofa-deploy build-engine DIR` where needed, then "
                   f"`ofa-deploy profile DIR --json > FILE`) and rerun with --import FILE for each result; the "
                   f"{len(summary['anchors'])} anchor subnets come again after every {step} so that the import can "
                   f"divide out the device's drift:")
        for i, path in enumerate(summary["order"], 1):
            click.echo(f"  {i:>3}  {path}")
        return
    click.echo(f"predictor: {summary['predictor']} ({summary['target']} from {summary['source']}, "
               f"{summary['measured']} measured subnets, {summary['measured_now']} now; stopped by "
               f"{summary['stopped']})")
    checked = summary.get("checked_error")
    also = f"; the previous fit's on the last subnets measured {checked:.1%}" if checked is not None else ""
    click.echo(f"estimated mean error {summary['estimated_error']:.1%}{also}, "
               f"device scale {summary['device_scale']:.3f}")


@command.command("predict")
@click.option("--predictor", "predictor_path", required=True, type=click.Path(path_type=Path),
              help="predictor.json (or its directory).")
@click.argument("specs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(predictor_path, specs, as_json) -> None:
    """Predicted latency of each SPEC (subnet text form, JSON object or JSON file)."""
    from ..cost import macs
    from ..predictor.directory import load_predictor
    from ..specs import load_subnet

    model = load_predictor(predictor_path)
    subnets = [load_subnet(s, model.space) for s in specs]
    values = model.predict(subnets)
    rows = [{"subnet": s.to_dict(), "text": str(s), "macs": macs(model.space, s),
             f"predicted_{model.statistic}_ms": float(v)} for s, v in zip(subnets, values)]
    bounds = ""
    if model.uncertainty is not None:  # every prediction with its relative standard error and 90 % interval
        _, sd = model.predict_distribution(subnets)
        _, lo, hi = model.interval(subnets, 0.9)
        for row, e, a, b in zip(rows, sd, lo, hi):
            row.update(relative_se=float(e), interval_90_ms=[float(a), float(b)])
    if as_json:
        emit_json({"target": model.target, "statistic": model.statistic,
                   "uncertainty": model.uncertainty.kind if model.uncertainty else None, "predictions": rows})
        return
    for row, v in zip(rows, values):
        if "interval_90_ms" in row:
            bounds = f" (90 % interval {row['interval_90_ms'][0]:.4f}-{row['interval_90_ms'][1]:.4f})"
        click.echo(f"{row['text']}  {row['macs'] / 1e6:.2f} MFLOPs  {model.statistic} {v:.4f} ms{bounds} "
                   f"({model.target})")
