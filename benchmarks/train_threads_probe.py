"""Images/s of one ``bench_train.py`` variant at a given torch thread count, three timed
blocks of 10 steps, optionally with a ``torch.profiler`` table: how the thread count and
OpenMP's wait policy change a training step (``ofa_deploy/train/threads.py``).

    python benchmarks/train_threads_probe.py THREADS VARIANT [SUBNET] [--profile]
    # VARIANT: default | nchw_eager | extracted; SUBNET: smallest | middle | largest
    # OMP_WAIT_POLICY / GOMP_SPINCOUNT from the environment; NO_POLICY=1 leaves the
    # policy unset (otherwise PASSIVE, as ``ofa-deploy train``)

Prints one JSON line (and the profiler table after it with ``--profile``).
"""

from __future__ import annotations

import json
import os
import sys

if not os.environ.get("NO_POLICY"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import _variants  # noqa: E402

from ofa_deploy.space import SearchSpace  # noqa: E402


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--profile"]
    threads, which = int(args[0]), args[1]
    name = args[2] if len(args) > 2 else "smallest"
    torch.set_num_threads(threads)
    space = SearchSpace(in_channels=1, num_classes=10)
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))
    cpu = torch.device("cpu")
    variant = _variants(space, getattr(space, name)(), cpu, x, y, ("fp32",), False)[which]
    variant.threads = threads  # the probe's count, not the trainer's default
    variant.images_per_s(10, cpu)
    rates = [round(variant.images_per_s(10, cpu)) for _ in range(3)]
    print(json.dumps({"variant": which, "subnet": name, "threads": threads, "images_per_s": rates,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"), "loadavg": os.getloadavg()}))
    if "--profile" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            variant.images_per_s(10, cpu)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
