"""Core speed: cost-counting throughput, and supernet vs extracted forward time on CPU.

    python benchmarks/bench_core.py [--batch 64] [--repeats 20]

Prints one JSON object. Ratios are taken within this one run (these machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time


def cost_throughput(seconds: float = 2.0) -> dict:
    from ofa_deploy.buckets import sample_in_bucket
    from ofa_deploy.cost import macs
    from ofa_deploy.space import SearchSpace

    space = SearchSpace()
    rng = random.Random(0)
    subnets = [space.sample(rng) for _ in range(5000)]
    macs(space, subnets[0])  # builds the per-space tables once
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for s in subnets:
            macs(space, s)
        n += len(subnets)
    counted = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            macs(space, space.sample(rng))
        n += 1000
    sampled = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for bucket in (4, 6, 8, 10, 12, 14):
        for _ in range(10):
            sample_in_bucket(space, bucket, 0.5, rng)
    per_bucket_subnet_ms = (time.perf_counter() - start) / 60 * 1e3
    return {
        "macs_per_s": round(counted),
        "sample_and_macs_per_s": round(sampled),
        "sample_in_bucket_ms_mean": round(per_bucket_subnet_ms, 3),
    }


def forward_times(batch: int, repeats: int) -> dict:
    import torch

    from ofa_deploy.nn import Supernet
    from ofa_deploy.space import SearchSpace

    torch.manual_seed(0)
    space = SearchSpace()
    net = Supernet(space).eval()
    x = torch.randn(batch, 3, 32, 32)
    results = {}

    def best_of(fn) -> float:
        with torch.inference_mode():
            for _ in range(3):
                fn()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    for name in ("smallest", "middle", "largest"):
        subnet = getattr(space, name)()
        net.set_active(subnet)
        static = net.extract(subnet)
        t_super = best_of(lambda: net(x))
        t_static = best_of(lambda: static(x))
        results[name] = {
            "supernet_ms": round(t_super * 1e3, 3),
            "extracted_ms": round(t_static * 1e3, 3),
            "supernet_over_extracted": round(t_super / t_static, 3),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    print(json.dumps({
        "benchmark": "core",
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
        "cost": cost_throughput(),
        "forward_median_ms": {"batch": args.batch, **forward_times(args.batch, args.repeats)},
    }, indent=2))


if __name__ == "__main__":
    main()
