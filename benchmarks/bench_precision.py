"""Precision benchmark: int8 and fp16 ONNX against fp32 for subnets of a trained run -
ONNX Runtime CPU latency (batch 1, one intra-op thread, the three models of a subnet timed
interleaved in one process) and top-1 accuracy on the same seeded test images.

    python benchmarks/bench_precision.py RUN [--test-images 2000] [--calibration-images 512]
        [--method minmax] [--rounds 40] [--per-round 25] [--investigate] [--out DIR]

Subnets: smallest, middle, largest and one seeded draw in each of the 6, 10 and 12 MFLOPs
buckets (6 in all, 3.9-15.2 MFLOPs). Each is exported three times with the library
(``export_subnet``: BN recalibrated on 2,000 training images, int8 calibrated on
``--calibration-images`` other training images) for the ``cpu`` target; accuracy is ONNX
Runtime's on the same ``--test-images`` test images for every precision. Latency: after a
warm-up, ``--rounds`` rounds each run every model ``--per-round`` times in turn, so the
machine's drift hits all three alike; reported per model are the median and minimum of the
single-call times, and the ratios to fp32. ``--investigate`` adds, for the largest subnet,
the int8 flavours not chosen (TensorRT's symmetric int8, ONNX Runtime's QOperator format)
and ORT's extended instead of full graph optimisation, timed in the same interleaved way.
``--compare-methods`` quantizes smallest, middle and largest again with each calibration
method (MinMax, Entropy, Percentile; same calibration images) and reports their top-1.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ofa_deploy.buckets import sample_in_bucket
from ofa_deploy.cost import macs
from ofa_deploy.export import export_subnet
from ofa_deploy.export.sidecar import library_versions
from ofa_deploy.run import read_config
from ofa_deploy.weights import load_supernet

PRECISIONS = ("fp32", "fp16", "int8")


def _session(path: Path, level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved(models: dict[str, tuple[Path, str]], x: np.ndarray, *, rounds: int, per_round: int,
                warmup_s: float) -> dict[str, dict]:
    """Single-call latency (ms) of every model, timed in turns within each round."""
    sessions = {name: _session(path, level) for name, (path, level) in models.items()}
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        for name, s in sessions.items():
            s.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            feed = feeds[name]
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(None, feed)
                times[name].append(time.perf_counter() - t)
    out = {}
    for name, values in times.items():
        ms = np.array(values) * 1e3
        out[name] = {"p50_ms": float(np.median(ms)), "min_ms": float(ms.min()), "p90_ms": float(np.percentile(ms, 90)),
                     "n": int(ms.size)}
    return out


def _qoperator(fp32: Path, out: Path, calibration: np.ndarray, method: str) -> None:
    """ONNX Runtime's QOperator format (QLinearConv etc. in the file), U8S8 7-bit weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ofa_deploy.export.precision import _Images, _quiet

    with tempfile.TemporaryDirectory() as work, _quiet():
        prepared = Path(work) / "p.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Images(calibration, "input", 32, False),
                        quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile}[method])


def _top1(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from ofa_deploy.export.to_onnx import ort_session, run_onnx

    return float((run_onnx(ort_session(path), images).argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--investigate", action="store_true")
    parser.add_argument("--compare-methods", action="store_true")
    parser.add_argument("--subnets", default=None, help="comma-separated subset of smallest,bucket-6,middle,"
                        "bucket-10,bucket-12,largest [default: all six]")
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="fp32 is always included")
    parser.add_argument("--out", type=Path, default=None, help="keep the exports here [default: a temporary dir]")
    args = parser.parse_args()

    torch.set_num_threads(1)
    from ofa_deploy.data import load_dataset

    start = time.perf_counter()
    config = read_config(args.run)
    supernet, _ = load_supernet(args.run)
    space = supernet.space
    data = config["data"]
    data_dir = args.data_dir or data.get("data_dir")
    from ofa_deploy.data import dataset_info

    wanted = min(max(2000, args.calibration_images), dataset_info(data["dataset"]).train_size)
    train = load_dataset(data["dataset"], "train", data_dir=data_dir, subset=wanted, seed=args.seed)
    test = load_dataset(data["dataset"], "test", data_dir=data_dir, subset=args.test_images, seed=args.seed)
    rng = random.Random(args.seed)
    subnets = [("smallest", space.smallest()), ("bucket-6", sample_in_bucket(space, 6, 0.5, rng)),
               ("middle", space.middle()), ("bucket-10", sample_in_bucket(space, 10, 0.5, rng)),
               ("bucket-12", sample_in_bucket(space, 12, 0.5, rng)), ("largest", space.largest())]
    if args.subnets:
        wanted_subnets = args.subnets.split(",")
        subnets = [(label, sub) for label, sub in subnets if label in wanted_subnets]
    precisions = ["fp32"] + [p for p in args.precisions.split(",") if p in PRECISIONS and p != "fp32"]
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-precision-"))
    x1 = test.images[:1].numpy()
    rows = []
    for label, sub in subnets:
        models, row = {}, {"subnet": label, "text": str(sub), "mflops": round(macs(space, sub) / 1e6, 3)}
        for precision in precisions:
            where = root / f"{label}-{precision}"
            t = time.perf_counter()
            sidecar = export_subnet(supernet, sub, "cpu", where, calib_images=train.images,
                                    parity_images=test.images[:256], run_dir=args.run, bn_images=2000,
                                    calibration_count=args.calibration_images, seed=args.seed,
                                    eval_data=(test.images, test.labels), precision=precision,
                                    calibration_method=args.method, overwrite=True)
            acc = sidecar["accuracy"]
            row[precision] = {"top1": acc["top1"], "drop_points": acc["drop_points"],
                              "vs_fp32": {k: sidecar["precision_parity"][k] for k in
                                          ("top1_agreement", "max_abs_diff")},
                              "export_s": round(time.perf_counter() - t, 1),
                              "onnx_bytes": sidecar["files"]["model.onnx"]["bytes"]}
            models[precision] = (where / "model.onnx", "all")
        if args.compare_methods and label in ("smallest", "middle", "largest"):
            from ofa_deploy.export.precision import CALIBRATION_METHODS, to_int8

            calib = np.load(root / f"{label}-int8" / "calibration.npy")
            fp32 = root / f"{label}-fp32" / "model.onnx"
            x_all, y_all = test.images.numpy(), test.labels.numpy()
            row["int8_top1_by_method"] = {}
            for method in CALIBRATION_METHODS:
                t = time.perf_counter()
                path = root / f"{label}-int8-{method}.onnx"
                to_int8(fp32, path, calib, method=method)
                row["int8_top1_by_method"][method] = {"top1": _top1(path, x_all, y_all),
                                                      "seconds": round(time.perf_counter() - t, 1)}
        if args.investigate and label == "largest":
            calib = np.load(root / f"{label}-int8" / "calibration.npy")
            fp32 = root / f"{label}-fp32" / "model.onnx"
            extra = root / f"{label}-investigate"
            shutil.rmtree(extra, ignore_errors=True)
            extra.mkdir(parents=True)
            from ofa_deploy.export.precision import to_int8

            to_int8(fp32, extra / "int8_tensorrt.onnx", calib, method=args.method, for_tensorrt=True)
            _qoperator(fp32, extra / "int8_qoperator.onnx", calib, args.method)
            models["int8_tensorrt_flavour"] = (extra / "int8_tensorrt.onnx", "all")
            models["int8_qoperator"] = (extra / "int8_qoperator.onnx", "all")
            models["int8_extended_opt"] = (models["int8"][0], "extended")
            models["fp32_extended_opt"] = (fp32, "extended")
            x_all, y_all = test.images.numpy(), test.labels.numpy()
            row["investigate_top1"] = {name: _top1(models[name][0], x_all, y_all)
                                       for name in ("int8_tensorrt_flavour", "int8_qoperator")}
        lat = interleaved(models, x1, rounds=args.rounds, per_round=args.per_round, warmup_s=args.warmup)
        row["latency"] = lat
        row["ratio_p50_vs_fp32"] = {k: round(v["p50_ms"] / lat["fp32"]["p50_ms"], 3) for k, v in lat.items()}
        row["ratio_min_vs_fp32"] = {k: round(v["min_ms"] / lat["fp32"]["min_ms"], 3) for k, v in lat.items()}
        rows.append(row)
        print(json.dumps({"progress": label, "ratio_p50": row["ratio_p50_vs_fp32"],
                          "drop_int8": row.get("int8", {}).get("drop_points")}), file=sys.stderr, flush=True)
    largest = rows[-1]
    print(json.dumps({
        "benchmark": "precision",
        "run": str(Path(args.run).resolve()),
        "dataset": data["dataset"],
        "test_images": int(test.labels.shape[0]),
        "calibration_images": args.calibration_images,
        "calibration_method": args.method,
        "latency_protocol": {"batch": 1, "intra_op_threads": 1, "provider": "CPUExecutionProvider",
                             "rounds": args.rounds, "per_round": args.per_round, "interleaved": True},
        "subnets": rows,
        "goal_int8_le_0.7x_fp32_largest": {
            "ratio_p50": largest["ratio_p50_vs_fp32"]["int8"], "ratio_min": largest["ratio_min_vs_fp32"]["int8"],
            "met": largest["ratio_p50_vs_fp32"]["int8"] <= 0.7} if largest["subnet"] == "largest" and "int8" in
        largest["ratio_p50_vs_fp32"] else None,
        "max_int8_drop_points": max(r["int8"]["drop_points"] for r in rows) if "int8" in precisions else None,
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg()},
        "versions": library_versions("torch", "onnx", "onnxruntime", "onnxconverter-common"),
    }, indent=2))


if __name__ == "__main__":
    main()
