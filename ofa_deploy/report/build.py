"""``build_report``: the figures, ``report.md`` and ``report.json`` for one or more runs.

The files are produced in a staging folder beside ``out`` and moved in only when all of
them exist, so a failure never leaves a half-written report; an existing ``out`` is
replaced only if it is an earlier report (``ofa_deploy.outputs``).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Mapping, Sequence

from .. import __version__
from ..errors import OfaError
from ..io import atomic_write_json, atomic_write_text
from ..outputs import REPORT, REPORT_FORMAT, staged_output_dir
from . import figures
from .results import RunFacts, load_run, unique_labels

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def bucket_table(runs: Sequence[RunFacts]) -> str:
    """Markdown: one row per (bucket, run) with n, mean, std, min, max and spread in %."""
    lines = ["| MFLOPs | run | n | mean % | std | min % | max % | spread (max - min) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    buckets = sorted({b["mflops"] for r in runs if r.eval for b in r.eval["buckets"]})
    for mflops in buckets:
        for r in runs:
            stats = next((b for b in (r.eval or {}).get("buckets", []) if b["mflops"] == mflops), None)
            if stats is None:
                continue
            if not stats["n"]:
                lines.append(f"| {mflops:g} | {r.label} | 0 | - | - | - | - | - |")
                continue
            lines.append(f"| {mflops:g} | {r.label} | {stats['n']} | {100 * stats['mean']:.2f} | "
                         f"{100 * stats['std']:.2f} | {100 * stats['min']:.2f} | {100 * stats['max']:.2f} | "
                         f"{100 * (stats['max'] - stats['min']):.2f} |")
    return "\n".join(lines)


def compared_against(runs: Sequence[RunFacts]) -> RunFacts | None:
    """The reference run when there is something to compare with it: another timed run."""
    ref = figures.reference_run(runs)
    return ref if sum(1 for r in runs if r.wall_time_s) > 1 else None


def runs_table(runs: Sequence[RunFacts]) -> str:
    """Markdown: one row per run; a speed-up column only when there is a reference to compare with."""
    ref = compared_against(runs)
    speed_head = (" speed-up vs reference |", "---:|") if ref else ("", "")
    lines = [f"| run | dataset | schedule | epochs | train wall time |{speed_head[0]} evaluation |",
             f"|---|---|---|---:|---:|{speed_head[1]}---|"]
    for r in runs:
        wall = figures.format_duration(r.wall_time_s) if r.wall_time_s else "unfinished"
        speed = "reference" if r is ref else f"{ref.wall_time_s / r.wall_time_s:.2f}x" if ref and r.wall_time_s else "-"
        ev = "none"
        if r.eval:
            ev = (f"`{r.eval.get('name', '?')}`: {len(r.eval['subnets'])} subnets, {r.eval.get('split', 'test')} "
                  f"split, {r.eval.get('test_images', '?')} images")
        lines.append(f"| `{r.name}` | {r.dataset} | {r.label} | {r.epochs if r.epochs is not None else '?'} | "
                     f"{wall} |{f' {speed} |' if ref else ''} {ev} |")
    return "\n".join(lines)


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    eval_name: str | None = None,
    title: str = "Subnet population report",
    sections: Sequence[str] = (),
    require_eval: bool = True,
    labels: Mapping[str, str] | None = None,
) -> dict:
    """Write ``accuracy``, ``train_time`` and ``histograms`` (.png and .svg), ``report.md`` and
    ``report.json`` into ``out``. ``eval_name`` picks each run's ``eval/<name>.json`` (default:
    its newest); ``sections`` are Markdown blocks placed after the run table; ``labels`` maps
    run names to schedule names replacing the config-derived ones (epochs are kept). Returns the
    ``report.json`` object (runs, per-bucket statistics, file names)."""
    if not run_dirs:
        raise OfaError("report needs at least one run directory")
    runs = [load_run(d, eval_name, need_eval=require_eval) for d in run_dirs]
    for r in runs:
        if labels and r.name in labels:
            r.label = f"{labels[r.name]}, {r.epochs} ep" if r.epochs is not None else labels[r.name]
    names = [r.run_dir.resolve() for r in runs]
    if len(set(names)) != len(names):
        raise OfaError("the same run directory is given twice")
    unique_labels(runs)
    out = Path(out)
    # a report replaces only an earlier report (its own output, rewritten on every rerun)
    with staged_output_dir(out, REPORT, overwrite=True, inputs=[("run directory", d) for d in run_dirs],
                           overwrite_flag=None) as staging:  # report has no --overwrite: it replaces its own
        files = []
        files += figures.save(figures.accuracy_figure(runs), staging, "accuracy")
        files += figures.save(figures.time_figure(runs), staging, "train_time")
        files += figures.save(figures.histogram_figure(runs), staging, "histograms")
        summary = _summary(runs, title)
        atomic_write_text(staging / REPORT_MD, _markdown(runs, title, sections))
        atomic_write_json(staging / REPORT_JSON, summary)
    summary["files"] = sorted(str(out / p.name) for p in files) + [str(out / REPORT_MD), str(out / REPORT_JSON)]
    return summary


def _summary(runs: Sequence[RunFacts], title: str) -> dict:
    ref = figures.reference_run(runs)
    return {
        "format": REPORT_FORMAT,
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "ofa_deploy": __version__,
        "reference_run": ref.name if ref else None,
        "runs": [
            {
                "name": r.name,
                "run_dir": str(r.run_dir),
                "label": r.label,
                "dataset": r.dataset,
                "method": r.method,
                "epochs": r.epochs,
                "train_wall_time_s": r.wall_time_s,
                "eval": r.eval.get("name") if r.eval else None,
                "buckets": r.eval["buckets"] if r.eval else [],
            }
            for r in runs
        ],
    }


def _markdown(runs: Sequence[RunFacts], title: str, sections: Sequence[str]) -> str:
    ref = compared_against(runs)
    parts = [
        f"# {title}",
        f"Generated by ofa-deploy {__version__} on "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Accuracy of each subnet is "
        "measured after recomputing its BatchNorm statistics on training images; MFLOPs are "
        "multiply-accumulates per 32x32 image.",
        "## Runs",
        runs_table(runs) + (f"\n\nSpeed-ups are wall-time ratios against `{ref.name}` ({ref.label})." if ref else ""),
        *sections,
        "## Accuracy vs MFLOPs",
        "Line: mean of the bucket's subnets; band: worst to best subnet; dots: individual subnets "
        "(shifted sideways per run so they do not overlap).",
        "![accuracy vs MFLOPs](accuracy.png)",
        "## Per-bucket accuracy",
        bucket_table(runs),
        "## Training time",
        "![training wall time](train_time.png)",
        "## Sampling histograms",
        "How often each MFLOPs range and each kernel / expand / depth choice was trained "
        "(subnet-steps: a step training k subnets counts k).",
        "![sampling histograms](histograms.png)",
    ]
    return "\n\n".join(parts) + "\n"
