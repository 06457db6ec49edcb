"""A torchrun worker for ``test_elastic.py``: ``ofa-deploy ARGS`` in which the rank named by
``OFA_TEST_KILL_RANK`` kills itself with ``SIGKILL`` just before reducing the gradients of
its ``OFA_TEST_KILL_STEP``-th step (counted from 1 in this process), once: the marker file
``OFA_TEST_KILL_MARKER`` is created first, and a worker that finds it kills nothing, so the
group torchrun restarts runs to the end.

Test-only: the hook wraps ``ofa_deploy.train.dist.all_reduce_grads`` from outside the
package (the product has no kill switch); a real dying rank (OOM killer, a lost node) is
what it stands in for.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _install() -> None:
    from ofa_deploy.train import dist

    rank, step, marker = (os.environ.get(k) for k in ("OFA_TEST_KILL_RANK", "OFA_TEST_KILL_STEP",
                                                        "OFA_TEST_KILL_MARKER"))
    if rank is None or step is None or marker is None or os.environ.get("RANK") != rank or Path(marker).exists():
        return
    reduce = dist.all_reduce_grads
    calls = [0]

    def all_reduce_grads(model, ctx):
        calls[0] += 1
        if calls[0] == int(step):
            Path(marker).write_text(f"rank {rank} killed at its step {step}, pid {os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return reduce(model, ctx)

    dist.all_reduce_grads = all_reduce_grads


if __name__ == "__main__":
    _install()
    from ofa_deploy.cli import main

    sys.exit(main(sys.argv[1:]))
