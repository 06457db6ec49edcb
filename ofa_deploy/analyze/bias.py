"""Sampling bias of a run, from its ``histogram.json``, next to its per-bucket accuracy.

The paper's argument is that subnets trained more often end up better. This measures how
unevenly a run actually trained: per block and setting (kernel, expand ratio) and per stage
(depth), the total-variation distance of the choice shares from uniform and the ratio of
the most to the least trained choice; per MFLOPs bucket, the share of subnet-steps it got,
against the share uniform per-setting sampling (the paper's RSS) would give it. With an
evaluation, each bucket's mean accuracy and spread sit beside its training share, with the
rank correlation between the two. No torch needed.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..cost import macs
from ..errors import OfaError
from ..space import SearchSpace


def choice_unevenness(counts: Sequence[int]) -> dict:
    """Shares of each choice, total-variation distance from uniform (0 = even, 1 - 1/k = one
    choice only) and max/min count ratio (None when a choice was never trained)."""
    total = sum(counts)
    if total == 0:
        return {"shares": [None] * len(counts), "tv_from_uniform": None, "max_min_ratio": None, "trained": 0}
    shares = [c / total for c in counts]
    k = len(counts)
    return {
        "shares": shares,
        "tv_from_uniform": 0.5 * sum(abs(s - 1 / k) for s in shares),
        "max_min_ratio": max(counts) / min(counts) if min(counts) > 0 else None,
        "trained": total,
    }


def uniform_bucket_shares(space: SearchSpace, buckets: Sequence[float], tolerance: float = 0.5,
                          samples: int = 20000, seed: int = 0) -> dict[str, float]:
    """Share of uniformly drawn subnets (every setting independent, as RSS draws) that fall in
    each bucket, estimated from ``samples`` draws."""
    rng = random.Random(seed)
    hits = {f"{b:g}": 0 for b in buckets}
    for _ in range(samples):
        mf = macs(space, space.sample(rng)) / 1e6
        for b in buckets:
            if abs(mf - b) <= tolerance:
                hits[f"{b:g}"] += 1
    return {k: v / samples for k, v in hits.items()}


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx > 0 and vy > 0 else None


def sampling_bias(space: SearchSpace, histogram: dict, evaluation: dict | None = None, *,
                  samples: int = 20000) -> dict:
    """The bias report of one run (see the module docstring)."""
    if not histogram or not histogram.get("total"):
        raise OfaError("the run's histogram is empty: nothing was trained yet")
    settings = {}
    for key, unit in (("ks", "block"), ("e", "block"), ("d", "stage")):
        per = [choice_unevenness(c) for c in histogram[key]]
        tvs = [p["tv_from_uniform"] for p in per if p["tv_from_uniform"] is not None]
        worst = max(range(len(per)), key=lambda i: per[i]["tv_from_uniform"] or -1.0)
        settings[key] = {
            "choices": histogram["choices"][key],
            f"per_{unit}": per,
            "mean_tv_from_uniform": sum(tvs) / len(tvs) if tvs else None,
            f"worst_{unit}": worst + 1,
            "worst_tv_from_uniform": per[worst]["tv_from_uniform"],
            f"never_trained_{unit}s": sum(1 for p in per if not p["trained"]),
        }
    counts = histogram.get("buckets", {})
    total = histogram["total"]
    bucket_keys = sorted(counts, key=float)
    uniform = uniform_bucket_shares(space, [float(k) for k in bucket_keys], samples=samples)
    acc = {f"{b['mflops']:g}": b for b in (evaluation or {}).get("buckets", []) if b.get("n")}
    rows = []
    for key in bucket_keys:
        share = counts[key] / total
        # a ratio against an estimate from fewer than 20 uniform hits would be noise
        reliable = uniform[key] * samples >= 20
        row = {"mflops": float(key), "subnet_steps": counts[key], "share": share,
               "uniform_share": uniform[key], "vs_uniform": share / uniform[key] if reliable else None}
        if key in acc:
            b = acc[key]
            row.update({"mean_accuracy": b["mean"], "spread": b["max"] - b["min"], "n_evaluated": b["n"]})
        rows.append(row)
    with_acc = [r for r in rows if "mean_accuracy" in r]
    return {
        "unit": histogram.get("unit", "subnet-steps"),
        "total": total,
        "settings": settings,
        "buckets": rows,
        "outside_buckets_share": 1 - sum(r["share"] for r in rows),
        "rank_correlation_share_vs_accuracy": _spearman([r["share"] for r in with_acc],
                                                        [r["mean_accuracy"] for r in with_acc]),
        "evaluation": (evaluation or {}).get("name"),
    }


def analyze_run_bias(run_dir, eval_name: str | None = None, *, samples: int = 20000) -> dict:
    """``sampling_bias`` of a run directory (its evaluation if it has one)."""
    from .. import run
    from ..report.results import load_run

    facts = load_run(run_dir, eval_name)
    if facts.histogram is None:
        raise OfaError(f"{run_dir} has no {run.HISTOGRAM}; it was not trained by ofa-deploy train")
    result = sampling_bias(run.space_from_config(facts.config), facts.histogram, facts.eval, samples=samples)
    return {"run": facts.name, "label": facts.label, **result}
