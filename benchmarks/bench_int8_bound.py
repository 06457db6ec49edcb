"""int8 with and without an accuracy bound, both flavours, over subnets across the buckets (issue 31).

For each subnet (smallest, largest, and one random subnet per paper MFLOPs bucket, drawn by
``--seed``) this exports, with ``export_run`` as ``ofa-deploy export`` does:

* fp32 for the ``cpu`` target (ONNX Runtime),
* int8, ONNX Runtime flavour (``cpu``) and TensorRT flavour (``jetson-orin``), plain and with
  ``--max-drop P``,

and measures each file's top-1 in ONNX Runtime (CPU provider, one thread) on the bound's two
parts of the data: the validation part (the run's held-out split, else a seeded half of the
test split) and the test part the accuracy is reported on (the rest). For the bounded files it
also records the calibration the bound chose (method, images, every candidate's validation
drop) and the precision of the reverted layers (fp16 for the TensorRT flavour). Then ONNX Runtime latency
at batch 1 on one thread of the ONNX Runtime-flavour files (fp32, plain int8, bounded int8),
interleaved in one run (rounds of each file in turn, the median per file). Prints one JSON
document.

    python benchmarks/bench_int8_bound.py RUN --max-drop 0.5 [--buckets 4] [--seed 0] > out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from ofa_deploy.export.to_onnx import ort_session, run_onnx

    return float((run_onnx(ort_session(path), x).argmax(1) == y).mean())


def latency(files: dict[str, Path], image: np.ndarray, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    """Batch-1, one-thread ONNX Runtime latency of each file, interleaved: ``rounds`` rounds,
    each running every file ``per_round`` times in turn; per file, the median of its times."""
    import onnxruntime as ort

    sessions = {}
    for name, path in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = {name: s.get_inputs()[0].name for name, s in sessions.items()}
    for name, s in sessions.items():  # warm-up
        for _ in range(20):
            s.run(None, {inp[name]: image})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(None, {inp[name]: image})
                times[name].append(time.perf_counter() - t)
    return {name: {"p50_ms": 1e3 * float(np.median(t)), "p90_ms": 1e3 * float(np.percentile(t, 90)), "n": len(t)}
            for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--buckets", type=int, default=4, help="random subnets, one per bucket, spread over the buckets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--middle", action="store_true", help="also the middle subnet (every choice its middle one)")
    ap.add_argument("--only", default=None, help="comma-separated names (smallest, middle, largest, bucket-N): "
                    "measure only those (e.g. a latency rerun on a quiet machine)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=10)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from ofa_deploy.buckets import paper_buckets, sample_in_bucket
    from ofa_deploy.export.images import export_images
    from ofa_deploy.export.workflow import export_run
    from ofa_deploy.run import read_config, space_from_config

    started = time.perf_counter()
    config = read_config(args.run)
    space = space_from_config(config)
    buckets = paper_buckets(space)
    picks = np.linspace(0, len(buckets) - 1, args.buckets).round().astype(int)
    import random

    rng = random.Random(args.seed)
    subnets = [("smallest", space.smallest()), ("largest", space.largest())]
    if args.middle:
        subnets.insert(1, ("middle", space.middle()))
    subnets += [(f"bucket-{buckets[i]:.0f}", sample_in_bucket(space, buckets[i], 0.5, rng)) for i in picks]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _ in subnets}
        if unknown:
            sys.exit(f"bench_int8_bound.py: --only: no subnet named {', '.join(sorted(unknown))}")
        subnets = [(name, sub) for name, sub in subnets if name in wanted]
    data = export_images(config, seed=args.seed, validation=True)
    assert data.validation is not None and data.eval is not None
    vx, vy = (t.numpy() for t in data.validation)
    tx, ty = (t.numpy() for t in data.eval)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-bound-") as work:
        for name, sub in subnets:
            row: dict = {"name": name, "subnet": str(sub)}
            files = {}
            variants = [("fp32", "cpu", "fp32", None)]
            for flavour, target in (("onnxruntime", "cpu"), ("tensorrt", "jetson-orin")):
                variants += [(f"int8-{flavour}", target, "int8", None),
                             (f"int8-{flavour}-bound", target, "int8", args.max_drop)]
            for label, target, precision, bound in variants:
                print(f"{name}: {label}", file=sys.stderr)
                out = Path(work) / name / label
                t0 = time.perf_counter()
                try:
                    made = export_run(args.run, subnet=sub, target=target, precision=precision, out=out,
                                      seed=args.seed, max_drop=bound, measure_accuracy=True)
                except Exception as exc:  # noqa: BLE001 - a bound that cannot be met is a result
                    row[label] = {"error": str(exc)}
                    continue
                sc = made.exports[0][2]
                rec = {"val_top1": top1(out / "model.onnx", vx, vy), "test_top1": top1(out / "model.onnx", tx, ty),
                       "export_s": round(time.perf_counter() - t0, 1)}
                if sc.get("bound"):
                    b = sc["bound"]
                    rec.update(bound_validation_drop=b["validation"]["drop_points"], reverted_nodes=b["reverted_count"],
                               reverted_layers=b["reverted_layers"], quantized_nodes=b["quantized_nodes"],
                               bound_test_drop=(b.get("test") or {}).get("drop_points"), bound_s=b["seconds"],
                               reverted_precision=b.get("reverted_precision"),
                               calibration=(b.get("calibration") or {}).get("chosen"),
                               calibration_candidates=[
                                   {k: c.get(k) for k in ("method", "images", "drop_points", "drop_se_points",
                                                          "mean_abs_logit_diff", "seconds")}
                                   for c in (b.get("calibration") or {}).get("candidates", [])],
                               calibration_s=(b.get("calibration") or {}).get("seconds"))
                row[label] = rec
                files[label] = out / "model.onnx"
            base = row["fp32"]
            for label in list(row):
                if label.startswith("int8") and "val_top1" in row[label]:
                    row[label]["val_drop_points"] = round(100 * (base["val_top1"] - row[label]["val_top1"]), 2)
                    row[label]["test_drop_points"] = round(100 * (base["test_top1"] - row[label]["test_top1"]), 2)
            timed = {k: v for k, v in files.items() if k.startswith(("fp32", "int8-onnxruntime"))}
            lat = latency(timed, np.ascontiguousarray(tx[:1]), args.rounds, args.per_round)
            for label, stats in lat.items():
                row[label]["latency"] = stats
                row[label]["latency_vs_fp32"] = round(stats["p50_ms"] / lat["fp32"]["p50_ms"], 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    import onnxruntime

    print(json.dumps({
        "benchmark": "int8 with and without --max-drop, both flavours (issue 31)",
        "command": "python " + " ".join(sys.argv),
        "run": str(args.run.resolve()), "dataset": config["data"]["dataset"], "max_drop": args.max_drop,
        "validation": data.validation_source, "test_images": int(len(ty)),
        "accuracy": "top-1, ONNX Runtime CPU provider, one thread; drops in points vs the fp32 file on the same images",
        "latency": "ONNX Runtime CPU provider, batch 1, one thread, interleaved rounds; ms",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor(), "onnxruntime": onnxruntime.__version__},
        "wall_s": round(time.perf_counter() - started, 1),
        "subnets": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
