"""Population-evaluation speed: subnets per minute, channels-last (the default) against the
plain NCHW layout, measured in one process on the same subnets. Prints one JSON object.

    python benchmarks/bench_eval.py --per-bucket 2 --test 2000 --calib 500 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ofa_deploy.evaluate.population import evaluate_population, sample_population
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-bucket", type=int, default=2)
    parser.add_argument("--buckets", default="4,8,12")
    parser.add_argument("--test", type=int, default=2000, help="test images per subnet")
    parser.add_argument("--calib", type=int, default=500, help="BN calibration images per subnet")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace(in_channels=1)
    net = Supernet(space).to(args.device).eval()
    buckets = [float(b) for b in args.buckets.split(",")]
    population = sample_population(space, buckets, args.per_bucket, 0.5, 0)
    calib = torch.randn(args.calib, 1, 32, 32, device=args.device)
    images = torch.randn(args.test, 1, 32, 32, device=args.device)
    labels = torch.randint(0, 10, (args.test,), device=args.device)
    out = {"subnets": len(population), "test_images": args.test, "calib_images": args.calib,
           "threads": args.threads, "device": args.device, "torch": torch.__version__,
           "machine": platform.machine()}
    accuracies = {}
    for name, channels_last in (("channels_last", True), ("nchw", False), ("channels_last_again", True)):
        start = time.perf_counter()
        result = evaluate_population(net, space, buckets=buckets, calib_images=calib, test_images=images,
                                     test_labels=labels, calib_n=args.calib, subnets=population,
                                     channels_last=channels_last)
        out[f"{name}_subnets_per_minute"] = round(60 * len(population) / (time.perf_counter() - start), 2)
        accuracies[name] = [s["accuracy"] for s in result["subnets"]]
    out["speedup_channels_last_vs_nchw"] = round(
        min(out["channels_last_subnets_per_minute"], out["channels_last_again_subnets_per_minute"])
        / out["nchw_subnets_per_minute"], 2)
    out["same_accuracies"] = accuracies["channels_last"] == accuracies["nchw"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
