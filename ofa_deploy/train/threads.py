"""How many torch threads a CPU training run uses.

One, unless told otherwise (``train --threads N``, ``$OMP_NUM_THREADS``). On this project's
2-core VM one thread beat two for every subnet (quiet machine, fused SGD, images/s:
smallest 900 vs 500, largest 319 vs 237): each of the ~1,000 small ops of a training step
wakes the second, sleeping OpenMP worker (``OMP_WAIT_POLICY=PASSIVE``, see ``__init__.py``).
Letting workers spin briefly (``GOMP_SPINCOUNT=10000``) made two threads faster on the quiet
machine (1,070 and 420) but 3x slower than one under load (110 vs 300 for the smallest
with two busy processes): one thread is the fast choice that never collapses
(``results/train-speed-cpu``). Machines with more cores were not measured; ``--threads``
is there for them.

Reductions split over threads differently, so 1- and 2-thread runs differ in the last
bits: the trainer saves the count in every checkpoint, and a resume without ``--threads``
(and without ``$OMP_NUM_THREADS``) uses the checkpoint's, so it continues bit-identically.
"""

from __future__ import annotations

import os


def explicit_threads(threads: int | None) -> int | None:
    """The CPU thread count the user asked for: ``threads`` (``--threads``), else
    ``$OMP_NUM_THREADS``, else ``None``."""
    if threads is not None:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def cpu_threads(threads: int | None) -> int:
    """Torch intra-op threads of a CPU run: the user's count, else one."""
    return explicit_threads(threads) or 1
