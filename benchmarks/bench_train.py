"""Training throughput of the supernet with a fixed active subnet vs the same subnet extracted.

For the smallest, middle and largest subnets: images/s of full training steps (forward,
cross-entropy, backward, SGD step) on random 32x32 inputs, the elastic supernet running
the subnet vs ``Supernet.extract(subnet)`` as a plain static network; the ratio is the
supernet's overhead (goal <= 1.15). Timings of the two alternate in rounds so load drifts
of a shared machine hit both alike; the median round is reported. Prints JSON.

    python benchmarks/bench_train.py --device cpu --threads 1
    python benchmarks/bench_train.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace


def _steps_per_s(net, forward, x, y, steps: int, device: torch.device) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def bench(device: torch.device, batch_size: int, steps: int, rounds: int, in_channels: int) -> list[dict]:
    space = SearchSpace(in_channels=in_channels, num_classes=10)
    torch.manual_seed(0)
    supernet = Supernet(space).to(device).train()
    x = torch.randn(batch_size, in_channels, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    rows = []
    for name in ("smallest", "middle", "largest"):
        subnet = getattr(space, name)()
        supernet.set_active(subnet)
        static = supernet.extract(subnet).train()
        runs = {"supernet": (supernet, lambda t: supernet(t)), "extracted": (static, lambda t: static(t))}
        for net, fwd in runs.values():  # warm-up (allocator, oneDNN primitive caches, cuDNN autotune)
            _steps_per_s(net, fwd, x, y, 2, device)
        rates = {k: [] for k in runs}
        for _ in range(rounds):
            for key, (net, fwd) in runs.items():
                rates[key].append(_steps_per_s(net, fwd, x, y, steps, device) * batch_size)
        sup, ext = statistics.median(rates["supernet"]), statistics.median(rates["extracted"])
        rows.append({"subnet": name, "text": str(subnet), "supernet_images_per_s": round(sup, 1),
                     "extracted_images_per_s": round(ext, 1), "slowdown": round(ext / sup, 3),
                     "goal_met": ext / sup <= 1.15})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
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
    rows = bench(device, args.batch_size, args.steps, args.rounds, args.in_channels)
    print(json.dumps({
        "benchmark": "train_supernet_vs_extracted",
        "device": str(device), "device_name": name, "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "steps_per_round": args.steps, "rounds": args.rounds,
        "torch": torch.__version__, "results": rows,
        "max_slowdown": max(r["slowdown"] for r in rows),
    }, indent=2))


if __name__ == "__main__":
    main()
