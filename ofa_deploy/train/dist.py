"""Data-parallel training without DDP's module wrapper.

Every rank trains the same subnets on its slice of the global batch (schedules are pure
functions of the seed), so the parameters that receive gradients are the same on every
rank; after the step's backward passes the gradients are summed across ranks in one flat
all-reduce. This is exact for any number of subnets per step and never trips over the
unused parameters of inactive blocks, which is what makes DDP's hooks awkward here.
Launch with ``torchrun --nproc-per-node N -m ofa_deploy train ...`` (gloo on CPU, NCCL on CUDA).

A worker that dies (``SIGKILL``, the OOM killer, a lost node) makes the others' next
collective fail: each says so in one line (``OfaError``, not gloo's traceback) and exits, and
``torchrun --max-restarts N`` starts the group again on the same command line, which resumes
the run from its last checkpoint - the weights then equal an uninterrupted run's
(``tests/test_elastic.py``). What the killed epoch had trained is trained again.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..errors import OfaError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistContext:
    """Join the process group that torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device_type == "cuda" else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is None:
            dist.init_process_group(backend=backend)
        else:
            # torchrun keeps one key-value store across the restarts of a group: the process
            # group's keys of the attempt that failed are still there, and gloo would connect
            # to the dead workers' ports (Connection refused). Each attempt gets its own keys.
            store, rank, size = next(dist.rendezvous("env://"))
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"ofa-deploy/attempt-{restart}", store),
                                    rank=rank, world_size=size)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def shutdown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


_TRAIN_AFTER = ("the run continues from its last checkpoint when the group is started again (torchrun "
                "--max-restarts, or ofa-deploy train --resume)")


@contextmanager
def collective(what: str, after: str = _TRAIN_AFTER) -> Iterator[None]:
    """A collective whose failure (gloo/NCCL: a peer died or stopped answering) is one line;
    ``after`` says how to continue (training's default; ``search`` has its own)."""
    try:
        yield
    except RuntimeError as exc:  # torch's DistBackendError and DistNetworkError are RuntimeErrors
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        said = re.sub(r"^\[[^\]]*\]\s*", "", said).split(". ")[0]  # gloo's source location, its advice
        raise OfaError(f"rank {dist.get_rank()}: the {what} across workers failed, so another worker has stopped "
                       f"({said[:160]}); {after}") from None


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        with collective("barrier"):
            dist.barrier()


def all_reduce_grads(model: nn.Module, ctx: DistContext) -> None:
    """Sum the gradients of ``model`` over ranks (parameters without a gradient stay so)."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    with collective("gradient sum"):
        dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (BN running statistics) over ranks."""
    if not ctx.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            with collective("BatchNorm statistics average"):
                dist.all_reduce(buf)
            buf.div_(ctx.world_size)


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    with collective("sum"):
        dist.all_reduce(t)
    return t.tolist()
