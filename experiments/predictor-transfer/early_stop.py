"""When would ``predictor adapt --target-error T --step 5`` stop, and how good is the
predictor it stops with? Replayed offline on a ``transfer_campaign.py`` directory: per
landscape, the source adapted on the first 5, 10, ... 50 subnets of the active-selection
order of the campaign's pool, scored on its held-out subnets, under two stopping rules:

- ``estimate``: the model's estimated mean error <= T (the rule before the check);
- ``checked``: that, and the previous fit's mean error on the 5 subnets measured since
  <= T (what ``adapt`` does now; never after the first step).

    python experiments/predictor-transfer/early_stop.py SOURCE_PREDICTOR CAMPAIGN_DIR [--targets 0.03,0.05]
        [--landscapes cpu,...] [--statistic min]

Prints one JSON document: per landscape, rule and T, the number measured at the stop and
the held-out mean relative error there (null: the rule never stopped within 50).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from study import DEFAULT_LANDSCAPES, names, splits

from ofa_deploy.predictor.adapt import stops_early
from ofa_deploy.predictor.learning_curve import POPULATION, selection_order
from ofa_deploy.predictor.predictor import LatencyPredictor, accuracy_report
from ofa_deploy.predictor.transfer import adapt, population

STEP, MOST = 5, 50


def _mare(model: LatencyPredictor, subnets: list, measured: np.ndarray) -> float:
    return accuracy_report(measured, model.predict(subnets))["mean_abs_rel_error"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("campaign", type=Path)
    ap.add_argument("--targets", default="0.03,0.05")
    ap.add_argument("--landscapes", default=DEFAULT_LANDSCAPES)
    ap.add_argument("--statistic", default="min")
    args = ap.parse_args()
    source = LatencyPredictor.load(args.source)
    pop = population(source.space, POPULATION, 0)
    targets = [float(t) for t in args.targets.split(",") if t]
    out: dict = {"campaign": str(args.campaign), "step": STEP, "landscapes": {}}
    for land in names(args.landscapes):
        pool, pool_ms, held, held_ms = splits(args.campaign, land, source.space, args.statistic)
        pool_ms, held_ms = np.asarray(pool_ms), np.asarray(held_ms)
        order = selection_order(source, pool, min(MOST, len(pool)), 0)
        stops: dict = {rule: {str(t): None for t in targets} for rule in ("estimate", "checked")}
        previous = None
        for n in range(STEP, len(order) + 1, STEP):
            idx = order[:n]
            model = adapt(source, [pool[i] for i in idx], pool_ms[idx], target=land, statistic=args.statistic, pop=pop)
            est = model.info["transfer"]["estimated_error"]
            fresh = order[n - STEP:n]
            checked = None if previous is None else _mare(previous, [pool[i] for i in fresh], pool_ms[fresh])
            for t in targets:
                at = {"measured": n, "held_out_error": round(_mare(model, held, held_ms), 4),
                      "estimated_error": round(est, 4)}
                if stops["estimate"][str(t)] is None and est <= t:
                    stops["estimate"][str(t)] = at
                if stops["checked"][str(t)] is None and stops_early(est, checked, t):
                    stops["checked"][str(t)] = {**at, "checked_error": round(checked, 4)}
            previous = model
        out["landscapes"][land] = stops
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
