"""``ofa-deploy eval RUN``: population accuracy per MFLOPs bucket (thin layer over
``ofa_deploy.evaluate.evaluate_run``)."""

from __future__ import annotations

import click

from .common import MAX_COUNT, SEED, emit_json, limit_float, stream_options


def parse_buckets(ctx, param, value: str) -> list[float]:
    from ..errors import OfaError
    from ..validate import LIMITS, finite

    parts = [v for v in value.split(",") if v.strip()]
    if not parts or len(parts) > 100:
        raise click.BadParameter(f"expected 1 to 100 comma-separated MFLOPs, e.g. 4,6,8,10,12,14; got {value[:80]!r}")
    try:
        return [finite(v, f"bucket {v.strip()[:20]!r}", lo=0.0, hi=LIMITS["mflops"][1], lo_open=True) for v in parts]
    except OfaError as exc:
        raise click.BadParameter(f"{exc} (expected comma-separated MFLOPs, e.g. 4,6,8,10,12,14)") from None


@click.command("eval")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--buckets", default="4,6,8,10,12,14", show_default=True, callback=parse_buckets,
              help="MFLOPs bucket centres (the paper's by default).")
@click.option("--per-bucket", type=click.IntRange(1, MAX_COUNT), default=100, show_default=True,
              help="Subnets sampled per bucket (paper: 100).")
@click.option("--tolerance", type=limit_float("tolerance"), default=0.5, show_default=True,
              help="A subnet belongs to a bucket when its MFLOPs are within this of the centre.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Same seed, same subnets (and test subset): compare runs with one seed.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--subnet", default=None, help="Evaluate one subnet: smallest, middle, largest or a SPEC.")
@click.option("--calib-n", type=click.IntRange(1, MAX_COUNT), default=2000, show_default=True,
              help="Training images used to recompute each subnet's BN statistics.")
@click.option("--batch-size", type=click.IntRange(1, MAX_COUNT), default=1000, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (default: the one the run was trained with); for an imported run an "
                   "ImageNet-style DIR/train/<class>/*, DIR/val/<class>/*, read streaming.")
@click.option("--test-subset", type=click.IntRange(1, MAX_COUNT), default=None,
              help="Measure on N test images (default: the run's --test-subset, else all).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["auto", "final", "last"]), default="auto", show_default=True)
@click.option("--name", default=None,
              help="Result name: eval/NAME.json [default: SPLIT-sSEED-nPER_BUCKET, plus any non-default "
                   "buckets, tolerance, calib-n and test subset].")
@click.option("--reuse", is_flag=True, help="Return an existing result with the same parameters instead.")
@click.option("--overwrite", is_flag=True, help="Replace eval/NAME.json even if it holds a different evaluation.")
@click.option("--resolution", callback=lambda ctx, param, value: _resolution(value), default=None,
              help="Input size to evaluate at, one the run was trained at (--resolutions), or 'all' for each "
                   "trained one (each its own eval/NAME-rR.json); BN is recalibrated at that size "
                   "[default: the run's image size].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@stream_options
def command(run_dir, buckets, per_bucket, tolerance, seed, split, subnet, calib_n, batch_size, data_dir,
            test_subset, download, device, checkpoint, name, reuse, overwrite, quiet, as_json,
            resolution=None, workers=None, bn_variance=None) -> None:
    """Sample subnets per MFLOPs bucket (same seed, same subnets), recalibrate each one's BN
    on training images, and measure it; writes eval/NAME.json and .csv in the run."""
    from ..evaluate.resolution import ALL
    from ..evaluate.runs import evaluate_resolutions, evaluate_run

    options = dict(buckets=buckets, per_bucket=per_bucket, tolerance=tolerance, seed=seed, split=split,
                   subnet=subnet, calib_n=calib_n, batch_size=batch_size, data_dir=data_dir, test_subset=test_subset,
                   download=download, device=device, checkpoint=checkpoint, reuse=reuse, overwrite=overwrite,
                   progress=not quiet, workers=workers, bn_variance=bn_variance)
    if resolution == ALL:
        done = evaluate_resolutions(run_dir, ALL, name=name, **options)
        if as_json:
            emit_json([result for _, result in done])
            return
        for path, result in done:
            _print(path, result)
        return
    path, result = evaluate_run(run_dir, name=name, resolution=resolution, **options)
    if as_json:
        emit_json(result)
        return
    _print(path, result)


def _resolution(value):
    from ..errors import OfaError
    from ..evaluate.resolution import parse_resolution_choice

    try:
        return parse_resolution_choice(value)
    except OfaError as exc:
        raise click.BadParameter(str(exc).replace("--resolution ", "", 1)) from None


def _print(path, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    at = f" at {result['resolution']}x{result['resolution']}" if "resolution" in result else ""
    table = Table(title=f"{result['run']} ({result['dataset']}, {result['method']}) - {result['split']} accuracy{at}")
    for col in ("MFLOPs", "n", "mean %", "std", "min %", "max %", "spread"):
        table.add_column(col, justify="right")
    for b in result["buckets"]:
        if not b["n"]:
            table.add_row(f"{b['mflops']:g}", "0", "-", "-", "-", "-", "-")
            continue
        table.add_row(f"{b['mflops']:g}", str(b["n"]), f"{100 * b['mean']:.2f}", f"{100 * b['std']:.2f}",
                      f"{100 * b['min']:.2f}", f"{100 * b['max']:.2f}", f"{100 * (b['max'] - b['min']):.2f}")
    console = Console()
    console.print(table)
    rate = result.get("subnets_per_minute")
    console.print(f"{len(result['subnets'])} subnets on {result['test_images']} images in "
                  f"{result['wall_time_s']:.1f}s ({rate} subnets/min) -> {path}", highlight=False)
