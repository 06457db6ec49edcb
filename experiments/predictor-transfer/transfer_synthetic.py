"""Predictor transfer on quiet synthetic targets: can the model meet issue 16's goals when
the measurements are not the problem?

Every campaign on this project's shared VM measures with 2-6 % noise, at or above what the
goals allow (see results/predictor-transfer/ceiling). This replaces the device by a latency
landscape computed from each subnet's layers (``LANDSCAPES``: per-kernel roofline costs of
made-up accelerators, none in the transfer model's family) plus ``--noise`` relative
measurement noise, and runs what ``predictor adapt`` runs - active selection among the
product's ``CANDIDATES`` uniform subnets for a ``POPULATION`` sample, then ``adapt`` - and,
for comparison, ``adapt`` on random candidates. Scored on ``--holdout`` other uniform
subnets against one noisy measurement each (as a user's check would be), with the ceiling
a perfect predictor would reach against that measurement.

    python experiments/predictor-transfer/transfer_synthetic.py SOURCE_PREDICTOR \
        [--noise 0.01] [--seeds 0,1,2] > out.json

Numbers only: no ONNX, no timing; deterministic by ``--seeds``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from study import COVERAGE_90, GOALS, calibrated, goals_met

from ofa_deploy.predictor.adapt import CANDIDATES
from ofa_deploy.predictor.learning_curve import score
from ofa_deploy.predictor.predictor import LatencyPredictor, accuracy_report
from ofa_deploy.predictor.transfer import POPULATION, adapt, population, selection_order
from ofa_deploy.profile.collect import holdout_subnets
from ofa_deploy.space import BlockSpec, Subnet

# A device: one kernel's time (s) is max(MACs / peak[kind], bytes / bandwidth) + launch (+ a
# fallback copy for the kinds listed); peaks in MAC/s, bandwidth in bytes/s, 2 bytes per
# element (fp16). Each block launches expand, depthwise, project, and with SE a pool and two
# small fully-connected kernels.
Device = dict


def _kernels(b: BlockSpec) -> list[tuple[str, float, float]]:
    """(kind, MACs, bytes) of each kernel one block launches."""
    a_in, a_out, e = b.size_in**2, b.size_out**2, 2.0
    out = [("pointwise", a_in * b.in_ch * b.mid, e * (a_in * (b.in_ch + b.mid) + b.in_ch * b.mid)),
           (f"depthwise{b.kernel}", a_out * b.mid * b.kernel**2,
            e * (a_in * b.mid + a_out * b.mid + b.mid * b.kernel**2)),
           ("pointwise", a_out * b.mid * b.out_ch, e * (a_out * (b.mid + b.out_ch) + b.mid * b.out_ch))]
    if b.se_hidden:
        out += [("pool", a_out * b.mid, e * a_out * b.mid),
                ("fc", 2 * b.mid * b.se_hidden, e * 2 * b.mid * b.se_hidden), ("fc", 0.0, e * b.mid)]
    return out


def _kernel_time(dev: Device, kind: str, macs: float, nbytes: float) -> float:
    peak = dev["peak"].get(kind, dev["peak"]["default"])
    t = max(macs / peak, nbytes / dev["bandwidth"]) + dev["launch"]
    return t + dev.get("fallback", {}).get(kind, 0.0)


LANDSCAPES: dict[str, Device] = {
    # a data-centre GPU at 32x32 input: every kernel is launch-bound
    "gpu-launch": {"peak": {"pointwise": 50e12, "default": 2e12}, "bandwidth": 2e12, "launch": 6e-6},
    # an embedded GPU: pointwise convs compute-bound, depthwise memory-bound, slower launches
    "edge-roofline": {"peak": {"pointwise": 0.5e12, "depthwise3": 0.04e12, "depthwise5": 0.035e12,
                               "depthwise7": 0.03e12, "default": 0.05e12}, "bandwidth": 25e9, "launch": 20e-6},
    # an NPU: fast 1x1 and 3x3, but 5x5/7x7 depthwise and SE's pool fall back to a CPU (copy both ways)
    "npu-fallback": {"peak": {"pointwise": 2e12, "depthwise3": 0.5e12, "depthwise5": 2e9, "depthwise7": 2e9,
                              "pool": 1e9, "default": 0.2e12}, "bandwidth": 10e9, "launch": 4e-6,
                     "fallback": {"depthwise5": 60e-6, "depthwise7": 60e-6, "pool": 60e-6}},
}


# Not a device: the transfer model's own family (the source's prediction x 1.7 + 0.03 ms per
# block + 0.4 ms per MMAC of 7x7 depthwise, as in tests/test_predictor_transfer.py), where
# the model is exactly right and only the measurements' noise and the 20 draws limit it.
IN_FAMILY = "in-family"


def latency_ms(source: LatencyPredictor, name: str) -> Callable[[Subnet], float]:
    space = source.space
    if name == IN_FAMILY:
        feat = source._feat
        blocks = np.array([op == "block" for op in feat.physics_ops], dtype=float)
        dw7 = np.array([op == "depthwise7" for op in feat.physics_ops], dtype=float)
        return lambda sub: float(1.7 * source.predict([sub])[0]
                                 + (feat.counts([sub]) @ feat.physics @ (0.03 * blocks + 0.4 * dw7))[0])
    dev = LANDSCAPES[name]
    fixed = 12 * dev["launch"]  # stem, first block and head: the same in every subnet
    return lambda sub: 1e3 * (fixed + sum(_kernel_time(dev, *k) for b in space.block_specs(sub) for k in _kernels(b)))


def _summary(rep: dict) -> dict:
    return {k: round(float(rep[k]), 4) for k in ("within_10pct", "within_5pct", "spearman", "coverage_90")
            if k in rep}


def run(source: LatencyPredictor, name: str, noise: float, sizes: Sequence[int], holdout: int,
        seed: int, random_repeats: int) -> dict:
    space = source.space
    f = latency_ms(source, name)
    rng = np.random.default_rng(seed)
    cand = holdout_subnets(space, CANDIDATES, seed + 1)
    held = holdout_subnets(space, holdout, seed + 2, exclude=cand)
    cand_true = np.array([f(s) for s in cand])
    held_true = np.array([f(s) for s in held])
    cand_ms = cand_true * np.exp(noise * rng.standard_normal(len(cand)))
    held_ms = held_true * np.exp(noise * rng.standard_normal(len(held)))
    pop = population(space, POPULATION, seed)
    order = selection_order(source, cand, pop, max(sizes))
    points = []
    for n in sizes:
        row: dict = {"n": n}
        runs = [("adapt", order[:n])] + [(f"random{r}", random.Random(seed + 100 + r).sample(range(len(cand)), n))
                                         for r in range(random_repeats)]
        scores = {}
        for label, idx in runs:
            model = adapt(source, [cand[i] for i in idx], cand_ms[idx], target=name, statistic="min", pop=pop)
            scores[label] = _summary(score(model, held, held_ms))
        row["adapt"] = scores["adapt"]
        rand = [scores[f"random{r}"] for r in range(random_repeats)]
        row["adapt_random_mean"] = {k: round(float(np.mean([s[k] for s in rand])), 4) for k in rand[0]}
        points.append(row)
    return {"landscape": name, "device": LANDSCAPES.get(name, IN_FAMILY), "noise_sd": noise,
            "latency_ms": {"min": round(float(held_true.min()), 4), "median": round(float(np.median(held_true)), 4),
                           "max": round(float(held_true.max()), 4),
                           "spread_sd_pct": round(float(np.std(np.log(held_true))) * 100, 2)},
            "source_only": _summary(accuracy_report(held_ms, np.asarray(source.predict(held), dtype=float))),
            "ceiling": _summary(accuracy_report(held_ms, held_true)),
            "points": points}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--noise", type=float, default=0.01, help="relative measurement noise (sd of the log)")
    ap.add_argument("--sizes", default="5,10,20,50")
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--seeds", default="0", help="comma-separated: each draws its own candidates, held-out "
                    "subnets and noise")
    ap.add_argument("--random-repeats", type=int, default=5)
    ap.add_argument("--landscapes", default=",".join(LANDSCAPES), help=f"of {', '.join([*LANDSCAPES, IN_FAMILY])}")
    args = ap.parse_args()
    t0 = time.perf_counter()
    source = LatencyPredictor.load(args.source)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [{**run(source, name, args.noise, sizes, args.holdout, int(seed), args.random_repeats),
             "seed": int(seed)} for seed in args.seeds.split(",") for name in args.landscapes.split(",")]
    print(json.dumps({"source": str(args.source), "candidates": CANDIDATES, "population": POPULATION,
                      "goals_at_20": _goals(runs), "runs": runs, "wall_s": round(time.perf_counter() - t0, 1)},
                     indent=1))


def _goals(runs: Sequence[dict]) -> dict:
    """Issue 16's goals after 20 measured subnets, per run, and how many runs met each."""
    rows = []
    for r in runs:
        a = next((p["adapt"] for p in r["points"] if p["n"] == 20), None)
        if a is None:
            continue
        met = {**{f"{goal}>={GOALS[goal]}": ok for goal, ok in goals_met(a).items()},
               f"coverage_in_{round(COVERAGE_90[0] * 100)}_{round(COVERAGE_90[1] * 100)}": calibrated(a["coverage_90"])}
        rows.append({"landscape": r["landscape"], "seed": r["seed"], **a, "met": met,
                     "ceiling_spearman": r["ceiling"]["spearman"]})
    return {"runs": rows, "met": {k: sum(row["met"][k] for row in rows) for k in (rows[0]["met"] if rows else {})},
            "of": len(rows)}


if __name__ == "__main__":
    main()
