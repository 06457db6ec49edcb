"""``catalog plot``: accuracy against measured latency and against MFLOPs, Pareto front
highlighted. matplotlib is imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..errors import OfaError
from ..io import atomic_write
from .entries import pareto

_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}


def _model(entry: dict[str, Any]) -> tuple[str, str]:
    """A subnet may be in the catalog at several precisions: each is its own point."""
    return entry["key"], entry["precision"]


def plot_catalog(items: list[dict[str, Any]], out: str | Path, *, target: str, latency: str = "p90") -> Path:
    """Write a two-panel PNG of ``items`` (entries of one target) to ``out``."""
    fig = catalog_figure(items, target=target, latency=latency)  # selects the Agg backend
    import matplotlib.pyplot as plt

    path = atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def catalog_figure(items: list[dict[str, Any]], *, target: str, latency: str = "p90"):
    """The matplotlib figure ``plot_catalog`` saves (the caller closes it)."""
    with_acc = [e for e in items if e["accuracy"] is not None]
    if not with_acc:
        raise OfaError(f"no catalog entry for target {target} has an accuracy to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front_lat = pareto(with_acc, latency=latency)
    front_keys = {_model(e) for e in front_lat}
    by_mflops = sorted(with_acc, key=lambda e: (e["mflops"], -e["accuracy"]))
    front_mf, best = [], float("-inf")
    for e in by_mflops:
        if e["accuracy"] > best:
            front_mf.append(e)
            best = e["accuracy"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    panels = ((axes[0], lambda e: e["latency_ms"][latency], f"measured {latency} latency (ms)", front_lat),
              (axes[1], lambda e: e["mflops"], "MFLOPs (MACs / 1e6)", front_mf))
    for ax, x, label, front in panels:
        others = [e for e in with_acc if _model(e) not in {_model(f) for f in front}]
        unstable = [e for e in with_acc if e["unstable"]]
        for precision in sorted({e["precision"] for e in others}):
            mine = [e for e in others if e["precision"] == precision]
            ax.scatter([x(e) for e in mine], [e["accuracy"] for e in mine], s=18, color="0.6",
                       marker=_MARKERS.get(precision, "o"), label=f"entries ({precision})")
        ax.plot([x(e) for e in front], [e["accuracy"] for e in front], "-o", color="C3", ms=5, label="Pareto front")
        if unstable:
            ax.scatter([x(e) for e in unstable], [e["accuracy"] for e in unstable], s=60, facecolors="none",
                       edgecolors="C1", label="unstable latency")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.margins(x=0.08, y=0.1)  # points at the edges stay clear of the frame
    axes[0].set_ylabel("top-1 accuracy")
    axes[0].set_title(f"{target}: accuracy vs latency ({len(front_keys)} on the front)", fontsize=10)
    axes[1].set_title(f"{target}: accuracy vs MFLOPs", fontsize=10)
    # one legend for both panels, below them: inside a panel it covers points wherever it goes
    handles: Dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
