"""Learning curves of predictor transfer on the measurements of ``transfer_campaign.py``:
for each target landscape, the source predictor adapted on 5, 10, 20, 50 subnets that
active selection picks from the measured pool, against a fit from scratch and a MACs fit
on the same measurements, all scored on the landscape's held-out subnets
(``ofa_deploy.predictor.learning_curve``).

    python experiments/predictor-transfer/transfer_curves.py SOURCE_PREDICTOR CAMPAIGN_DIR OUT_DIR
        [--targets cpu,cpu-2t,cpu-b8,cpu-int8,torch] [--sizes 5,10,20,50] [--statistic min]
        [--source-landscape cpu]

``--source-landscape L``: also use, as source, a predictor fitted from scratch on landscape
L's pool measurements of this campaign (written to OUT_DIR/source-L.json), so that source
and target were measured in the same session. Writes OUT_DIR/curves.json and
OUT_DIR/curves.png, and each pair's adapted predictor after ``--keep`` measurements under
OUT_DIR/adapted/; prints one JSON document (the goals' figures per pair).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from study import DEFAULT_LANDSCAPES, calibrated, goals_met, landscape_file, load, names, read_rows, splits

from ofa_deploy.io import atomic_write_json
from ofa_deploy.predictor.learning_curve import POPULATION, learning_curve, plot_curves, selection_order
from ofa_deploy.predictor.predictor import LatencyPredictor, fit
from ofa_deploy.predictor.transfer import adapt, population


def _goals(point: dict) -> dict:
    a = point["adapt"]
    return {"n": point["n"], "within_10pct": a["within_10pct"], "within_5pct": a["within_5pct"],
            "spearman": round(a["spearman"], 4), "coverage_90": a["coverage_90"],
            "mean_abs_rel_error": round(a["mean_abs_rel_error"], 4), "estimated_error": round(a["estimated_error"], 4),
            "met": all(goals_met(a).values()), "calibrated": calibrated(a["coverage_90"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("campaign", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--targets", default=DEFAULT_LANDSCAPES)
    ap.add_argument("--sizes", default="5,10,20,50")
    ap.add_argument("--statistic", default="min")
    ap.add_argument("--source-landscape", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=int, default=20, help="save the adapted predictor after this many measurements")
    args = ap.parse_args()
    t0 = time.perf_counter()
    source = LatencyPredictor.load(args.source)
    sizes = [int(x) for x in args.sizes.split(",")]
    sources = [("committed", source)]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source_landscape:
        data = load(args.campaign, args.source_landscape, source.space)
        subs, lat = data.split("pool", args.statistic)
        own = fit(source.space, subs, lat, target=args.source_landscape, statistic=args.statistic, seed=args.seed)
        own.save(args.out / f"source-{args.source_landscape}.json")
        sources.append((f"fitted on this campaign's {args.source_landscape} pool", own))
    curves, summary = [], []
    for label, src in sources:
        for name in names(args.targets):
            if src is not source and name == args.source_landscape:
                continue
            pool, pool_ms, held, held_ms = splits(args.campaign, name, src.space, args.statistic)
            curve = learning_curve(src, pool, pool_ms, held, held_ms, target=name, statistic=args.statistic,
                                   sizes=sizes, seed=args.seed)
            curve["source_label"] = label
            k = min(args.keep, len(pool))  # the adapted predictor after k measurements, for bench_predictor.py
            order = selection_order(src, pool, k, args.seed)
            adapt(
                src,
                [pool[i] for i in order],
                [pool_ms[i] for i in order],
                target=name,
                statistic=args.statistic,
                pop=population(src.space, POPULATION, args.seed),
            ).save(
                args.out / "adapted" / f"{src.target}-{'own' if src is not source else 'committed'}-to-{name}-n{k}.json"
            )
            curve["loadavg_seen"] = _loads(landscape_file(args.campaign, name))
            curves.append(curve)
            summary.append({"source": f"{src.target} ({label})", "target": name, "pool": len(pool),
                            "holdout": len(held), "source_only": {k: round(curve["source"][k], 4) for k in
                                                                  ("within_10pct", "within_5pct", "spearman")},
                            "adapt": [_goals(p) for p in curve["points"]]})
    atomic_write_json(args.out / "curves.json", {"curves": curves})
    plot_curves(args.out / "curves.png", curves)
    print(json.dumps({"pairs": summary, "wall_s": round(time.perf_counter() - t0, 1)}, indent=1))


def _loads(path: Path) -> dict:
    rows = read_rows(path)
    loads = [r["loadavg_before"][0] for r in rows if "loadavg_before" in r] + \
            [r["loadavg_after"][0] for r in rows if "loadavg_after" in r]
    return {"min": min(loads), "max": max(loads), "mean": float(np.mean(loads))} if loads else {}


if __name__ == "__main__":
    main()
