"""``ofa-deploy quickstart``: the whole pipeline on bundled data, in minutes on a CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import SEED, emit_json

# rich wraps at 80 columns where there is no terminal; piped tables get room for their widest row
PIPED_WIDTH = 400


@click.command("quickstart")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart"),
              show_default=True, help="Where the run, exports, catalog and report go (rerun to resume).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--fast", is_flag=True, help="A sub-minute smoke version (tiny training, 1 subnet per bucket).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--quiet", is_flag=True,
              help="No progress display (bars on a terminal, else a line per step on stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def command(out: Path, device: str, fast: bool, seed: int, quiet: bool, as_json: bool) -> None:
    """Train a supernet with RSS on the bundled digits data, evaluate its population per
    MFLOPs bucket, export the best subnet of each bucket to ONNX, measure them on this CPU,
    build a catalog and write a report. Interrupted, run it again: it resumes."""
    from ..quickstart import next_steps, progress_display, quickstart

    # bars on a terminal; without one (a log, a pipe) a line per step, so a minute is not silent
    with progress_display(not quiet and not as_json, terminal=sys.stderr.isatty()) as on_stage:
        summary = quickstart(out, device=device, fast=fast, seed=seed, on_stage=on_stage)
    if as_json:
        emit_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole lines, not wrapped at 80 columns
        console = Console(width=PIPED_WIDTH, soft_wrap=True)
    split = {"val": "validation", "test": "test"}.get(summary.get("buckets_split", "test"), "test")
    buckets = Table("MFLOPs bucket", "subnets", "mean acc", "min", "max",
                    title=f"Population accuracy ({split}: chooses each bucket's model)")
    for b in summary["buckets"]:
        if b["n"]:
            buckets.add_row(f"{b['mflops']:g}", str(b["n"]), f"{100 * b['mean']:.1f}%", f"{100 * b['min']:.1f}%",
                            f"{100 * b['max']:.1f}%")
    console.print(buckets)
    if summary.get("accuracy_note"):
        console.print(summary["accuracy_note"], style="yellow", markup=False, highlight=False)
    front = Table("subnet", "MFLOPs", "accuracy", "p90 ms", title="Pareto front on this CPU (catalog, test accuracy)")
    for e in summary["pareto"]:
        front.add_row(e["subnet"], f"{e['mflops']:.2f}", f"{100 * e['accuracy']:.1f}%",
                      f"{e['p90_ms']:.3f}" + (" unstable" if e.get("unstable") else ""))
    console.print(front)
    if summary.get("unstable_note"):
        console.print(summary["unstable_note"], style="yellow", markup=False, highlight=False)
    else:
        console.print(f"all {summary['catalog_entries']} catalog entries have stable latency")
    steps = Table("next", "command", title=f"Done in {summary['wall_time_s']:.0f} s - what to do next")
    for what, cmd in next_steps(Path(summary["out"])):
        steps.add_row(what, cmd)
    console.print(steps)
