"""Is the transfer prior's strength what limits ``adapt`` after n measured subnets?

For each campaign truth (``anchor_correct.py`` output) and target: the subnets active
selection picks first from the pool, then the posterior at every strength of the grid
(``transfer.OP_STRENGTHS`` x ``OP_STRENGTHS`` x ``STAGE_STRENGTHS`` x ``FIXED_COST_STRENGTHS``)
and their evidence average (what ``adapt`` uses), each scored on the held-out subnets (share
within +-5 %). Reports the average's score, the best strength per pair chosen on the
held-out score itself (an oracle no user has) and the best single strength for all pairs.

    python experiments/predictor-transfer/strength_oracle.py SOURCE TRUTH[:T1,T2] ... [--n 20] > out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from study import DEFAULT_LANDSCAPES, names, splits

from ofa_deploy.predictor import transfer as T
from ofa_deploy.predictor.predictor import LatencyPredictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("truths", nargs="+", help="TRUTH_DIR[:targets]")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--statistic", default="min")
    args = ap.parse_args()
    src = LatencyPredictor.load(args.source)
    feat = src._feat
    pop = T.population(src.space, T.POPULATION, 0)
    prior = T.make_prior(src, feat.counts(pop))
    grid = list(itertools.product(T.OP_STRENGTHS, T.OP_STRENGTHS, T.STAGE_STRENGTHS, T.FIXED_COST_STRENGTHS))
    rows, per_strength = [], np.zeros(len(grid))
    for item in args.truths:
        truth, _, targets = item.partition(":")
        for name in names(targets or DEFAULT_LANDSCAPES):
            pool, pool_ms, held, held_ms = splits(Path(truth), name, src.space, args.statistic)
            order = T.selection_order(src, pool, pop, args.n)
            x = T.rows(src, feat.counts([pool[i] for i in order]), prior)
            y = np.asarray(pool_ms, dtype=float)[order]
            m = float(np.median(y / x[:, 0]))  # as adapt: rows divided by their measurement, units of m
            psi = x / (y / m)[:, None]
            x_held, held_y = T.rows(src, feat.counts(held), prior), np.asarray(held_ms, dtype=float)
            fits = [T.posterior(psi, np.ones(len(y)), prior, s) for s in grid]

            def within_5(post: T.Posterior) -> float:
                return float(np.mean(np.abs(m * x_held @ post.mean / held_y - 1) < 0.05))

            scores = np.array([within_5(f) for f in fits])
            per_strength += scores
            rows.append({"truth": truth, "target": name, "average": within_5(T.average(fits)),
                         "oracle": float(scores.max()), "oracle_strength": grid[int(scores.argmax())]})
    best = int(per_strength.argmax())
    print(json.dumps({"n": args.n, "pairs": len(rows),
                      "mean_within_5pct": {"evidence_average": round(float(np.mean([r["average"] for r in rows])), 4),
                                           "best_single_strength": round(float(per_strength[best] / len(rows)), 4),
                                           "oracle_per_pair": round(float(np.mean([r["oracle"] for r in rows])), 4)},
                      "best_single_strength": grid[best], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
