"""Where does the noise of a latency measurement come from: the samples, the inference
session, or the time of day?

For ``--subnets`` subnets whose ONNX files ``transfer_campaign.py`` exported (its
``--onnx-dir``), ``--sessions`` ONNX Runtime sessions are opened per subnet and all of them
are timed in ``--rounds`` interleaved bursts (fresh random order per round), as the
campaign does. Per statistic it reports the noise of one measurement (the sd of
log-ratios / sqrt(2), with the common scale removed) between

* ``halves``: the even and the odd bursts of the same session (samples and time drift
  within a few minutes; the session fixed);
* ``sessions``: two sessions of the same model measured over the same minutes (adds
  whatever a session fixes once: memory placement of its buffers, the kernels it picked).

Compared with ``measurement_repeatability.py`` (two campaigns hours apart), this splits the
between-campaign noise into its parts.

    python experiments/predictor-transfer/noise_sources.py ONNX_DIR [--subnets 20] [--sessions 2] [--rounds 6]
        [--burst-s 0.15] [--threads 1] [--batch 1] [--seed 0]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np

from ofa_deploy.profile.backends import onnxruntime_runner
from ofa_deploy.profile.protocol import Protocol, summarize, time_once

STATISTICS = ("min", "p50", "mean")


def _noise(a: np.ndarray, b: np.ndarray) -> dict:
    r = np.log(b / a)
    resid = (r - np.median(r)) / math.sqrt(2.0)
    return {"sd_pct": round(100 * float(np.std(resid, ddof=1)), 2),
            "robust_sd_pct": round(100 * 1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 2),
            "within_5pct": round(float(np.mean(np.abs(np.expm1(resid)) <= 0.05)), 3),
            "within_10pct": round(float(np.mean(np.abs(np.expm1(resid)) <= 0.10)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx_dir", type=Path)
    ap.add_argument("--subnets", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--burst-s", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.sessions < 2 or args.rounds < 2 or args.rounds % 2:
        ap.error("--sessions must be >= 2 and --rounds an even number >= 2")
    models = sorted(p for p in args.onnx_dir.glob("*/model.onnx")
                    if "int8" not in p.parent.name)
    random.Random(args.seed).shuffle(models)
    models = models[:args.subnets]
    started, t0, load0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter(), os.getloadavg()
    runners = {(m, s): onnxruntime_runner(path, threads=args.threads, batch=args.batch)
               for m, path in enumerate(models) for s in range(args.sessions)}
    burst = Protocol(warmup_s=0.02, min_iterations=2, min_time_s=args.burst_s, max_retries=0, max_time_s=60.0)
    samples = {key: [[] for _ in range(args.rounds)] for key in runners}
    keys = list(runners)
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        rng.shuffle(keys)
        for key in keys:
            samples[key][r] = time_once(runners[key].step, burst).host_ms
    for runner in runners.values():
        runner.close()

    def stat(xs: list[float], name: str) -> float:
        return summarize(xs)[name]

    out = {"started": started, "wall_s": round(time.perf_counter() - t0, 1), "loadavg_before": load0,
           "loadavg_after": os.getloadavg(), "models": len(models), "args": {k: str(v) for k, v in vars(args).items()},
           "noise": {}}
    for name in STATISTICS:
        even = np.array([stat(sum(samples[(m, 0)][0::2], []), name) for m in range(len(models))])
        odd = np.array([stat(sum(samples[(m, 0)][1::2], []), name) for m in range(len(models))])
        s0 = np.array([stat(sum(samples[(m, 0)], []), name) for m in range(len(models))])
        s1 = np.array([stat(sum(samples[(m, 1)], []), name) for m in range(len(models))])
        out["noise"][name] = {"halves": _noise(even, odd), "sessions": _noise(s0, s1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
