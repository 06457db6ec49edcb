"""Streaming evaluation of an imported OFA supernet: peak memory must not grow with the
number of val images.

Writes two ImageNet-style folders (20 classes of Fashion-MNIST, the last 10 mirrored, as
JPEGs of varied sizes upsampled to 160-320 px) that share one ``train/`` and hold N and 2N
``val/`` images, imports a seeded random w1.2 ``OFAMobileNetV3`` (MIT's ``ofa`` package) at
224x224 with 20 classes, and runs ``ofa-deploy eval --subnet S --data-dir DIR`` for 3
subnets on each folder, each in its own process; prints JSON: per folder and subnet the
wall time, images/s, accuracy and the process's peak RSS (``os.wait4``'s ``ru_maxrss``).

    nice -n 5 python benchmarks/bench_stream.py --n 500 --calib-n 64 --out results/stream/bench.json
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

SUBNETS = ("smallest", "54-54-54_54-54-54_54-54-54_54-54-54_54-54-54", "largest")


def _eval(run_dir: Path, folder: Path, subnet: str, calib_n: int, workers: int) -> dict:
    cmd = [sys.executable, "-m", "ofa_deploy", "eval", str(run_dir), "--data-dir", str(folder), "--subnet", subnet,
           "--calib-n", str(calib_n), "--workers", str(workers), "--device", "cpu", "--quiet", "--json",
           "--overwrite", "--name", "bench"]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        if status != 0:
            raise SystemExit(f"eval failed ({status}): {err[-2000:]}")
        out.seek(0)
        result = json.loads(out.read())
    entry = result["subnets"][0]
    return {"subnet": entry["text"], "mflops": entry["mflops"], "accuracy": entry["accuracy"],
            "val_images": result["val_images"], "calib_n": result["calib_n"], "bn_variance": result["bn_variance"],
            "wall_s": round(wall, 2), "eval_wall_s": result["wall_time_s"],
            "images_per_s": round((result["val_images"] + result["calib_n"]) / result["wall_time_s"], 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="val images of the smaller folder (the larger: 2N)")
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--calib-n", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from ofa_deploy.io import atomic_write_json, json_text
    from tests.stream_fixtures import imported_run, make_imagenet_folder

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp_name:
        tmp = Path(tmp_name)
        classes = 20
        big = make_imagenet_folder(tmp / "big", classes=classes, train_per_class=args.train_per_class,
                                   val_per_class=2 * args.n // classes, sizes=(160, 320))
        small = tmp / "small"
        (small / "val").mkdir(parents=True)
        (small / "train").symlink_to(big / "train")
        for cls in sorted((big / "val").iterdir()):  # the first half of each class of the big folder
            (small / "val" / cls.name).mkdir()
            for f in sorted(cls.iterdir())[: args.n // classes]:
                (small / "val" / cls.name / f.name).symlink_to(f)
        generated = time.perf_counter() - started
        run_dir = imported_run(tmp, classes=classes, size=224, width=1.2)
        rows = {}
        for label, folder in (("N", small), ("2N", big)):
            rows[label] = [_eval(run_dir, folder, s, args.calib_n, args.workers) for s in SUBNETS]
    peak = {label: max(r["peak_rss_mb"] for r in rs) for label, rs in rows.items()}
    report = {
        "benchmark": "bench_stream",
        "what": "eval of an imported w1.2 OFA supernet at 224x224 streaming an ImageNet-style val/ folder of N and "
                "2N images; peak RSS per eval process",
        "n": args.n, "classes": 20, "calib_n": args.calib_n, "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "folders_generated_s": round(generated, 1),
        "results": rows,
        "peak_rss_mb": peak,
        "peak_rss_growth_mb": round(peak["2N"] - peak["N"], 1),
        "peak_rss_grows_with_images": peak["2N"] > 1.1 * peak["N"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, report)
    print(json_text(report, indent=2))


if __name__ == "__main__":
    main()
