"""Benchmarks of the profiling layer; prints one JSON object.

* ``predictor_rate``: predictions per second of a fitted latency predictor, batched
  (what a search does) and one subnet per call;
* ``timer_overhead_us``: what the protocol's timing loop adds per iteration (no-op step);
* ``repeatability``: the same ONNX subnet profiled in ``--repeats`` separate runs under
  the cpu target's protocol: spread of p50 across runs next to each run's own spread.

Usage: python benchmarks/bench_profile.py [--repeats 3] [--min-time-s 1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def predictor_rate() -> dict:
    from ofa_deploy.predictor.features import Featurizer
    from ofa_deploy.predictor.predictor import fit
    from ofa_deploy.profile.collect import design_subnets, holdout_subnets
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    train = design_subnets(space, 100, seed=0)
    feat = Featurizer(space)
    y = 0.1 + feat.counts(train) @ np.random.default_rng(0).uniform(0.005, 0.05, len(feat.keys))
    model = fit(space, train, y, target="cpu")
    subs = holdout_subnets(space, 5000, seed=1)
    t0 = time.perf_counter()
    model.predict(subs)
    batched = len(subs) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s in subs[:1000]:
        model.predict(s)
    single = 1000 / (time.perf_counter() - t0)
    return {"batched_per_s": round(batched), "single_per_s": round(single)}


def timer_overhead() -> float:
    from ofa_deploy.profile.protocol import Protocol, measure

    r = measure(lambda: None, Protocol(warmup_s=0.05, min_iterations=20000, min_time_s=0.2, max_retries=0))
    return r["latency_ms"]["p50"] * 1e3


def repeatability(repeats: int, min_time_s: float) -> dict:
    import torch

    from ofa_deploy.nn import Supernet
    from ofa_deploy.profile import Protocol, profile_model
    from ofa_deploy.space import SearchSpace
    from ofa_deploy.targets import load_target

    torch.set_num_threads(1)
    space = SearchSpace(in_channels=1)
    net = Supernet(space).extract(space.middle()).eval()
    target = load_target("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "middle.onnx"
        torch.onnx.export(net, torch.zeros(1, 1, 32, 32), str(path), dynamo=False, opset_version=target.opset)
        protocol = Protocol.from_target(target, min_time_s=min_time_s)
        runs = [profile_model(path, target, protocol=protocol) for _ in range(repeats)]
    p50 = [r["latency_ms"]["p50"] for r in runs]
    return {
        "model": f"middle subnet {space.middle()}",
        "p50_ms": p50,
        "p50_spread_across_runs_pct": 100 * (max(p50) - min(p50)) / min(p50),
        "within_run_cov_pct": [100 * r["cov"] for r in runs],
        "within_run_p90_minus_p50_ms": [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in runs],
        "unstable": [r["unstable"] for r in runs],
        "n": [r["n"] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time-s", type=float, default=1.0)
    args = parser.parse_args()
    from ofa_deploy.profile.environment import environment

    out = {
        "predictor_rate": predictor_rate(),
        "timer_overhead_us": timer_overhead(),
        "repeatability": repeatability(args.repeats, args.min_time_s),
        "environment": environment(threads=1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
