"""Batch-1, one-thread ONNX Runtime latency of several ONNX files, interleaved, as ratios to the first.

Per round every file runs ``--per-round`` times in turn (the round's median kept), so a change
in the machine's speed hits every file alike; the ratio to the first file is taken per round
and summarised by its median and quartiles over ``--rounds`` rounds, beside the ratio of the
pooled medians. On a shared VM the machine's speed drifts by tens of percent within minutes:
``--repeats`` runs the whole measurement again (fresh sessions) so the spread between runs
shows too. Prints one JSON document.

    python benchmarks/bench_onnx_latency.py fp32/model.onnx int8/model.onnx --rounds 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(files: list[Path], rounds: int, per_round: int, warmup: int) -> dict[str, dict[str, float]]:
    from ofa_deploy.export.to_onnx import ort_session

    sessions = [ort_session(path, threads=1) for path in files]
    feeds = []
    for s in sessions:
        inp = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feeds.append({inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})
    for s, feed in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, feed)
    per = np.zeros((rounds, len(files)))
    for r in range(rounds):
        for i, (s, feed) in enumerate(zip(sessions, feeds)):
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - t0)
            per[r, i] = np.median(times)
    ratio = per / per[:, :1]
    return {str(path): {"p50_ms": 1e3 * float(np.median(per[:, i])),
                        "ratio_pooled": float(np.median(per[:, i]) / np.median(per[:, 0])),
                        "ratio_per_round_median": float(np.median(ratio[:, i])),
                        "ratio_per_round_q1": float(np.percentile(ratio[:, i], 25)),
                        "ratio_per_round_q3": float(np.percentile(ratio[:, i], 75))}
            for i, path in enumerate(files)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", type=Path, nargs="+", help="ONNX files; ratios are to the first")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if min(args.rounds, args.per_round, args.repeats) < 1 or args.warmup < 0 or args.rounds * args.per_round > 10**7:
        sys.exit("bench_onnx_latency.py: --rounds, --per-round, --repeats must be >= 1 (rounds x per-round "
                 "at most 10^7), --warmup >= 0")
    for path in args.files:
        if not path.is_file():
            sys.exit(f"bench_onnx_latency.py: {path}: not a file")
    started = time.perf_counter()
    runs = []
    try:
        for _ in range(args.repeats):
            runs.append(measure(args.files, args.rounds, args.per_round, args.warmup))
    except Exception as exc:  # onnxruntime refuses a file: one line, not its traceback
        sys.exit(f"bench_onnx_latency.py: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    import onnxruntime as ort

    print(json.dumps({
        "benchmark": "ONNX Runtime CPU provider, batch 1, one thread, interleaved rounds; ratios to the first file",
        "command": " ".join(["python", *sys.argv]),
        "rounds": args.rounds, "per_round": args.per_round, "repeats": runs,
        "wall_s": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "onnxruntime": ort.__version__},
    }, indent=1))


if __name__ == "__main__":
    main()
