"""How repeatable are the latency measurements a predictor is fitted to and scored on?

Two (or more) ``transfer_campaign.py`` directories that measured the same subnets at
different times (fresh ONNX Runtime sessions, the machine's state drifted in between) are
compared subnet by subnet, per landscape and per statistic:

    python experiments/predictor-transfer/measurement_repeatability.py CAMPAIGN_A CAMPAIGN_B [CAMPAIGN_C ...]
        [--statistics min,p50,mean] [--landscapes cpu,cpu-2t,cpu-b8,cpu-int8,torch]

For each pair of campaigns (A, B) the log-ratio r = log(B / A) of every subnet measured in
both is split into a common scale (the median of r: the machine as a whole was faster or
slower) and a per-subnet residual. A single measurement then carries a noise of about
sd(residual) / sqrt(2). From that the script states the *ceiling* any predictor can reach
when it is scored against single measurements: the share of subnets whose one measurement
lies within ±5 % / ±10 % of their true latency (the residuals divided by sqrt(2), i.e. a
perfect predictor compared with one noisy measurement), next to the share of the two
measurements that agree with each other after the scale is removed. ``spearman_ab`` is the
rank correlation of A with B; ``spearman_ceiling`` = sqrt(spearman_ab), the correlation one
noisy measurement has with the truth if the noise is independent between campaigns
(an approximation: exact for Pearson correlation under additive noise).

``--write-mean DIR`` also writes, per landscape, ``DIR/<landscape>.jsonl`` in the campaign
format with every statistic replaced by its geometric mean over the campaigns (subnets
measured in all of them): a truth with sqrt(k) less of the between-campaign noise, to
score predictors against (``transfer_curves.py DIR``).

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from study import DEFAULT_LANDSCAPES, landscape_file, names, rows_by_key


def _share_within(log_err: np.ndarray, pct: float) -> float:
    return float(np.mean(np.abs(np.expm1(log_err)) <= pct / 100.0))


def compare(a: dict[str, dict], b: dict[str, dict], statistic: str) -> dict:
    keys = sorted(set(a) & set(b))
    xa = np.array([a[k]["latency_ms"][statistic] for k in keys])
    xb = np.array([b[k]["latency_ms"][statistic] for k in keys])
    r = np.log(xb / xa)
    scale = float(np.median(r))
    resid = r - scale
    single = resid / math.sqrt(2.0)
    rho = float(spearmanr(xa, xb).statistic)
    return {
        "n": len(keys),
        "scale_b_over_a": round(math.exp(scale), 4),
        "agree_raw_10pct": round(_share_within(r, 10), 3),
        "agree_10pct": round(_share_within(resid, 10), 3),
        "agree_5pct": round(_share_within(resid, 5), 3),
        "noise_sd_pct": round(100 * float(np.std(single, ddof=1)), 2),
        "noise_robust_sd_pct": round(100 * 1.4826 * float(np.median(np.abs(single - np.median(single)))), 2),
        "ceiling_10pct": round(_share_within(single, 10), 3),
        "ceiling_5pct": round(_share_within(single, 5), 3),
        "spearman_ab": round(rho, 4),
        "spearman_ceiling": round(math.sqrt(max(rho, 0.0)), 4),
        "latency_spread_sd_pct": round(100 * float(np.std(np.log(xa), ddof=1)), 1),
    }


def write_mean(campaigns: list[Path], landscapes: list[str], out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for land in landscapes:
        sets = [rows_by_key(landscape_file(c, land)) for c in campaigns if landscape_file(c, land).is_file()]
        if len(sets) != len(campaigns):
            continue
        keys = sorted(set.intersection(*(set(s) for s in sets)))
        lines = []
        for k in keys:
            row = dict(sets[0][k])
            row["latency_ms"] = {stat: float(np.exp(np.mean([np.log(s[k]["latency_ms"][stat]) for s in sets])))
                                 for stat in sets[0][k]["latency_ms"]}
            row["n"] = sum(s[k]["n"] for s in sets)
            row["merged_from"] = [str(c) for c in campaigns]
            lines.append(json.dumps(row))
        tmp = out / f".{land}.jsonl.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(out / f"{land}.jsonl")
        written[land] = len(keys)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaigns", type=Path, nargs="+")
    ap.add_argument("--statistics", default="min,p50,mean")
    ap.add_argument("--landscapes", default=DEFAULT_LANDSCAPES)
    ap.add_argument("--write-mean", type=Path, default=None, metavar="DIR")
    args = ap.parse_args()
    if len(args.campaigns) < 2:
        ap.error("give at least two campaign directories")
    stats = [s for s in args.statistics.split(",") if s]
    out: dict = {"campaigns": [str(p) for p in args.campaigns], "pairs": {}}
    for i, j in itertools.combinations(range(len(args.campaigns)), 2):
        pair = {}
        for land in names(args.landscapes):
            pa, pb = landscape_file(args.campaigns[i], land), landscape_file(args.campaigns[j], land)
            if not (pa.is_file() and pb.is_file()):
                continue
            a, b = rows_by_key(pa), rows_by_key(pb)
            pair[land] = {s: compare(a, b, s) for s in stats}
        out["pairs"][f"{i}-{j}"] = pair
    if args.write_mean is not None:
        out["mean_written"] = write_mean(args.campaigns, names(args.landscapes), args.write_mean)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
