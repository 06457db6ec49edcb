"""Several training seeds of a reproduction: parsing ``--seeds``, where each seed's runs live,
and the per-bucket aggregate with bootstrap intervals (no torch).

Every method is trained once per seed and evaluated on the same subnets: the evaluation
seed (which draws the subnets, the test subset and the BN-calibration images) is the first
seed of the list for every run, so differences between seeds are differences between
trained supernets only. Per bucket the aggregate gives each method's mean over seeds and
subnets, and ``RSS - PS`` (and ``RSS-short - PS``) with a 95 % interval that resamples seeds
and subnets (``ofa_deploy.analyze.intervals``). The spread (best minus worst subnet) is a
property of the whole subnet set, so its ``RSS - PS`` difference is resampled over seeds
only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .analyze.intervals import BOOTSTRAP_SEED, DRAWS, LEVEL, NOISE, crossed_bootstrap, difference, verdict
from .errors import OfaError
from .validate import MAX_SEED

MAIN = ("ps", "rss", "rss-short")
"""The paper's three methods, by plan key."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; an empty list, a non-integer, a negative or huge seed, or
    a repeat is an ``OfaError`` naming ``--seeds``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise OfaError("--seeds is empty; give a comma-separated list such as 0,1,2")
    seeds = []
    for part in parts:
        if not part.isdigit() or not part.isascii():
            raise OfaError(f"--seeds: {part!r} is not a non-negative integer (expected a list such as 0,1,2)")
        value = int(part)
        if value > MAX_SEED:
            raise OfaError(f"--seeds: {value} is larger than {MAX_SEED}")
        seeds.append(value)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise OfaError(f"--seeds repeats {', '.join(map(str, repeated))}; each seed once")
    return tuple(seeds)


def combine_seed_options(seed: int | None, seeds: str | None) -> tuple[int, ...]:
    """The seeds of ``--seed`` (one) and ``--seeds`` (a list): either alone, or both when they
    say the same (``--seed 3 --seeds 3``); ``--seed 0 --seeds 0,1`` is refused as ambiguous."""
    if seeds is None:
        return (0 if seed is None else seed,)
    listed = parse_seeds(seeds)
    if seed is not None and listed != (seed,):
        raise OfaError(f"--seed {seed} contradicts --seeds {seeds}: --seed trains one seed; give only --seeds")
    return listed


def run_key(key: str, seed: int, seeds: Sequence[int]) -> str:
    """The run directory name: the plan key for the first seed (the layout of a one-seed
    reproduction, so adding seeds later reuses its runs), ``<key>-s<seed>`` for the others."""
    return key if seed == seeds[0] else f"{key}-s{seed}"


def aggregate(evals: Mapping[int, Mapping[str, dict]], *, draws: int = DRAWS,
              bootstrap_seed: int = BOOTSTRAP_SEED) -> dict:
    """Per bucket: each method's mean, seed means and mean spread; ``RSS - PS`` and
    ``RSS-short - PS`` with interval and verdict; the spread difference. ``evals`` maps
    seed -> plan key -> evaluation result (``eval/<name>.json``)."""
    seeds = list(evals)
    if not seeds:
        raise OfaError("no seeds to aggregate")
    boot = {"draws": draws, "seed": bootstrap_seed, "level": LEVEL}
    matrices = {key: [_by_bucket(evals[s][key], s, key) for s in seeds] for key in MAIN}
    reference = matrices["ps"][0]
    rows = []
    for mflops, (texts, _) in reference.items():
        acc = {}
        for key in MAIN:
            per_seed = []
            for s, measured in zip(seeds, matrices[key]):
                other = measured.get(mflops)
                if other is None or other[0] != texts:
                    raise OfaError(f"{key} (seed {s}) was not evaluated on the same subnets as ps (seed "
                                   f"{seeds[0]}) in bucket {mflops:g}; evaluate every run with one seed")
                per_seed.append(other[1])
            acc[key] = np.array(per_seed)  # seeds x subnets
        if not texts:
            continue
        spread = {k: acc[k].max(axis=1) - acc[k].min(axis=1) for k in MAIN}  # one per seed
        spread_lo_hi = crossed_bootstrap((spread["rss"] - spread["ps"])[:, None], draws=draws, seed=bootstrap_seed)
        rows.append({
            "mflops": mflops,
            "n_subnets": len(texts),
            "mean": {k: float(acc[k].mean()) for k in MAIN},
            "seed_means": {k: [float(m) for m in acc[k].mean(axis=1)] for k in MAIN},
            "spread": {k: float(spread[k].mean()) for k in MAIN},
            "rss_minus_ps": difference(acc["rss"], acc["ps"], draws=draws, seed=bootstrap_seed),
            "rss_short_minus_ps": difference(acc["rss-short"], acc["ps"], draws=draws, seed=bootstrap_seed),
            # negative = RSS narrower, so the verdict of "RSS narrower" is that of PS - RSS
            "spread_rss_minus_ps": {"mean": float((spread["rss"] - spread["ps"]).mean()),
                                    "interval": list(spread_lo_hi),
                                    "verdict": verdict((-spread_lo_hi[1], -spread_lo_hi[0]))},
        })
    if not rows:
        raise OfaError("no bucket holds an evaluated subnet")
    return {
        "seeds": seeds,
        "eval_seed": seeds[0],
        "bootstrap": {**boot, "resampled": "seeds and subnets, independently (crossed); spreads: seeds"},
        "buckets": rows,
        "n_buckets": len(rows),
        "summary": {name: _count(rows, field) for name, field in
                    (("rss_vs_ps", "rss_minus_ps"), ("rss_narrower", "spread_rss_minus_ps"),
                     ("rss_short_vs_ps", "rss_short_minus_ps"))},
    }


def mean_times(per_seed: Sequence[dict]) -> dict:
    """Mean training wall time per method over seeds, and the speed-ups over PS of the means."""
    times = {}
    for key in MAIN:
        values = [v["train_wall_time_s"].get(key) for v in per_seed]
        times[key] = float(np.mean(values)) if values and all(values) else None
    ratios = {k: (times["ps"] / times[k] if times["ps"] and times[k] else None) for k in ("rss", "rss-short")}
    return {"train_wall_time_s": times, "time_ratio_vs_ps": ratios}


def _by_bucket(result: dict, seed: int, key: str) -> dict[float, tuple[list[str], list[float]]]:
    if not isinstance(result, dict) or not isinstance(result.get("subnets"), list):
        raise OfaError(f"the evaluation of {key} (seed {seed}) holds no subnets")
    out: dict[float, tuple[list[str], list[float]]] = {}
    for b in result.get("buckets", []):
        out[float(b["mflops"])] = ([], [])
    for s in result["subnets"]:
        texts, accs = out.setdefault(float(s["bucket"]), ([], []))
        texts.append(s["text"])
        accs.append(float(s["accuracy"]))
    return out


def _count(rows: Sequence[dict], field: str) -> dict[str, int]:
    counts = {"holds": 0, "fails": 0, NOISE: 0}
    for r in rows:
        counts[r[field]["verdict"]] += 1
    return counts
