"""``ofa-deploy analyze interference|bias RUN``: the two quantities the paper argues about,
measured (thin layer over ``ofa_deploy.analyze``)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import MAX_COUNT, SEED, emit_json, limit_float

ANALYSIS_DIR = "analysis"


@click.group("analyze")
def command() -> None:
    """Measure interference between subnets and the sampling bias of a training run."""


def _fmt(x, pct: bool = False, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:+.{digits}f}" if isinstance(x, float) else str(x)


@command.command("interference")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--pairs", type=click.IntRange(0, MAX_COUNT), default=8, show_default=True,
              help="Uniformly drawn subnet pairs (after the --pair ones).")
@click.option("--pair", "pair_specs", multiple=True, default=("smallest,largest",), show_default=True,
              help="A named pair A,B (smallest, middle, largest or specs); repeatable.")
@click.option("--batch-size", type=click.IntRange(2, MAX_COUNT), default=128, show_default=True,
              help="Training images the gradients and loss changes are measured on.")
@click.option("--lr", type=limit_float("lr", lo_open=True), default=None,
              help="Step size for the loss-change probe (default: the run's learning rate).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--checkpoint", type=click.Choice(["auto", "final", "last"]), default="auto", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def interference(run_dir, pairs, pair_specs, batch_size, lr, seed, device, checkpoint, data_dir, as_json) -> None:
    """Cosine similarity of subnet gradients on shared weights (per layer and overall) and the
    loss change one subnet's SGD step causes in another. Writes RUN/analysis/interference-sSEED.json."""
    from ..analyze.interference import analyze_run_interference
    from ..io import atomic_write_json

    result = analyze_run_interference(run_dir, pairs=pairs, batch_size=batch_size, lr=lr, seed=seed,
                                      pair_specs=pair_specs, device=device, checkpoint=checkpoint,
                                      data_dir=data_dir)
    path = atomic_write_json(Path(run_dir) / ANALYSIS_DIR / f"interference-s{seed}.json", result)
    if as_json:
        emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"interference in {result['run']} (lr {result['lr']:g}, batch {result['batch_size']})")
    for col in ("A MFLOPs", "B MFLOPs", "cosine", "shared", "dL_B by A's step", "dL_B by B's step",
                "dL_A by B's step", "dL_A by A's step"):
        table.add_column(col, justify="right")
    for r in result["pairs"]:
        table.add_row(f"{r['a_mflops']:.2f}", f"{r['b_mflops']:.2f}", _fmt(r["cosine"]),
                      _fmt(r["shared_fraction"], pct=True), _fmt(r["delta_loss_b_from_a"], digits=4),
                      _fmt(r["delta_loss_b_from_b"], digits=4), _fmt(r["delta_loss_a_from_b"], digits=4),
                      _fmt(r["delta_loss_a_from_a"], digits=4))
    console = Console()
    console.print(table)
    s = result["summary"]
    layers = "  ".join(f"{k} {v:+.2f}" for k, v in s["per_layer_mean_cosine"].items() if v is not None)
    console.print(f"mean cosine {_fmt(s['mean_cosine'])} (min {_fmt(s['min_cosine'])}, max {_fmt(s['max_cosine'])}); "
                  f"a step on one subnet raised the other's loss in {_fmt(s['harmful_cross_step_fraction'], True)} "
                  f"of cases (mean change {_fmt(s['mean_delta_loss_from_other'], digits=4)} vs "
                  f"{_fmt(s['mean_delta_loss_from_own'], digits=4)} from its own step)", highlight=False)
    console.print(f"per-layer mean cosine: {layers}", highlight=False)
    console.print(f"-> {path}", highlight=False)


@command.command("bias")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--eval", "eval_name", default=None, help="Evaluation to set beside the histogram (default newest).")
@click.option("--samples", type=click.IntRange(100, MAX_COUNT), default=20000, show_default=True,
              help="Uniform draws estimating each bucket's share under unbiased (RSS) sampling.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bias(run_dir, eval_name, samples, as_json) -> None:
    """How unevenly the run trained settings and MFLOPs buckets (from histogram.json), next to
    the per-bucket accuracy of its evaluation. Writes RUN/analysis/bias.json."""
    from ..analyze import analyze_run_bias
    from ..io import atomic_write_json

    result = analyze_run_bias(run_dir, eval_name, samples=samples)
    path = atomic_write_json(Path(run_dir) / ANALYSIS_DIR / "bias.json", result)
    if as_json:
        emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    settings = Table(title=f"setting bias in {result['run']} ({result['label']}, {result['total']:,} subnet-steps)")
    for col in ("setting", "mean TV from uniform", "worst", "worst TV", "never trained"):
        settings.add_column(col, justify="right")
    for key, name in (("ks", "kernel"), ("e", "expand ratio"), ("d", "depth")):
        s = result["settings"][key]
        unit = "stage" if key == "d" else "block"
        settings.add_row(name, _fmt(s["mean_tv_from_uniform"]).lstrip("+"), f"{unit} {s[f'worst_{unit}']}",
                         _fmt(s["worst_tv_from_uniform"]).lstrip("+"), str(s[f"never_trained_{unit}s"]))
    console.print(settings)
    buckets = Table(title="MFLOPs buckets: training share vs accuracy")
    for col in ("MFLOPs", "subnet-steps", "share", "uniform RSS share", "x uniform", "mean acc", "spread"):
        buckets.add_column(col, justify="right")
    for r in result["buckets"]:
        buckets.add_row(f"{r['mflops']:g}", f"{r['subnet_steps']:,}", _fmt(r["share"], True),
                        _fmt(r["uniform_share"], True), f"{r['vs_uniform']:.2f}" if r["vs_uniform"] else "-",
                        _fmt(r.get("mean_accuracy"), True), _fmt(r.get("spread"), True))
    console.print(buckets)
    rho = result["rank_correlation_share_vs_accuracy"]
    console.print(f"{_fmt(result['outside_buckets_share'], True)} of training fell outside the buckets; rank "
                  f"correlation of training share and mean accuracy: {_fmt(rho)}  -> {path}", highlight=False)
