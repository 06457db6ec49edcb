"""``ofa-deploy predictor build|check|predict``: a latency predictor per target."""

from __future__ import annotations

from pathlib import Path

import click

from ..targets import PREDICTOR_STATISTICS
from .common import MAX_COUNT, SEED, emit_json, limit_float, limit_int


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
    The held-out subnets `predictor check` uses are measured in the same session.
    """
    from ..profile import Protocol
    from ..profile.predictor_build import build_predictor
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
    if as_json:
        emit_json(summary)
        return
    v, m = summary["validation"], summary["macs_validation"]
    click.echo(f"predictor: {summary['predictor']} ({summary['form']} model of the {summary['statistic']} latency, "
               f"{summary['train_subnets']} subnets, "
               f"{summary['measured_now']} measured now, {summary['unstable_measurements']} flagged unstable)")
    click.echo(f"5-fold validation: {v['within_10pct']:.1%} within ±10%, {v['within_5pct']:.1%} within ±5%, "
               f"Spearman {v['spearman']:.3f}")
    click.echo(f"MACs linear fit:   {m['within_10pct']:.1%} within ±10%, {m['within_5pct']:.1%} within ±5%, "
               f"Spearman {m['spearman']:.3f}")


@command.command("check")
@click.option("--predictor", "predictor_path", required=True, type=click.Path(path_type=Path),
              help="predictor.json (or its directory).")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Training run directory.")
@click.option("--n", "count", type=click.IntRange(3, MAX_COUNT), default=100, show_default=True,
              help="Held-out subnets to measure.")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the held-out draw (build's --holdout-seed: reuse what build measured).")
@_protocol_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(predictor_path, run_dir, count, seed, onnx_dir, rounds, min_time_s, min_iterations, warmup_s,
          as_json) -> None:
    """Measure held-out subnets and report the predictor's accuracy next to MACs'.

    Writes check.json and check.png beside the predictor. Without protocol flags the
    held-out subnets are measured exactly as the training ones were.
    """
    from ..profile import Protocol
    from ..profile.predictor import LatencyPredictor
    from ..profile.predictor_build import PREDICTOR_FILE, check_predictor
    from ..targets import load_target

    if predictor_path.is_dir():
        predictor_path = predictor_path / PREDICTOR_FILE
    protocol = None
    if any(v is not None for v in (min_time_s, min_iterations, warmup_s)):
        tgt = load_target(LatencyPredictor.load(predictor_path).target)
        protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s)
    with _progress() as bar:
        task = bar.add_task("measuring", total=count)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        report = check_predictor(predictor_path, run_dir, n=count, seed=seed, protocol=protocol, rounds=rounds,
                                 onnx_dir=onnx_dir, progress=progress)
    if as_json:
        emit_json(report)
        return
    p, m = report["predictor_accuracy"], report["macs_linear_fit"]
    click.echo(f"{report['holdout']['n']} held-out subnets on {report['target']} ({report['statistic']}):")
    click.echo(f"  predictor:       {p['within_10pct']:.1%} within ±10%, {p['within_5pct']:.1%} within ±5%, "
               f"Spearman {p['spearman']:.3f}, mean |error| {p['mean_abs_rel_error']:.1%}")
    click.echo(f"  MACs linear fit: {m['within_10pct']:.1%} within ±10%, {m['within_5pct']:.1%} within ±5%, "
               f"Spearman {m['spearman']:.3f}, mean |error| {m['mean_abs_rel_error']:.1%}")
    click.echo(f"  {report['predictions_per_second']:,} predictions per second; figure {report.get('figure')}")


@command.command("predict")
@click.option("--predictor", "predictor_path", required=True, type=click.Path(path_type=Path),
              help="predictor.json (or its directory).")
@click.argument("specs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(predictor_path, specs, as_json) -> None:
    """Predicted latency of each SPEC (subnet text form, JSON object or JSON file)."""
    from ..cost import macs
    from ..profile.predictor import LatencyPredictor
    from ..profile.predictor_build import PREDICTOR_FILE
    from .common import load_subnet

    if predictor_path.is_dir():
        predictor_path = predictor_path / PREDICTOR_FILE
    model = LatencyPredictor.load(predictor_path)
    subnets = [load_subnet(s, model.space) for s in specs]
    values = model.predict(subnets)
    rows = [{"subnet": s.to_dict(), "text": str(s), "macs": macs(model.space, s),
             f"predicted_{model.statistic}_ms": float(v)} for s, v in zip(subnets, values)]
    if as_json:
        emit_json({"target": model.target, "statistic": model.statistic, "predictions": rows})
        return
    for row, v in zip(rows, values):
        click.echo(f"{row['text']}  {row['macs'] / 1e6:.2f} MFLOPs  {model.statistic} {v:.4f} ms ({model.target})")
