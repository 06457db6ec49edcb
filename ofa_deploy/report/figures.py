"""The report's matplotlib figures (Agg backend; each saved as PNG and SVG).

* ``accuracy_figure``  - population accuracy vs MFLOPs per run: mean line, min-max band,
  every subnet as a point (the paper's Fig. 3); one panel per dataset.
* ``time_figure``      - training wall time per run, with the speed-up against a reference
  run (the paper's Fig. 4).
* ``histogram_figure`` - what each run trained: subnet-steps per MFLOPs bin and the share of
  each kernel / expand / depth choice per block (the sampling bias).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .results import RunFacts

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
          "#7f7f7f", "#393b79", "#637939")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """``stem.png`` (150 dpi) and ``stem.svg`` in ``out_dir``."""
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=150 if ext == "png" else None, bbox_inches="tight")
        paths.append(path)
    _plt().close(fig)
    return paths


def run_color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def accuracy_figure(runs: Sequence[RunFacts], title: str | None = None):
    """Accuracy (%) vs MFLOPs; runs without an evaluation are left out."""
    plt = _plt()
    evaluated = [(i, r) for i, r in enumerate(runs) if r.eval]
    datasets = list(dict.fromkeys(r.dataset for _, r in evaluated)) or ["-"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 5.2), squeeze=False)
    n_runs = max(1, len(evaluated))
    for ax, dataset in zip(axes[0], datasets):
        members = [(i, r) for i, r in evaluated if r.dataset == dataset]
        for slot, (i, r) in enumerate(members):
            color = run_color(i)
            # spread the runs' points a little along x so they do not hide each other
            offset = (slot - (len(members) - 1) / 2) * min(0.18, 0.9 / n_runs)
            stats = [b for b in r.eval["buckets"] if b["n"]]
            x = [b["mflops"] for b in stats]
            ax.fill_between(x, [100 * b["min"] for b in stats], [100 * b["max"] for b in stats],
                            color=color, alpha=0.13, linewidth=0)
            ax.plot(x, [100 * b["mean"] for b in stats], "-o", color=color, lw=2, ms=5,
                    label=f"{r.label} (n={stats[0]['n'] if stats else 0}/bucket)")
            ax.scatter([s["bucket"] + offset for s in r.eval["subnets"]],
                       [100 * s["accuracy"] for s in r.eval["subnets"]],
                       s=9, color=color, alpha=0.45, linewidths=0)
        buckets = sorted({b["mflops"] for _, r in members for b in r.eval["buckets"]})
        if buckets:
            ax.set_xticks(buckets)
            ax.set_xticklabels([f"{b:g}" for b in buckets])
        ax.set_xlabel("MFLOPs (multiply-accumulates per image, millions)")
        ax.set_ylabel(f"{_split(members)} accuracy (%)")
        ax.set_title(title or f"{dataset}: subnet population accuracy\nline = mean, band = min to max, dots = subnets")
        ax.grid(alpha=0.3)
        if members:
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig


def _split(members) -> str:
    splits = {r.eval.get("split", "test") for _, r in members}
    return splits.pop() if len(splits) == 1 else "measured"


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def reference_run(runs: Sequence[RunFacts]) -> RunFacts | None:
    """The run speed-ups are measured against: the first OFA-PS run, else the slowest."""
    timed = [r for r in runs if r.wall_time_s]
    if not timed:
        return None
    for r in timed:
        if r.method == "ps":
            return r
    return max(timed, key=lambda r: r.wall_time_s)


def time_figure(runs: Sequence[RunFacts]):
    """Horizontal bars of training wall time, labelled with the time and the speed-up."""
    plt = _plt()
    timed = [(i, r) for i, r in enumerate(runs) if r.wall_time_s]
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(2, len(timed)) + 1.4))
    ref = reference_run(runs)
    ys = list(range(len(timed)))[::-1]
    longest = max((r.wall_time_s for _, r in timed), default=60.0)
    unit, scale = (
        ("hours", 3600.0) if longest >= 3 * 3600 else ("minutes", 60.0) if longest >= 120 else ("seconds", 1.0)
    )
    for y, (i, r) in zip(ys, timed):
        ax.barh(y, r.wall_time_s / scale, color=run_color(i), alpha=0.85)
        note = format_duration(r.wall_time_s)
        if ref is not None and r is not ref:
            note += f"  ({ref.wall_time_s / r.wall_time_s:.2f}x faster than {ref.label})"
        ax.text(r.wall_time_s / scale, y, "  " + note, va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([r.label for _, r in timed], fontsize=9)
    ax.set_xlim(0, longest / scale * 1.9)
    ax.set_xlabel(f"training wall time ({unit}, first epoch start to last epoch end)")
    datasets = ", ".join(dict.fromkeys(r.dataset for _, r in timed))
    ax.set_title(f"Training time{' - ' + datasets if datasets else ''}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def histogram_figure(runs: Sequence[RunFacts]):
    """A 2 x 2 grid per run: the MFLOPs of the trained subnet-steps (paper buckets shaded)
    and the share of each depth choice per stage on top, the share of each kernel and each
    expand choice per block below (1/3 everywhere = unbiased). Runs are stacked; the text is
    large enough to read where the report shows the PNG at page width."""
    plt = _plt()
    rows = [(i, r) for i, r in enumerate(runs) if r.histogram and r.histogram.get("total")]
    n = max(1, len(rows))
    fig, axes = plt.subplots(2 * n, 2, figsize=(14, 7.5 * n + 0.9), squeeze=False, layout="constrained")
    image = None
    heatmaps = []
    for k, (i, r) in enumerate(rows):
        h = r.histogram
        ax = axes[2 * k][0]
        edges, counts = h["mflops_edges"], h["mflops_counts"]
        total = max(1, sum(counts))
        ax.bar([e + 0.5 for e in edges[:-1]], [100 * c / total for c in counts], width=0.9, color=run_color(i))
        for key in h.get("buckets", {}):
            b = float(key)
            ax.axvspan(b - 0.5, b + 0.5, color="grey", alpha=0.15, linewidth=0)
        ax.set_ylabel("% of subnet-steps", fontsize=12)
        ax.set_xlabel("MFLOPs (grey: evaluated buckets)", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.set_title(f"{r.label}: {h['total']:,} subnet-steps", fontsize=14, loc="left", fontweight="bold")
        ax.grid(axis="y", alpha=0.3)
        panels = ((axes[2 * k][1], "d", "depth"), (axes[2 * k + 1][0], "ks", "kernel"),
                  (axes[2 * k + 1][1], "e", "expand ratio"))
        for ax, key, what in panels:
            choices = h["choices"][key]
            share = []
            for counts_per_block in h[key]:
                n_steps = sum(counts_per_block)
                share.append([c / n_steps if n_steps else float("nan") for c in counts_per_block])
            matrix = [[share[b][c] for b in range(len(share))] for c in range(len(choices))]
            cmap = plt.get_cmap("viridis").with_extremes(bad="white")
            image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            heatmaps.append(ax)
            ax.set_yticks(range(len(choices)))
            ax.set_yticklabels([str(c) for c in choices], fontsize=11)
            ax.set_ylabel(what, fontsize=12)
            unit = "stage" if key == "d" else "block"
            ax.set_xticks(range(len(share)))
            ax.set_xticklabels([str(b + 1) for b in range(len(share))], fontsize=10 if len(share) > 12 else 11)
            ax.set_xlabel(f"{unit} (share of its trained steps)", fontsize=12)
            ax.set_title(f"{what} per {unit}", fontsize=13, loc="left")
    if not rows:
        axes[0][0].text(0.5, 0.5, "no run has a sampling histogram", ha="center", va="center", fontsize=14)
        for ax in axes.ravel():
            ax.axis("off")
    fig.suptitle("What each run trained: share of each choice per block / stage\n"
                 "(uniform sampling gives 0.33 each; white = block never active)", fontsize=15)
    if image is not None:
        bar = fig.colorbar(image, ax=heatmaps, fraction=0.03, pad=0.01, aspect=40)
        bar.set_label("share", fontsize=12)
        bar.ax.tick_params(labelsize=11)
    return fig
