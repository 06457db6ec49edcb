"""``ofa-deploy search``: choose subnets for one or more targets with an accuracy predictor and
a multi-objective evolutionary search, every choice on validation data."""

from __future__ import annotations

from pathlib import Path

import click

from .common import MAX_COUNT, SEED, emit_json


@click.command("search")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True,
              help="Target name or profile .toml to search for (repeatable; one accuracy model serves all).")
@click.option("--evaluations", type=int, required=True,
              help="Subnets whose accuracy is measured for real (BN recalibration + validation).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output directory: history.json and front.png.")
@click.option("--predictor", "predictors", type=click.Path(path_type=Path), multiple=True,
              help="Latency predictor of one of the targets (repeatable) [default: a target without one is "
                   "ranked by MACs].")
@click.option("--max-latency-ms", "max_latency_ms", multiple=True,
              help="Latency budget, X for every target or TARGET=X, held to the predictor's upper bound "
                   "(repeatable: one pick per budget).")
@click.option("--max-mflops", "max_mflops", type=float, multiple=True,
              help="MFLOPs budget for targets ranked by MACs (repeatable).")
@click.option("--confidence", type=float, default=0.9, show_default=True,
              help="Confidence of the latency upper bound budgets are held to.")
@click.option("--accuracy-model", type=click.Choice(["ridge", "mlp"]), default="ridge", show_default=True,
              help="Accuracy predictor: Bayesian ridge or an ensemble of small MLPs on one-hot block choices.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the search (and of test halves).")
@click.option("--calib-images", type=click.IntRange(1, MAX_COUNT), default=2000, show_default=True,
              help="Training images for BN recalibration.")
@click.option("--test-images", type=click.IntRange(2, MAX_COUNT), default=None,
              help="A run without a validation hold-out chooses on half of a seeded subset of this many test "
                   "images [default: all].")
@click.option("--generations", type=click.IntRange(1, 10_000), default=60, show_default=True,
              help="NSGA-II generations per target per round (population 100).")
@click.option("--data-dir", type=click.Path(path_type=str), default=None, help="Dataset folder [default: the run's].")
@click.option("--overwrite", is_flag=True, help="Replace an earlier search directory at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
def command(run_dir, targets, evaluations, out, predictors, max_latency_ms, max_mflops, confidence, accuracy_model,
            seed, calib_images, test_images, generations, data_dir, overwrite, as_json) -> None:
    """Search RUN_DIR's subnets for every --target at once: real accuracy on validation for
    --evaluations subnets, an accuracy predictor refitted as they come in, NSGA-II (pymoo) over
    predicted accuracy vs each target's latency (under --max-mflops, the predictor's exact
    optimum); one pick per budget: the evaluated subnet of best fitted accuracy.
    Interrupted, the same command continues from its journal of evaluations (beside --out).
    Started by torchrun, the ranks share each round's evaluations (same picks as one process;
    docs/search.md)."""
    from ..errors import OfaError
    from ..search.run import search_run

    if evaluations < 1:
        raise OfaError(f"--evaluations must be at least 1 (got {evaluations})")
    summary = search_run(run_dir, list(targets), out, evaluations=evaluations, predictors=predictors,
                         max_latency_ms=max_latency_ms, max_mflops=max_mflops, confidence=confidence, seed=seed,
                         calib_n=calib_images, data_dir=data_dir, model=accuracy_model, test_images=test_images,
                         overwrite=overwrite, generations=generations)
    if summary is None:
        return  # a rank other than 0 under torchrun: rank 0 reports (and writes) for the group
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{out}: {summary['evaluations']} subnets evaluated on {summary['chosen_on']}, "
               f"{summary['candidates_scored']} candidates scored by the predictors, {summary['seconds']:.1f} s")
    for name, obj in summary["objectives"].items():
        for pick in obj["picks"]:
            what = (f"{pick['subnet']}  acc {pick['accuracy']:.4f}  {pick['cost']:.4g} {obj['unit']}"
                    if pick["subnet"] else "no evaluated subnet within it")
            click.echo(f"  {name} <= {pick['budget']:g} {obj['unit']}: {what}")
        if not obj["picks"]:
            click.echo(f"  {name}: front of {len(obj['front'])} evaluated subnets (history.json)")
