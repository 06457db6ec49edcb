"""Training throughput: the default CPU training path against plain NCHW eager, and the
supernet running a subnet against the same subnet extracted.

For the smallest, middle and largest subnets, images/s of full training steps (forward,
cross-entropy, backward, SGD step with Nesterov momentum) on random 32x32 inputs of:

* ``default``: what ``ofa-deploy train`` does on this device - the supernet in the
  trainer's layout (``training_layout``: channels-last on a CPU) with its CPU kernels
  (``nn.cpu_ops``);
* ``nchw_eager``: the supernet in NCHW with plain ``F.conv2d`` everywhere (``stock_ops``),
  the path CPU training took before; ``speedup`` = default / nchw_eager (goal >= 2.0);
* ``extracted``: ``Supernet.extract(subnet)``, a plain static network, in the default
  layout; ``slowdown`` = extracted / default images/s of the supernet (goal <= 1.15).

The variants alternate in rounds (one timed block of each per round, rounds repeated) so
that load drifts on a shared machine hit all alike; the median round is reported, with
the load average before and after. Prints JSON.

    python benchmarks/bench_train.py --device cpu
    python benchmarks/bench_train.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ``ofa-deploy train`` (ofa_deploy/train/__init__.py)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ofa_deploy.nn import Supernet  # noqa: E402
from ofa_deploy.nn.cpu_ops import stock_ops  # noqa: E402
from ofa_deploy.space import SearchSpace  # noqa: E402
from ofa_deploy.train.trainer import training_layout  # noqa: E402


class _Variant:
    """One network, its optimizer, its input in its layout and its op context."""

    def __init__(self, net, forward, layout, ops, x, y) -> None:
        self.net, self.forward, self.ops = net, forward, ops
        self.x, self.y = x.contiguous(memory_format=layout), y
        self.opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def images_per_s(self, steps: int, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with self.ops():
            for _ in range(steps):
                self.opt.zero_grad(set_to_none=True)
                F.cross_entropy(self.forward(self.x), self.y).backward()
                self.opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return steps * self.x.shape[0] / (time.perf_counter() - start)


def _variants(space: SearchSpace, subnet, device: torch.device, x, y) -> dict[str, _Variant]:
    layout = training_layout(device)
    torch.manual_seed(0)
    default = Supernet(space).to(device, memory_format=layout).train()
    torch.manual_seed(0)
    plain = Supernet(space).to(device).train()
    extracted = default.extract(subnet).to(memory_format=layout).train()
    return {
        "default": _Variant(default, lambda t: default(t, subnet), layout, nullcontext, x, y),
        "nchw_eager": _Variant(plain, lambda t: plain(t, subnet), torch.contiguous_format, stock_ops, x, y),
        "extracted": _Variant(extracted, extracted, layout, nullcontext, x, y),
    }


def bench(device: torch.device, batch_size: int, steps: int, rounds: int, in_channels: int) -> list[dict]:
    space = SearchSpace(in_channels=in_channels, num_classes=10)
    torch.manual_seed(0)
    x = torch.randn(batch_size, in_channels, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    rows = []
    for name in ("smallest", "middle", "largest"):
        subnet = getattr(space, name)()
        variants = _variants(space, subnet, device, x, y)
        for v in variants.values():  # warm-up: allocator, oneDNN primitive caches, cuDNN autotune
            v.images_per_s(2, device)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for key, v in variants.items():
                rates[key].append(v.images_per_s(steps, device))
        med = {k: statistics.median(r) for k, r in rates.items()}
        rows.append({
            "subnet": name, "text": str(subnet),
            **{f"{k}_images_per_s": round(v, 1) for k, v in med.items()},
            "speedup": round(med["default"] / med["nchw_eager"], 3),
            "speedup_goal_met": med["default"] / med["nchw_eager"] >= 2.0,
            "slowdown": round(med["extracted"] / med["default"], 3),
            "slowdown_goal_met": med["extracted"] / med["default"] <= 1.15,
            "rounds": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--in-channels", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = bench(device, args.batch_size, args.steps, args.rounds, args.in_channels)
    print(json.dumps({
        "benchmark": "train_default_vs_nchw_eager_and_extracted",
        "device": str(device), "device_name": name, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "steps_per_round": args.steps, "rounds": args.rounds,
        "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "results": rows,
        "min_speedup": min(r["speedup"] for r in rows),
        "max_slowdown": max(r["slowdown"] for r in rows),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "wall_time_s": round(time.perf_counter() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
