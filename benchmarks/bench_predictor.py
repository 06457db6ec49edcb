"""Prediction rate of latency predictors: subnets per second for the point prediction and
for the prediction with its uncertainty (interval), on a fixed seeded draw of subnets.

    python benchmarks/bench_predictor.py PREDICTOR.json [PREDICTOR.json ...] [--n 50000] [--repeats 3]

The best of ``--repeats`` timings is reported, per wall clock and per process CPU time (the
machine is shared; numpy is kept to one thread by OMP_NUM_THREADS=1). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ofa_deploy.predictor.predictor import LatencyPredictor
from ofa_deploy.profile.collect import holdout_subnets


def _rate(call, n: int, repeats: int) -> dict:
    """Best wall-clock and best process-CPU rate: on a machine shared with other work the
    CPU time is what the prediction itself costs."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return {"wall": round(n / wall), "cpu": round(n / cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictors", type=Path, nargs="+")
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = []
    for path in args.predictors:
        model = LatencyPredictor.load(path)
        subs = holdout_subnets(model.space, args.n, 12345)
        row = {"predictor": str(path), "target": model.target, "n": args.n,
               "uncertainty": model.uncertainty.kind if model.uncertainty else None,
               "predict_per_s": _rate(lambda: model.predict(subs), args.n, args.repeats)}
        if model.uncertainty is not None:
            row["interval_per_s"] = _rate(lambda: model.interval(subs, 0.9), args.n, args.repeats)
        out.append(row)
    print(json.dumps({"results": out, "loadavg": os.getloadavg(), "cpu_count": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
