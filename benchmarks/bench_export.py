"""Export benchmark: ONNX export time per subnet for each torch.onnx exporter, and ONNX
Runtime CPU latency at batch 1 against PyTorch eager for the same subnet.

    python benchmarks/bench_export.py [--random 2] [--threads 1] [--min-time 1.0]

Prints one JSON document. Per subnet: export seconds and parity (max |logit diff| vs
PyTorch) for ``torchscript`` (dynamo=False) and ``dynamo`` (dynamo=True), then median and
p90 latency of ONNX Runtime (CPUExecutionProvider) and of PyTorch eager
(``torch.inference_mode``), both with ``--threads`` intra-op threads, and the ratio
torch / onnxruntime (> 1: ONNX Runtime is faster). The exporters' summary gives the mean
export time of each and their ratio, measured in this one run. Weights are random: export
time and latency do not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ofa_deploy.cost import macs
from ofa_deploy.export.sidecar import library_versions
from ofa_deploy.export.to_onnx import check_parity, export_onnx
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace


def _time(fn, *, warmup_s: float, min_time_s: float, min_iterations: int) -> dict:
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_iterations or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n": len(times),
            "cov": float(ms.std() / ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=2, help="random subnets besides smallest/middle/largest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per latency measurement")
    parser.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds per measurement")
    parser.add_argument("--min-iterations", type=int, default=200)
    parser.add_argument("--exporters", default="torchscript,dynamo")
    args = parser.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = SearchSpace(in_channels=args.in_channels, num_classes=10)
    supernet = Supernet(space).eval()
    rng = random.Random(args.seed)
    subnets = [("smallest", space.smallest()), ("middle", space.middle()), ("largest", space.largest())]
    subnets += [(f"random-{i}", space.sample(rng)) for i in range(args.random)]
    exporters = [e for e in args.exporters.split(",") if e]
    images = torch.randn(64, args.in_channels, 32, 32)
    x1 = images[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, subnet in subnets:
            net = supernet.extract(subnet).eval()
            row = {"subnet": label, "text": str(subnet), "mflops": round(macs(space, subnet) / 1e6, 3),
                   "export": {}}
            onnx_path = None
            for exporter in exporters:
                path = Path(tmp) / f"{label}-{exporter}.onnx"
                start = time.perf_counter()
                info = export_onnx(net, path, input_shape=(args.in_channels, 32, 32), opset=17, dynamic_batch=True,
                                   exporter=exporter)
                total = time.perf_counter() - start
                parity = check_parity(path, net, images)
                row["export"][exporter] = {"seconds": round(info["seconds"], 3), "with_checker_s": round(total, 3),
                                           "opset": info["opset"], "max_abs_diff": parity["max_abs_diff"],
                                           "bytes": path.stat().st_size}
                onnx_path = onnx_path or path
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            feed = {"input": x1.numpy()}
            ort_lat = _time(lambda: session.run(None, feed), warmup_s=args.warmup, min_time_s=args.min_time,
                            min_iterations=args.min_iterations)

            def eager() -> None:
                with torch.inference_mode():
                    net(x1)

            torch_lat = _time(eager, warmup_s=args.warmup, min_time_s=args.min_time,
                              min_iterations=args.min_iterations)
            row["latency_batch1"] = {"onnxruntime": ort_lat, "torch_eager": torch_lat,
                                     "torch_over_onnxruntime": round(torch_lat["median_ms"] / ort_lat["median_ms"], 3)}
            rows.append(row)
            print(f"{label}: done", file=sys.stderr)

    summary = {}
    for exporter in exporters:
        summary[exporter] = {"mean_export_s": round(statistics.mean(r["export"][exporter]["seconds"] for r in rows), 3),
                             "worst_max_abs_diff": max(r["export"][exporter]["max_abs_diff"] for r in rows)}
    if {"torchscript", "dynamo"} <= set(exporters):
        summary["dynamo_over_torchscript"] = round(summary["dynamo"]["mean_export_s"]
                                                   / summary["torchscript"]["mean_export_s"], 2)
    summary["median_torch_over_onnxruntime"] = statistics.median(
        r["latency_batch1"]["torch_over_onnxruntime"] for r in rows)
    print(json.dumps({
        "benchmark": "export",
        "threads": args.threads,
        "environment": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "machine": platform.machine(),
                        **library_versions("torch", "onnx", "onnxruntime", "onnxscript")},
        "subnets": rows,
        "summary": summary,
    }, indent=2))


if __name__ == "__main__":
    main()
