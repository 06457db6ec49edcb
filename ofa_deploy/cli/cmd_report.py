"""``ofa-deploy report RUN [RUN ...] --out DIR``: the paper's figures and tables for runs
(thin layer over ``ofa_deploy.report.build_report``)."""

from __future__ import annotations

import click

from .common import emit_json


@click.command("report")
@click.argument("run_dirs", metavar="RUN [RUN ...]", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the figures and report.md.")
@click.option("--eval", "eval_name", default=None,
              help="Evaluation to show (eval/NAME.json in every run; default: each run's newest).")
@click.option("--title", default="Subnet population report", show_default=True)
@click.option("--allow-missing-eval", is_flag=True,
              help="Include runs without an evaluation (time and histogram only).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json (plus the written files).")
def command(run_dirs, out, eval_name, title, allow_missing_eval, as_json) -> None:
    """Accuracy vs MFLOPs (mean, min-max band, subnets), training time, sampling histograms and
    a per-bucket table, as PNG + SVG + Markdown in --out."""
    from ..report import build_report

    summary = build_report(run_dirs, out, eval_name=eval_name, title=title, require_eval=not allow_missing_eval)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"report of {len(summary['runs'])} run(s) written to {out}:")
    for path in summary["files"]:
        click.echo(f"  {path}")
