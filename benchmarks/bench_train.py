"""Training throughput: the default training path against plain NCHW eager, the supernet
running a subnet against the same subnet extracted, and on CUDA eager against CUDA graphs
and bf16 against fp32.

For the smallest, middle and largest subnets, images/s of full training steps (forward,
cross-entropy, backward, SGD step with Nesterov momentum) on random 32x32 inputs of:

* ``default``: what ``ofa-deploy train`` does on this device - the supernet in the
  trainer's layout (``training_layout``: channels-last on a CPU) with its CPU kernels
  (``nn.cpu_ops``), fused SGD, at the trainer's CPU thread count (``train.threads.cpu_threads``:
  one unless ``OMP_NUM_THREADS`` says otherwise);
* ``nchw_eager``: the supernet in NCHW with plain ``F.conv2d`` everywhere (``stock_ops``)
  and the per-tensor SGD at torch's default thread count, the path CPU training took
  before; ``nchw_eager_same_threads``: the same at the default's thread count
  (``speedup_same_threads``: the kernels and SGD alone, the threads equal);
  ``speedup`` = default / nchw_eager (goal >= 2.0);
* ``extracted``: ``Supernet.extract(subnet)``, a plain static network, in the default
  layout, with fused SGD; ``slowdown`` = extracted / default images/s of the supernet
  (goal <= 1.15).

``--precisions fp32,bf16`` adds ``default_bf16`` / ``extracted_bf16`` (autocast; bf16 runs
on a CPU too, slowly without native bf16). On CUDA (``--device cuda``) the variants are
``supernet_{eager,graph}_{precision}`` and ``extracted_{eager,graph}_{precision}``: eager
steps, and the same step captured once as a CUDA graph and replayed
(``ofa_deploy.train.cuda_graphs.GraphedStep``, fused SGD), with per precision
``slowdown_graph_*`` = extracted_graph / supernet_graph images/s (issue 14's goal <= 1.15),
``graph_speedup_*`` = supernet_graph / supernet_eager and an F-MNIST RSS epoch estimate
(60,000 images at the supernet's graph rate: training steps only, no augmentation or
bookkeeping; ``ofa-deploy train`` itself measures the real epoch). Eager CUDA variants use
torch's default (foreach) SGD, as ``train --cuda-graphs off`` does; fp16 variants (eager
only) time autocast steps without the ``GradScaler`` training adds.

The variants alternate in rounds (one timed block of each per round, rounds repeated) so
that load drifts on a shared machine hit all alike; the median round is reported, with
the load average before and after. Prints JSON. ``--device cuda`` without CUDA: one line
on stderr, exit 2.

    python benchmarks/bench_train.py --device cpu
    python benchmarks/bench_train.py --device cuda --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ``ofa-deploy train`` (ofa_deploy/train/__init__.py)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_deploy.nn import Supernet  # noqa: E402
from ofa_deploy.nn.cpu_ops import stock_ops  # noqa: E402
from ofa_deploy.space import SearchSpace  # noqa: E402
from ofa_deploy.train import amp  # noqa: E402
from ofa_deploy.train.cuda_graphs import CudaGraphApi, GraphedStep, training_step  # noqa: E402
from ofa_deploy.train.layout import training_layout  # noqa: E402
from ofa_deploy.train.threads import cpu_threads  # noqa: E402

PRECISIONS = amp.PRECISIONS
FMNIST_TRAIN_IMAGES = 60_000
LR = 1e-3


class _Variant:
    """One network, its optimizer, its input in its layout, its op context and precision;
    ``graph``: the step captured as a CUDA graph after ``GraphedStep``'s warm-up."""

    def __init__(self, net, forward, layout, ops, x, y, precision="fp32", graph=False, fused=False,
                 threads=None) -> None:
        self.net, self.forward, self.ops, self.precision, self.threads = net, forward, ops, precision, threads
        self.x, self.y = x.contiguous(memory_format=layout), y
        fused = {"fused": True} if graph or fused else {}
        self.opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, nesterov=True, **fused)
        self.graphed = None
        if graph:
            step = training_step(_Forward(forward), self.opt, None,
                                 lambda: amp.autocast(x.device.type, precision, in_cuda_graph=True))
            self.graphed = GraphedStep(step, self.opt, None, CudaGraphApi(x.device))

    def images_per_s(self, steps: int, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        with self.ops():
            for _ in range(steps):
                if self.graphed is not None:
                    self.graphed.run(self.x, self.y, LR)
                    continue
                self.opt.zero_grad(set_to_none=True)
                with amp.autocast(device.type, self.precision):
                    logits = self.forward(self.x).float()
                F.cross_entropy(logits, self.y).backward()
                self.opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        torch.set_num_threads(saved)
        return steps * self.x.shape[0] / elapsed


class _Forward:
    """``training_step`` calls ``net(x, subnet)``; the bench's forwards take ``x`` only."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, x, subnet):
        return self.forward(x)


def _nets(space: SearchSpace, subnet, device: torch.device, layout):
    torch.manual_seed(0)
    supernet = Supernet(space).to(device, memory_format=layout).train()
    extracted = supernet.extract(subnet).to(memory_format=layout).train()
    return supernet, extracted


def _variants(space: SearchSpace, subnet, device: torch.device, x, y, precisions, graphs: bool) -> dict:
    layout = training_layout(device)
    out: dict[str, _Variant] = {}
    if device.type == "cpu":
        default, extracted = _nets(space, subnet, device, layout)
        torch.manual_seed(0)
        plain = Supernet(space).to(device).train()
        # fused SGD and the thread count of ``ofa-deploy train`` on a CPU; the baseline keeps the
        # per-tensor SGD of before, at torch's default threads (before) and at the default's count
        n = cpu_threads(None)
        out["default"] = _Variant(default, lambda t: default(t, subnet), layout, nullcontext, x, y, fused=True,
                                  threads=n)
        out["nchw_eager"] = _Variant(plain, lambda t: plain(t, subnet), torch.contiguous_format, stock_ops, x, y)
        torch.manual_seed(0)
        plain_n = Supernet(space).to(device).train()
        out["nchw_eager_same_threads"] = _Variant(plain_n, lambda t: plain_n(t, subnet), torch.contiguous_format,
                                                  stock_ops, x, y, threads=n)
        out["extracted"] = _Variant(extracted, extracted, layout, nullcontext, x, y, fused=True, threads=n)
        for p in precisions:
            if p != "fp32":
                sup, ext = _nets(space, subnet, device, layout)
                out[f"default_{p}"] = _Variant(sup, lambda t, s=sup: s(t, subnet), layout, nullcontext, x, y, p,
                                               fused=True, threads=n)
                out[f"extracted_{p}"] = _Variant(ext, ext, layout, nullcontext, x, y, p, fused=True, threads=n)
        return out
    for p in precisions:
        for mode in ("eager", "graph") if graphs else ("eager",):
            sup, ext = _nets(space, subnet, device, layout)  # fresh weights per variant: same start for all
            out[f"supernet_{mode}_{p}"] = _Variant(sup, lambda t, s=sup: s(t, subnet), layout, nullcontext, x, y, p,
                                                   graph=mode == "graph")
            out[f"extracted_{mode}_{p}"] = _Variant(ext, ext, layout, nullcontext, x, y, p, graph=mode == "graph")
    return out


def _ratios(med: dict, device: torch.device, precisions, graphs: bool) -> dict:
    if device.type == "cpu":
        row = {
            "speedup": round(med["default"] / med["nchw_eager"], 3),
            "speedup_goal_met": med["default"] / med["nchw_eager"] >= 2.0,
            "speedup_same_threads": round(med["default"] / med["nchw_eager_same_threads"], 3),
            "speedup_same_threads_goal_met": med["default"] / med["nchw_eager_same_threads"] >= 2.0,
            "slowdown": round(med["extracted"] / med["default"], 3),
            "slowdown_goal_met": med["extracted"] / med["default"] <= 1.15,
        }
        for p in precisions:
            if p != "fp32":
                row[f"{p}_vs_fp32"] = round(med[f"default_{p}"] / med["default"], 3)
        return row
    row = {}
    mode = "graph" if graphs else "eager"
    for p in precisions:
        sup, ext = med[f"supernet_{mode}_{p}"], med[f"extracted_{mode}_{p}"]
        row[f"slowdown_{mode}_{p}"] = round(ext / sup, 3)
        row[f"slowdown_{mode}_{p}_goal_met"] = ext / sup <= 1.15
        row[f"fmnist_rss_epoch_s_estimate_{p}"] = round(FMNIST_TRAIN_IMAGES / sup, 2)
        if graphs:
            row[f"graph_speedup_{p}"] = round(sup / med[f"supernet_eager_{p}"], 3)
    if "fp32" in precisions:
        for p in precisions:
            if p != "fp32":
                row[f"{p}_vs_fp32_{mode}"] = round(med[f"supernet_{mode}_{p}"] / med[f"supernet_{mode}_fp32"], 3)
    return row


def bench(device: torch.device, batch_size: int, steps: int, rounds: int, in_channels: int,
          precisions=("fp32",), graphs: bool = False, warmup: int = 5) -> list[dict]:
    space = SearchSpace(in_channels=in_channels, num_classes=10)
    torch.manual_seed(0)
    x = torch.randn(batch_size, in_channels, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    rows = []
    for name in ("smallest", "middle", "largest"):
        subnet = getattr(space, name)()
        variants = _variants(space, subnet, device, x, y, precisions, graphs)
        for v in variants.values():  # warm-up: allocator, oneDNN caches, cuDNN autotune, graph capture
            v.images_per_s(warmup, device)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for key, v in variants.items():
                rates[key].append(v.images_per_s(steps, device))
        med = {k: statistics.median(r) for k, r in rates.items()}
        captured = {k: v.graphed.graph is not None for k, v in variants.items() if v.graphed is not None}
        rows.append({
            "subnet": name, "text": str(subnet),
            **{f"{k}_images_per_s": round(v, 1) for k, v in med.items()},
            **_ratios(med, device, precisions, graphs),
            **({"graphs_captured": captured} if captured else {}),
            "rounds": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        })
    return rows


def _fail(message: str) -> None:
    print(f"bench_train.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16 (fp16: CUDA only)")
    parser.add_argument("--graphs", choices=("auto", "on", "off"), default="auto",
                        help="CUDA graph variants (auto: on CUDA; on: refused elsewhere)")
    args = parser.parse_args()
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    if not precisions or any(p not in PRECISIONS for p in precisions):
        _fail(f"--precisions {args.precisions!r}: choose from {', '.join(PRECISIONS)}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        _fail(f"--device {args.device!r}: use cpu or cuda")
    if device.type not in ("cpu", "cuda"):
        _fail(f"--device {args.device!r}: use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        _fail(f"--device {args.device}: torch sees no CUDA device on this machine; use --device cpu")
    if device.type == "cpu" and "fp16" in precisions:
        _fail("--precisions fp16 needs --device cuda (loss-scaled fp16 autocast)")
    if device.type == "cpu" and args.graphs == "on":
        _fail("--graphs on needs --device cuda")
    if device.type == "cuda" and "fp16" in precisions and args.graphs != "off":
        _fail("fp16 steps need a GradScaler, which CUDA graphs cannot hold; add --graphs off or drop fp16")
    if device.type == "cuda" and "bf16" in precisions and not torch.cuda.is_bf16_supported():
        _fail("--precisions bf16: this GPU does not support bfloat16")
    if args.threads:
        torch.set_num_threads(args.threads)
    graphs = device.type == "cuda" and args.graphs != "off"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = bench(device, args.batch_size, args.steps, args.rounds, args.in_channels, precisions, graphs)
    summary = {"min_speedup": min(r["speedup"] for r in rows),
               "min_speedup_same_threads": min(r["speedup_same_threads"] for r in rows),
               "default_threads": cpu_threads(None), "max_slowdown": max(r["slowdown"] for r in rows)} \
        if device.type == "cpu" else {
            k: max(r[k] for r in rows) for k in rows[0] if k.startswith("slowdown_") and not k.endswith("goal_met")}
    print(json.dumps({
        "benchmark": "train_default_vs_nchw_eager_and_extracted" if device.type == "cpu"
        else "train_supernet_vs_extracted_eager_vs_graphs",
        "device": str(device), "device_name": name, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "steps_per_round": args.steps, "rounds": args.rounds,
        "precisions": list(precisions), "cuda_graphs": graphs,
        "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "results": rows,
        **({"max_" + k: v for k, v in summary.items()} if device.type == "cuda" else summary),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "wall_time_s": round(time.perf_counter() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
