"""CUDA graphs for training: one captured step per epoch whose subnet does not change.

Our subnets are tiny (4-15 MFLOPs at 32x32) and the paper's batch is 64, so an eager GPU
step is bound by kernel launches and Python, not arithmetic. A CUDA graph replays a whole
step - forward, loss, backward and the SGD update - as one launch.

Which epochs (``plan``): an epoch is captured when it trains one subnet at every step
(RSS with one subnet per epoch, ``fixed``, the two-subnet orders, PS's largest phase), on
CUDA, with one process and one micro-batch, without distillation, in bf16 or fp32. Every
other epoch (per-step subnets: PS's elastic phases, ``--per-batch``, sandwich) trains
eagerly. A cache of graphs keyed by subnet was not built: a per-step schedule draws from
~10^19 subnets, so a cache would only ever hit sandwich's largest and smallest, and a
sandwich step sums the gradients of 4 subnets before one update, which a per-subnet graph
could not hold. fp16 stays eager: ``GradScaler.step`` reads ``found_inf`` on the host.

How (``GraphedStep``): the first ``warmup_steps`` steps of the epoch run eagerly on a side
stream (cuDNN/cuBLAS handles, autotuning and the allocator settle before capture, as
PyTorch's CUDA-graphs notes require); the next step copies its batch into static input
buffers, is captured, and is replayed; every later step copies its batch into the same
buffers in place (``copy_``) and replays. The optimizer is ``torch.optim.SGD(fused=True)``:
torch 2.14's SGD has no ``capturable`` flag (pytorch/pytorch#118018) and its foreach path
calls ``lr.item()``, but the fused kernel reads a tensor learning rate from device memory,
so the captured update follows the cosine schedule when that tensor is refilled before each
replay. Fused SGD fails when some parameters of a group have momentum buffers and others
not (a block trained for the first time mid-phase), so ``prime_momentum`` gives every
parameter a zero buffer first; with dampening 0 that is bit-identical to creating it from
the first gradient (0.9 x 0 + g = g exactly).

A capture that fails (an op that cannot be captured) prints one warning line, the step is
run again eagerly and the rest of the epoch stays eager; nothing is written by this module.

Dropout inside a graph: the trainer seeds torch before every step (``torch.manual_seed``,
which resets the default CUDA generator's Philox offset to 0). PyTorch registers the
default CUDA generator with every graph it captures: a replay reads the generator's
current seed and offset from device memory and advances the offset (graph-safe RNG), so
each replayed step draws the masks of its own seed, at the same offsets an eager step
would. Expected, not verified (no GPU was available): the same dropout masks as eager.

What is bit-identical on a GPU (stated, not measured): a run resumes from its epoch-end
checkpoint exactly when it runs the same way (same ``--cuda-graphs``, precision, GPU model,
torch/cuDNN versions; cuDNN picks algorithms per process unless deterministic mode is set,
so even that is not promised); graph vs eager, fused vs foreach SGD and bf16 vs fp32 give
different last bits. On a CPU nothing here runs (the trainer uses fused SGD there too, for
speed, and primes the momentum with ``prime_momentum`` for the same reason).

Lines only a GPU exercises: ``CudaGraphApi`` (``torch.cuda.CUDAGraph``, ``torch.cuda.graph``,
side streams), the fused SGD kernel with a CUDA learning-rate tensor, and graph-safe
dropout RNG. Everything else - the plan, the warm-up/capture/replay sequence, the in-place
refill of static buffers and learning rates, the failure fallback - is tested on a CPU
against ``tests/test_gpu_path.py``'s fake of the ``CUDAGraph`` contract.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import OfaError

MODES = ("auto", "on", "off")
WARMUP_STEPS = 3  # PyTorch's CUDA-graph notes warm up 3 iterations on a side stream before capturing

StepFn = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


# -- which epochs ---------------------------------------------------------------------------------
def epoch_subnet(schedule: Any, epoch: int, steps: int) -> Any:
    """The one subnet ``schedule`` trains at every step of ``epoch``, or ``None`` when it
    trains several per step or changes them within the epoch (first and last step compared:
    a per-step draw repeating there is negligible, and ``GraphedStep.covers`` checks every
    step anyway, so a wrong guess costs speed, never correctness)."""
    first = schedule.subnets(epoch, 0)
    if len(first) != 1:
        return None
    if steps > 1 and list(schedule.subnets(epoch, steps - 1)) != list(first):
        return None
    return first[0]


def static_reason(mode: str, device_type: str, precision: str, world_size: int, grad_accum: int) -> Optional[str]:
    """Why no epoch of this run can be captured (``None``: some can)."""
    if mode == "off":
        return "--cuda-graphs off"
    if device_type != "cuda":
        return "not on a CUDA device"
    if precision == "fp16":
        return "fp16's GradScaler synchronises with the host at every step"
    if world_size > 1:
        return "DDP (gradients are all-reduced between backward and the update)"
    if grad_accum > 1:
        return "--grad-accum > 1"
    return None


def plan(mode: str, *, device_type: str, precision: str, world_size: int, grad_accum: int, kd: bool,
         subnet: Any) -> Optional[str]:
    """Why this epoch trains eagerly, or ``None`` when it is captured (``subnet``: what
    ``epoch_subnet`` returned)."""
    reason = static_reason(mode, device_type, precision, world_size, grad_accum)
    if reason is not None:
        return reason
    if kd:
        return "distillation from a teacher"
    if subnet is None:
        return "the schedule changes subnet within the epoch"
    return None


def check_mode(mode: str, device_type: str) -> None:
    """``--cuda-graphs on`` off CUDA is a contradiction: one clear line, before anything is written."""
    if mode not in MODES:
        raise OfaError(f"--cuda-graphs {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "on" and device_type != "cuda":
        raise OfaError("--cuda-graphs on needs a CUDA device; use auto or off on a CPU")


def sgd_options(mode: str, device_type: str, precision: str, world_size: int, grad_accum: int) -> dict:
    """Extra ``torch.optim.SGD`` arguments of a run: ``fused=True`` wherever an epoch may be
    captured, for every step of the run (one update kernel, graphed or not); none elsewhere
    (on a CPU the trainer chooses fused SGD itself)."""
    if static_reason(mode, device_type, precision, world_size, grad_accum) is not None:
        return {}
    return {"fused": True}


@torch.no_grad()
def prime_momentum(optimizer: torch.optim.Optimizer) -> None:
    """A zero momentum buffer for every parameter that has none (see the module docstring)."""
    for group in optimizer.param_groups:
        if not group.get("momentum"):
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def training_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, subnet: Any,
                  autocast: Callable[[], Any]) -> StepFn:
    """The step a graph captures: what the trainer does for one subnet and one micro-batch
    on one process (cross-entropy, backward, SGD update), returning (loss, logits)."""
    def step(x: torch.Tensor, y: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
        optimizer.zero_grad(set_to_none=True)  # backward then writes fresh gradients (captured as writes)
        with autocast():
            logits = net(x, subnet).float()
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()

    return step


# -- the CUDA side (only a GPU runs this class) ---------------------------------------------------
class CudaGraphApi:
    """The three things ``GraphedStep`` needs from ``torch.cuda``. Only a GPU runs this."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    @contextmanager
    def side_stream(self) -> Iterator[None]:
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            yield
        current.wait_stream(self._stream)

    def capture(self, graph: Any, fn: Callable[[], Any]) -> Any:
        """Record ``fn``'s kernels into ``graph`` (nothing runs) and return its static outputs."""
        with torch.cuda.graph(graph):
            return fn()


class GraphedStep:
    """One training step of one subnet: eager warm-up, capture, then replay.

    ``step_fn(x, y) -> (loss, logits)`` is the step (``training_step``); ``optimizer`` its
    SGD, whose learning rates become device tensors the graph reads (refilled in place
    before every replay, restored to floats by ``close``). ``api`` is ``CudaGraphApi`` on a
    GPU or a test double with the same contract: ``capture(graph, fn)`` records and returns
    static outputs without running, ``graph.replay()`` recomputes them from the current
    contents of every tensor the capture read.

    ``run(x, y, lr)`` trains one step and returns (loss, logits); ``covers(subnets, x)``
    says whether a step can be replayed (same subnet, same input shape and dtype) and resets
    ``took_step``, which ``run`` sets - the trainer skips its own update when it is true.
    """

    def __init__(self, step_fn: StepFn, optimizer: torch.optim.Optimizer, subnet: Any, api: Any, *,
                 warmup_steps: int = WARMUP_STEPS, warn: Callable[[str], None] | None = None) -> None:
        self.step_fn, self.optimizer, self.subnet, self.api = step_fn, optimizer, subnet, api
        self.warmup_steps = max(1, warmup_steps)  # capture needs the momentum buffers and handles a step made
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))
        self.graph: Any = None
        self.failed: Optional[str] = None
        self.eager_steps = self.replays = 0
        self.took_step = False
        self._static_in: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._static_out: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._lrs: list[torch.Tensor] = []
        self._floats: list[float] = []

    def covers(self, subnets: Sequence[Any], x: torch.Tensor) -> bool:
        self.took_step = False
        if self.failed is not None or len(subnets) != 1 or subnets[0] != self.subnet:
            return False
        if self._static_in is not None:
            sx = self._static_in[0]
            return sx.shape == x.shape and sx.dtype == x.dtype and sx.stride() == x.stride()
        return True

    def run(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> "tuple[torch.Tensor, torch.Tensor]":
        self.took_step = True
        if self.graph is None and self.failed is None and self.eager_steps >= self.warmup_steps:
            self._capture(x, y)
        if self.graph is None:  # warm-up, or after a failed capture
            self.eager_steps += 1
            self._set_float_lr(lr)
            with self.api.side_stream():
                return self.step_fn(x, y)
        sx, sy = self._static_in
        sx.copy_(x)  # in place: the graph reads these addresses
        sy.copy_(y)
        for group, t in zip(self.optimizer.param_groups, self._lrs):
            group["lr"] = t  # what the capture read (the trainer may have set a float since)
            t.fill_(lr)
        self.graph.replay()
        self.replays += 1
        return self._static_out

    def _set_float_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._floats = [float(g["lr"]) for g in self.optimizer.param_groups]
        sx, sy = self._static_in = (x.clone(memory_format=torch.preserve_format), y.clone())
        self._lrs = [torch.full((), lr, dtype=torch.float32, device=x.device) for lr in self._floats]
        for group, t in zip(self.optimizer.param_groups, self._lrs):
            group["lr"] = t
        prime_momentum(self.optimizer)
        graph = self.api.new_graph()
        try:
            # the graph holds these two tensors' addresses: later steps refill them in place
            self._static_out = self.api.capture(graph, lambda: self.step_fn(sx, sy))
        except Exception as exc:  # an op that cannot be captured: this epoch trains eagerly
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.failed = f"{type(exc).__name__}: {first}"
            self.warn(f"warning: CUDA graph capture failed ({self.failed[:200]}); this epoch trains eagerly")
            self.optimizer.zero_grad(set_to_none=True)  # gradients allocated by the aborted capture
            self._static_in = self._static_out = None
            self._restore_floats()
            return
        self.graph = graph

    def _restore_floats(self) -> None:
        for group, value in zip(self.optimizer.param_groups, self._floats):
            group["lr"] = value
        self._lrs = []

    def close(self) -> None:
        """Floats back in the optimizer (checkpoints hold floats, as eager runs write), the
        graph and its memory released."""
        if self._lrs:
            for group, t in zip(self.optimizer.param_groups, self._lrs):
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"] = float(t.item())
        self._lrs = []
        self.graph = None
        self._static_in = self._static_out = None


class EpochGraphs:
    """The trainer's side: per run, the SGD options; per epoch, a ``GraphedStep`` or ``None``.

    ``mode`` is ``--cuda-graphs``: ``auto`` captures where ``plan`` allows, silently;
    ``on`` the same, but needs CUDA and says once per reason why an epoch stays eager;
    ``off`` never captures."""

    def __init__(self, mode: str, device: torch.device, precision: str, world_size: int, grad_accum: int,
                 *, autocast: Callable[[], Any], api_factory: Callable[[torch.device], Any] = CudaGraphApi,
                 warn: Callable[[str], None] | None = None, warmup_steps: int = WARMUP_STEPS) -> None:
        check_mode(mode, device.type)
        self.mode, self.device, self.precision = mode, device, precision
        self.world_size, self.grad_accum = world_size, grad_accum
        self.autocast, self.api_factory, self.warmup_steps = autocast, api_factory, warmup_steps
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))
        self._told: set[str] = set()
        self._api: Any = None

    def sgd_options(self) -> dict:
        return sgd_options(self.mode, self.device.type, self.precision, self.world_size, self.grad_accum)

    def for_epoch(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, epoch: int,
                  steps: int, *, kd: bool) -> Optional[GraphedStep]:
        if self.sgd_options().get("fused"):
            prime_momentum(optimizer)  # also for eager epochs: fused SGD needs all buffers or none
        if static_reason(self.mode, self.device.type, self.precision, self.world_size, self.grad_accum):
            return None
        subnet = epoch_subnet(schedule, epoch, steps)
        reason = plan(self.mode, device_type=self.device.type, precision=self.precision,
                      world_size=self.world_size, grad_accum=self.grad_accum, kd=kd, subnet=subnet)
        if reason is not None:
            if self.mode == "on" and reason not in self._told:
                self._told.add(reason)
                self.warn(f"note: --cuda-graphs on: epochs where {reason} train eagerly")
            return None
        if self._api is None:
            self._api = self.api_factory(self.device)
        return GraphedStep(training_step(net, optimizer, subnet, self.autocast), optimizer, subnet, self._api,
                           warmup_steps=self.warmup_steps, warn=self.warn)


__all__ = ["MODES", "WARMUP_STEPS", "CudaGraphApi", "EpochGraphs", "GraphedStep", "epoch_subnet", "plan",
           "prime_momentum", "sgd_options", "static_reason", "training_step", "check_mode"]
