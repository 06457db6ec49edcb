"""Measurement campaign for predictor transfer (issue 16): the same subnets timed under
several CPU latency landscapes, interleaved, so that ``predictor check``'s learning curves
for source -> target pairs can be computed offline from one set of measurements.

    python experiments/predictor-transfer/transfer_campaign.py RUN|PREDICTOR.json OUT
        [--pool 150] [--holdout 100] [--chunk 25] [--rounds 6] [--warmup-s 0.3] [--min-time-s 0.6]
        [--min-iterations 60] [--order-seed 0]

Landscapes (all on this machine):
  cpu       ONNX Runtime fp32, 1 intra-op thread, batch 1 (the built-in ``cpu`` target)
  cpu-2t    the same ONNX file, 2 intra-op threads
  cpu-b8    the same ONNX file, batch 8
  cpu-int8  the int8 (QDQ) export of the subnet, 1 thread, batch 1 (``export --precision int8``)
  torch     the subnet as a static eager PyTorch network, 1 thread, batch 1
  torch-cuda, torch-cuda-graph
            the same network on the GPU (host latency of a synchronised call, batch 1), eager
            or replayed as one CUDA graph; only on a machine with CUDA, not in the default set

Subnets: ``--pool`` uniform draws (seed ``--pool-seed``; what active selection chooses from)
and ``--holdout`` uniform draws (seed ``--holdout-seed``, disjoint; never chosen). One fp32
export per subnet (``predictor build``'s ``export_for_timing``, kept in ``--onnx-dir``)
serves every landscape; the int8 model is quantized from it with the library's
``convert_precision`` (the QDQ int8 `export --precision int8` writes; 8 random calibration
images - latency does not depend on the ranges). Work goes in chunks of ``--chunk``
subnets; within a chunk, every round visits every (landscape, subnet) pair in a fresh
random order for a short burst, so the machine's drift hits all landscapes alike. Each
landscape's rows go to ``OUT/<landscape>.jsonl`` (the ``predictor build`` latency.jsonl
format, splits "pool" and "holdout") as each chunk finishes, with the load average seen
before and after the chunk; rerunning measures only the subnets not yet measured.

Drift between chunks: the same subnets measured in a later chunk of the same process read
up to ~10 % slower than in the first (seen in four campaigns, monotone over the first 3-4
chunks; the VM's speed and the process's memory both change over minutes). So ``--anchors``
fixed subnets (the first of the pool) are measured again in every chunk, interleaved with
it, into ``OUT/anchors.jsonl``; ``anchor_correct.py`` divides each chunk's latencies by its
anchors' drift. Runners are released (and collected) after each chunk.

Prints one JSON document (counts, wall time, load averages).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from study import LANDSCAPES, load

from ofa_deploy.cost import macs
from ofa_deploy.export import read_sidecar
from ofa_deploy.export.precision import convert_precision
from ofa_deploy.profile.backends import onnxruntime_runner, torch_runner
from ofa_deploy.profile.collect import export_for_timing, holdout_subnets
from ofa_deploy.profile.protocol import Protocol, robust_cov, summarize, time_once
from ofa_deploy.targets import load_target
from ofa_deploy.weights import load_supernet

GPU_LANDSCAPES = ("torch-cuda", "torch-cuda-graph")


def _runner(landscape: str, fp32_dir: Path, int8_dir: Path):
    if landscape == "cpu":
        return onnxruntime_runner(fp32_dir / "model.onnx", threads=1, batch=1)
    if landscape == "cpu-2t":
        return onnxruntime_runner(fp32_dir / "model.onnx", threads=2, batch=1)
    if landscape == "cpu-b8":
        return onnxruntime_runner(fp32_dir / "model.onnx", threads=1, batch=8)
    if landscape == "cpu-int8":
        return onnxruntime_runner(int8_dir / "model.onnx", threads=1, batch=1)
    if landscape in GPU_LANDSCAPES:
        return torch_runner(read_sidecar(fp32_dir), threads=1, batch=1, device="cuda",
                            cuda_graph=landscape == "torch-cuda-graph")
    return torch_runner(read_sidecar(fp32_dir), threads=1, batch=1)


def _check_out(out: Path) -> None:
    """OUT must be new, or a campaign's own directory (its .jsonl files, onnx/, saved
    campaign-*.json/log output): never a file, a training run or anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SystemExit(f"OUT {out} is a file, not a campaign directory")
    foreign = sorted(p.name for p in out.iterdir() if not (
        p.suffix == ".jsonl" or (p.name == "onnx" and p.is_dir()) or p.name.startswith("campaign")))
    if foreign:
        raise SystemExit(f"OUT {out} holds files a campaign does not write (e.g. {foreign[0]}); "
                         f"give a new directory or a campaign's own")


def _supernet(run: Path):
    """The run's supernet, or for a predictor file an untrained one of its search space
    (latency does not depend on the weights; for a machine a checkpoint cannot travel to)."""
    if run.is_file():
        from ofa_deploy.nn import Supernet
        from ofa_deploy.predictor.predictor import LatencyPredictor

        torch.manual_seed(0)
        return Supernet(LatencyPredictor.load(run).space).eval()
    return load_supernet(run)[0]


def _int8(fp32_dir: Path, int8_dir: Path, shape: tuple) -> Path:
    exported = int8_dir.parent / int8_dir.name.replace("-int8q", "-int8")
    if (exported / "model.onnx").is_file():  # an int8 export of an earlier campaign (export_for_timing)
        return exported
    out = int8_dir / "model.onnx"
    if not out.is_file():
        int8_dir.mkdir(parents=True, exist_ok=True)
        tmp = int8_dir / f".model.{os.getpid()}.onnx"
        images = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
        convert_precision(fp32_dir / "model.onnx", tmp, "int8", calibration=images)
        tmp.replace(out)
    return int8_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--pool", type=int, default=150)
    ap.add_argument("--holdout", type=int, default=100)
    ap.add_argument("--pool-seed", type=int, default=2)
    ap.add_argument("--holdout-seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--anchors", type=int, default=3, help="subnets re-measured in every chunk [default: 3]")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup-s", type=float, default=0.3)
    ap.add_argument("--min-time-s", type=float, default=0.6)
    ap.add_argument("--min-iterations", type=int, default=60)
    ap.add_argument("--order-seed", type=int, default=0,
                    help="seed of the order subnets are measured in, hence of their chunks; a repeat campaign with "
                         "another seed does not share the first one's chunk drift [default: 0]")
    ap.add_argument("--landscapes", default=",".join(LANDSCAPES))
    ap.add_argument("--onnx-dir", type=Path, default=None, help="[default: OUT/onnx]")
    args = ap.parse_args()
    landscapes = [x for x in args.landscapes.split(",") if x]
    _check_out(args.out)
    for name in ("warmup_s", "min_time_s"):
        if not 0 <= getattr(args, name) <= 3600:  # also refuses nan
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: give 0 to 3600 seconds")
    for name in ("pool", "holdout", "chunk", "rounds", "min_iterations"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: give a positive number")
    unknown = sorted(set(landscapes) - set(LANDSCAPES) - set(GPU_LANDSCAPES))
    if unknown:
        raise SystemExit(f"--landscapes: unknown {', '.join(unknown)} (of {', '.join(LANDSCAPES + GPU_LANDSCAPES)})")
    if set(landscapes) & set(GPU_LANDSCAPES) and not torch.cuda.is_available():
        raise SystemExit("--landscapes: torch sees no CUDA device here for the torch-cuda landscapes")
    torch.set_num_threads(1)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    load_start = os.getloadavg()
    supernet = _supernet(args.run)
    space = supernet.space
    held = holdout_subnets(space, args.holdout, args.holdout_seed)
    pool = holdout_subnets(space, args.pool, args.pool_seed, exclude=held)
    items = [("pool", s) for s in pool] + [("holdout", s) for s in held]
    random.Random(args.order_seed).shuffle(items)  # pool and held-out subnets share every chunk's conditions
    anchors = pool[:args.anchors]
    args.out.mkdir(parents=True, exist_ok=True)
    anchor_file = args.out / "anchors.jsonl"
    sets = {name: load(args.out, name, space) for name in landscapes}
    fp32_target = load_target("cpu")
    onnx = args.onnx_dir or args.out / "onnx"
    shape = (space.in_channels, space.image_size, space.image_size)
    rounds = max(1, args.rounds)
    burst = Protocol(warmup_s=args.warmup_s / rounds, min_iterations=max(2, args.min_iterations // rounds),
                     min_time_s=args.min_time_s / rounds, max_retries=0, max_time_s=60.0)
    measured = 0
    todo = [(split, sub) for split, sub in items if not all(sets[name].has(split, sub) for name in landscapes)]
    for start in range(0, len(todo), args.chunk):
        part = todo[start:start + args.chunk] + [("anchor", s) for s in anchors]
        load_before = os.getloadavg()
        c0 = time.perf_counter()
        dirs = []
        for _, sub in part:
            fp32_dir = export_for_timing(supernet, sub, fp32_target, onnx / str(sub)).parent
            int8_dir = _int8(fp32_dir, onnx / f"{sub}-int8q", shape) if "cpu-int8" in landscapes else fp32_dir
            dirs.append((fp32_dir, int8_dir))
        export_s = time.perf_counter() - c0
        runners = {(name, i): _runner(name, *dirs[i]) for name in landscapes for i in range(len(part))}
        torch.set_num_threads(1)  # torch_runner leaves the caller's count; keep one thread
        samples = {key: [] for key in runners}
        pairs = list(runners)
        rng = random.Random(start)
        m0 = time.perf_counter()
        for _ in range(rounds):
            rng.shuffle(pairs)
            for key in pairs:
                samples[key].extend(time_once(runners[key].step, burst).host_ms)
        measure_s = time.perf_counter() - m0
        load_after = os.getloadavg()
        with open(anchor_file, "a") as f:
            for name in landscapes:
                for i, (split, sub) in enumerate(part):
                    if split == "anchor":
                        f.write(json.dumps({"chunk": start // args.chunk, "landscape": name, "key": str(sub),
                                            "latency_ms": summarize(samples[(name, i)]),
                                            "n": len(samples[(name, i)])}) + "\n")
        for name in landscapes:
            for i, (split, sub) in enumerate(part):
                if split == "anchor":
                    continue
                xs = samples[(name, i)]
                cov = robust_cov(xs)
                sets[name].add(
                    {
                        "split": split,
                        "key": str(sub),
                        "subnet": sub.to_dict(),
                        "macs": macs(space, sub),
                        "target": name,
                        "latency_ms": summarize(xs),
                        "n": len(xs),
                        "cov": cov,
                        "unstable": cov > 0.05,
                        "chunk": start // args.chunk,
                        "done_before": len(items) - len(todo),
                        "loadavg_before": list(load_before),
                        "loadavg_after": list(load_after),
                    }
                )
        for runner in runners.values():
            runner.close()
        del runners, samples
        gc.collect()  # sessions of a finished chunk would otherwise linger until a collection (RSS 448 -> 106 MB)
        measured += len(part) - len(anchors)
        print(
            json.dumps(
                {
                    "chunk": start // args.chunk,
                    "subnets": len(part) - len(anchors),
                    "export_s": round(export_s, 1),
                    "measure_s": round(measure_s, 1),
                    "loadavg_before": load_before,
                    "loadavg_after": load_after,
                    "time": time.strftime("%H:%M:%S", time.gmtime()),
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "started": started,
                "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_s": round(time.perf_counter() - t0, 1),
                "run": str(args.run.resolve()),
                "landscapes": landscapes,
                "pool": len(pool),
                "holdout": len(held),
                "anchors": [str(a) for a in anchors],
                "measured_now": measured,
                "rounds": rounds,
                "order_seed": args.order_seed,
                "protocol_per_pair": {
                    "warmup_s": args.warmup_s,
                    "min_time_s": args.min_time_s,
                    "min_iterations": args.min_iterations,
                },
                "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
                "cpu_count": os.cpu_count(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
