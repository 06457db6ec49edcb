"""Learning curves of predictor transfer: held-out accuracy after 5, 10, 20, 50 measured
subnets of a new target, for

- ``adapt``: the transfer model (``transfer.adapt``) on the subnets active selection picks;
- ``adapt_random``: the same model on as many subnets drawn at random from the same pool
  (what the selection is worth);
- ``scratch``: ``predictor.fit`` from nothing on the selected measurements (needs 6);
- ``macs``: a linear fit of latency on MACs on the selected measurements;
- ``source`` (once, n = 0): the source predictor unchanged.

Each point reports ``accuracy_report`` (within +-5/10 %, Spearman, mean error) and, where
the model states one, the share of held-out measurements inside its central 90 % interval
(``coverage_90``) and its own estimate of the mean error (``estimated_error``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OfaError
from ..space import Subnet
from .predictor import Floats, LatencyPredictor, MacsBaseline, accuracy_report, fit
from .transfer import POPULATION, adapt, population
from .transfer import selection_order as _order

CURVE_SIZES = (5, 10, 20, 50)
LEVEL = 0.9


def score(model: Any, subs: Sequence[Subnet], measured: np.ndarray) -> dict[str, Any]:
    """``accuracy_report`` of ``model``'s predictions for ``subs`` against ``measured``, with
    the share inside its 90 % intervals and their mean relative half-width where it states any."""
    if isinstance(model, MacsBaseline):
        return accuracy_report(measured, model.predict(subs))
    if model.uncertainty is None:
        return accuracy_report(measured, model.predict(subs))
    pred, lo, hi = model.interval(subs, LEVEL)
    return {**accuracy_report(measured, pred), "coverage_90": float(np.mean((measured >= lo) & (measured <= hi))),
            "mean_interval_halfwidth": float(np.mean((hi - lo) / 2 / pred))}


def selection_order(source: LatencyPredictor, pool: Sequence[Subnet], k: int, seed: int) -> list[int]:
    """Active-selection order of ``k`` subnets of ``pool`` (population drawn with ``seed``)."""
    return _order(source, pool, population(source.space, POPULATION, seed), k)


def learning_curve(source: LatencyPredictor, pool: Sequence[Subnet], pool_ms: Floats,
                   held: Sequence[Subnet], held_ms: Floats, *, target: str, statistic: str,
                   sizes: Sequence[int] = CURVE_SIZES, seed: int = 0,
                   order: Optional[Sequence[int]] = None, compare_random: bool = True) -> dict[str, Any]:
    """The curve on measured ``pool`` (what may be chosen) and ``held`` (never chosen).
    ``order``: the selection order within ``pool`` if already known. ``compare_random``:
    also adapt on random subsets of ``pool`` (only meaningful for a uniform pool)."""
    if len(held) < 3:
        raise OfaError(f"a learning curve needs at least 3 held-out measurements, got {len(held)}")
    sizes = sorted({int(n) for n in sizes if 1 <= int(n) <= len(pool)})
    if not sizes:
        raise OfaError(f"no curve size fits the {len(pool)} measured candidates")
    pool_y = np.asarray(pool_ms, dtype=float)
    held_y = np.asarray(held_ms, dtype=float)
    if order is None:
        order = selection_order(source, pool, max(sizes), seed)
    if len(order) < max(sizes):
        raise OfaError(f"the selection order has {len(order)} subnets, the curve needs {max(sizes)}")
    shuffled = list(range(len(pool)))
    random.Random(seed).shuffle(shuffled)
    pop = population(source.space, POPULATION, seed)
    points = []
    for n in sizes:
        row: dict[str, Any] = {"n": n}
        runs = [("adapt", list(order[:n]))] + ([("adapt_random", shuffled[:n])] if compare_random else [])
        for name, idx in runs:
            subs, ys = [pool[i] for i in idx], pool_y[idx]
            model = adapt(source, subs, ys, target=target, statistic=statistic, pop=pop)
            row[name] = {**score(model, held, held_y),
                         "estimated_error": model.info["transfer"]["estimated_error"],
                         "strength": model.info["transfer"]["strength"]}
        subs, ys = [pool[i] for i in order[:n]], pool_y[list(order[:n])]
        row["scratch"] = (score(fit(source.space, subs, ys, target=target, statistic=statistic, seed=seed),
                                 held, held_y) if n >= 6 else None)
        row["macs"] = score(MacsBaseline(source.space, subs, ys), held, held_y) if n >= 2 else None
        points.append(row)
    return {"target": target, "source_target": source.target, "statistic": statistic, "sizes": sizes,
            "pool": len(pool), "holdout": len(held), "seed": seed,
            "source": accuracy_report(held_y, np.asarray(source.predict(held), dtype=float)),
            "points": points}


SERIES = (("adapt", "adapt (active selection)", "-o"), ("adapt_random", "adapt (random subnets)", "--o"),
          ("scratch", "fit from scratch", "-s"), ("macs", "linear fit on MACs", "-^"))
PANELS = (("within_10pct", "within ±10 %"), ("within_5pct", "within ±5 %"), ("spearman", "Spearman"),
          ("mean_abs_rel_error", "mean |relative error|"), ("coverage_90", "90 % interval coverage"))


def plot_curves(path: Path, curves: Sequence[dict[str, Any]]) -> Path:
    """One row of panels per curve (source -> target), one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from ..io import atomic_write

    fig, axes = plt.subplots(len(curves), len(PANELS), figsize=(3.2 * len(PANELS), 2.6 * len(curves)),
                             squeeze=False)
    for r, curve in enumerate(curves):
        for c, (key, title) in enumerate(PANELS):
            ax = axes[r][c]
            for series, label, style in SERIES:
                pts = [(p["n"], p[series][key]) for p in curve["points"] if p.get(series) and key in p[series]]
                if pts:
                    ax.plot(*zip(*pts), style, label=label, ms=4)
            if key == "coverage_90":
                ax.axhspan(0.85, 0.95, color="0.9")
            elif key in ("within_10pct", "within_5pct", "spearman"):
                goal = {"within_10pct": 0.95, "within_5pct": 0.75, "spearman": 0.98}[key]
                ax.axhline(goal, color="0.6", lw=1, ls=":")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(curve["sizes"])
            ax.set_xticklabels([str(n) for n in curve["sizes"]])
            pair = f"{curve['source_target']} → {curve['target']}" + (
                f" ({curve['source_label']})" if curve.get("source_label") else "")
            ax.set_title(f"{pair}:\n{title}" if c == 0 else title, fontsize=8)
            if r == len(curves) - 1:
                ax.set_xlabel("measured subnets")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
