"""The deployment half of issue 32's check, at ImageNet size: an imported w1.2 OFA supernet at
224x224 on a generated ImageNet-style folder goes through ``export --precision int8``,
``catalog build`` (int8 finalists) and ``catalog select``, each as the CLI runs it.

Writes one ImageNet-style folder (``tests.stream_fixtures``: 20 Fashion-MNIST classes as JPEGs
of 160-320 px), imports a seeded random ``OFAMobileNetV3`` (MIT's ``ofa`` package) with
``import-ofa --data-dir``, then runs the commands, each in its own process, and prints JSON:
per command its wall time, and what its output says (the int8 file's Q/DQ node
count, ``model.json``'s preprocessing, the catalog's entries and the selection).

    nice -n 5 python benchmarks/bench_stream_deploy.py --val-per-class 10 --out results/stream/deploy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run(*args: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"ofa-deploy {' '.join(args)} failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return {"command": "ofa-deploy " + " ".join(args), "wall_s": round(time.perf_counter() - started, 1),
            "stdout": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import onnx

    from ofa_deploy.io import atomic_write_json, json_text
    from tests.stream_fixtures import imported_run, make_imagenet_folder

    started = time.perf_counter()
    steps = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-deploy-") as tmp_name:
        tmp = Path(tmp_name)
        folder = make_imagenet_folder(tmp / "data", classes=20, train_per_class=args.train_per_class,
                                      val_per_class=args.val_per_class, sizes=(160, 320))
        run_dir = imported_run(tmp, classes=20, size=224, width=1.2)
        common = ["--data-dir", str(folder), "--workers", "1"]
        middle = "54-54-54_54-54-54_54-54-54_54-54-54_54-54-54"
        export = _run("export", str(run_dir), "--subnet", middle, "--target", "jetson-orin", "--precision",
                      "int8", "--calibration-images", "64", "--bn-images", "64", *common,
                      "--out", str(tmp / "int8"))
        sidecar = json.loads((tmp / "int8" / "model.json").read_text())
        model = onnx.load(str(tmp / "int8" / "model.onnx"))
        ops = [n.op_type for n in model.graph.node]
        export["result"] = {"quantize_nodes": ops.count("QuantizeLinear"),
                            "dequantize_nodes": ops.count("DequantizeLinear"),
                            "preprocessing": sidecar.get("preprocessing"), "accuracy": sidecar.get("accuracy"),
                            "bn": sidecar.get("bn"), "precision": sidecar.get("precision")}
        steps.append(export)
        catalog = tmp / "catalog.db"
        build = _run("catalog", "build", str(run_dir), "--target", "cpu", "--catalog", str(catalog), "--n", "4",
                     "--finalists", "2", "--calib-images", "64", "--precision", "int8", "--calibration-images",
                     "64", *common, "--json")
        build["result"] = json.loads(build["stdout"])
        steps.append(build)
        select = _run("catalog", "select", "--catalog", str(catalog), "--target", "cpu", "--max-mflops", "500",
                      "--json")
        select["result"] = json.loads(select["stdout"])
        steps.append(select)
    for step in steps:
        step.pop("stdout")
    report = {
        "benchmark": "bench_stream_deploy",
        "what": "imported w1.2 OFA supernet (seeded random, MIT's ofa package) at 224x224, 20 classes, on a generated "
                "ImageNet-style folder: export int8 (TensorRT flavour), catalog build (int8), catalog select",
        "val_per_class": args.val_per_class, "train_per_class": args.train_per_class,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "steps": steps,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, report)
    print(json_text(report, indent=2))


if __name__ == "__main__":
    main()
