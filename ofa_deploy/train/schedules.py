"""Which subnets to train at each step: one small object per training method.

A schedule is a sequence of ``Phase``s (epochs, learning rate, warm-up, distillation) and
a pure function ``subnets(epoch, step) -> [Subnet, ...]`` of the seed, the global epoch
index and the step in the epoch. Nothing else is consulted, so a resumed run and every
DDP rank train the same subnets without communicating. Random draws use
``random.Random(f"{seed}:{tag}:{epoch}:{step}")`` (string seeds are hashed with SHA-512,
stable across processes and Python versions).

Methods (``make_schedule``): ``rss`` (one uniform subnet per epoch, or ``per_batch`` K per
step), ``ps`` (Progressive Shrinking), ``fixed``, ``max-then-min``, ``min-then-max``,
``alternating``, ``sandwich``; ``balance="flops"`` replaces uniform per-setting draws by
``FlopsBalancedSampler``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from ..buckets import macs_range
from ..cost import macs
from ..errors import OfaError
from ..space import SearchSpace, Subnet
from .fidelity import tail_phase_epochs, tail_start

METHODS = ("rss", "ps", "fixed", "max-then-min", "min-then-max", "alternating", "sandwich")

# Progressive Shrinking after the supernet phase (OFA's train_ofa_net, see the reference notes):
# (name, epochs as a function of the supernet epochs B, lr divisor, subnets per step, choices)
PS_PHASES = (
    ("kernel", lambda b: round(b / 1.5), 2.7, 1, {"expand": "max", "depth": "max"}),
    ("depth-1", lambda b: round(b / 7.2), 32.5, 2, {"expand": "max", "depth": (-2, None)}),
    ("depth-2", lambda b: round(b / 1.5), 10.8, 2, {"expand": "max", "depth": (None, None)}),
    ("expand-1", lambda b: round(b / 7.2), 32.5, 4, {"expand": (-2, None), "depth": (None, None)}),
    ("expand-2", lambda b: round(b / 1.5), 10.8, 4, {"expand": (None, None), "depth": (None, None)}),
)


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs trained the same way.

    ``lr`` is the phase's initial learning rate, decayed within the phase (cosine per step
    unless the run's schedule is constant) after ``warmup_epochs`` of linear warm-up.
    ``kd``: distil from the teacher. ``sort_channels``: reorder middle channels by
    importance before the phase's first step, keeping the prefix of each expand ratio in
    ``sort_keep`` first (OFA's protection; empty = a full sort). ``choices``: the settings
    the phase samples from (kernel, expand, depth), ``None`` = the space's.
    ``lr_span`` (epochs; None = the phase's own cosine): the phase runs the tail of one
    cosine of ``lr_span`` epochs from epoch ``lr_start`` (the released code's PS, see
    ``fidelity.tail_start``); ``carry_momentum``: keep the optimizer of the previous phase.
    """

    name: str
    epochs: int
    lr: float
    warmup_epochs: int = 0
    subnets_per_step: int = 1
    kd: bool = False
    sort_channels: bool = False
    choices: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    sort_keep: tuple[int, ...] = ()
    lr_start: int = 0
    lr_span: int | None = None
    carry_momentum: bool = False

    def tail_lr(self, step: int, steps_per_epoch: int) -> float:
        """The lr at ``step`` steps into a ``lr_span`` phase: OFA's ``calc_learning_rate``
        with t_cur = lr_start x steps + step and t_total = lr_span x steps."""
        t_total = self.lr_span * steps_per_epoch
        return 0.5 * self.lr * (1 + math.cos(math.pi * (self.lr_start * steps_per_epoch + step) / t_total))


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


class Schedule:
    """Base class: a list of phases and the subnets trained at (epoch, step)."""

    method = ""

    def __init__(self, space: SearchSpace, phases: Sequence[Phase], seed: int) -> None:
        if not phases or sum(p.epochs for p in phases) < 1:
            raise OfaError("a training schedule needs at least one epoch")
        self.space, self.phases, self.seed = space, tuple(phases), seed
        self._starts = [sum(p.epochs for p in self.phases[:i]) for i in range(len(self.phases))]

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def locate(self, epoch: int) -> tuple[int, Phase, int]:
        """(phase index, phase, epoch within the phase) of global ``epoch`` (0-based)."""
        if not 0 <= epoch < self.total_epochs:
            raise OfaError(f"epoch {epoch} is outside the schedule's {self.total_epochs} epochs")
        for index in range(len(self.phases) - 1, -1, -1):
            if epoch >= self._starts[index] and self.phases[index].epochs:
                return index, self.phases[index], epoch - self._starts[index]
        raise AssertionError("unreachable")

    def phase_start(self, index: int) -> int:
        return self._starts[index]

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What goes in the run config's [train] table about this schedule."""
        return {"phases": [{"name": p.name, "epochs": p.epochs, "lr": p.lr, "warmup_epochs": p.warmup_epochs,
                            "subnets_per_step": p.subnets_per_step, "kd": p.kd} for p in self.phases]}


class UniformSampler:
    """The paper's uniform draw: every setting independently from its list."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, rng: random.Random) -> Subnet:
        return self.space.sample(rng)


class FlopsBalancedSampler:
    """Pick a 1-MFLOP bucket uniformly, then a subnet inside it.

    Buckets are centred on the integers from the smallest to the largest subnet's MFLOPs
    (+-0.5). Inside a bucket, subnets are drawn by rejection from an exponentially tilted
    per-setting distribution, P(choice index i) proportional to exp(lambda * i), with lambda
    calibrated per bucket so that the draws' mean MACs sit in the bucket; a tilt by the
    sum of choice indices keeps all subnets with the same index sum equally likely, so
    the draw inside a bucket stays close to uniform while staying fast at the extremes
    where plain uniform sampling almost never lands.
    """

    _LAMBDAS = tuple(x / 4 for x in range(-16, 17))

    def __init__(self, space: SearchSpace, calibration_draws: int = 64) -> None:
        self.space = space
        lo, hi = macs_range(space)
        self.centres = tuple(range(max(1, round(lo / 1e6)), round(hi / 1e6) + 1))
        rng = random.Random(0)
        means = []
        for lam in self._LAMBDAS:
            draws = [macs(space, self._tilted(rng, lam)) / 1e6 for _ in range(calibration_draws)]
            means.append(sum(draws) / len(draws))
        self.lambdas = {c: self._LAMBDAS[min(range(len(means)), key=lambda i: abs(means[i] - c))]
                        for c in self.centres}

    def _tilted(self, rng: random.Random, lam: float) -> Subnet:
        space = self.space

        def pick(choices: tuple[int, ...]) -> int:
            weights = [math.exp(lam * i) for i in range(len(choices))]
            return rng.choices(choices, weights)[0]

        n, s = space.num_blocks, space.num_stages
        ks = [pick(space.kernel_choices) for _ in range(n)]
        e = [pick(space.expand_choices) for _ in range(n)]
        d = [pick(space.depth_choices) for _ in range(s)]
        return space.subnet(ks, e, d)

    def __call__(self, rng: random.Random, max_tries: int = 100_000) -> Subnet:
        centre = rng.choice(self.centres)
        lam = self.lambdas[centre]
        for _ in range(max_tries):
            candidate = self._tilted(rng, lam)
            if abs(macs(self.space, candidate) / 1e6 - centre) <= 0.5:
                return candidate
        raise OfaError(f"no subnet found in the {centre} MFLOPs bucket")  # pragma: no cover


def make_sampler(space: SearchSpace, balance: str):
    if balance == "none":
        return UniformSampler(space)
    if balance == "flops":
        return FlopsBalancedSampler(space)
    raise OfaError(f"unknown balance {balance!r}; choose none or flops")


class RSS(Schedule):
    """Random Subnet Sampling: one subnet per epoch, or ``per_batch`` subnets per step."""

    method = "rss"

    def __init__(self, space: SearchSpace, phase: Phase, seed: int, *, per_batch: int | None = None,
                 balance: str = "none") -> None:
        if per_batch is not None and per_batch < 1:
            raise OfaError(f"per_batch={per_batch} must be at least 1")
        super().__init__(space, [Phase(phase.name, phase.epochs, phase.lr, phase.warmup_epochs, per_batch or 1)],
                         seed)
        self.per_batch, self.sample = per_batch, make_sampler(space, balance)

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        if self.per_batch is None:
            return [self.sample(_rng(self.seed, "rss", epoch))]
        rng = _rng(self.seed, "rss", epoch, step)
        return [self.sample(rng) for _ in range(self.per_batch)]


class Sandwich(Schedule):
    """Largest + smallest + ``n_random`` sampled subnets at every step (BigNAS/US-Nets style)."""

    method = "sandwich"

    def __init__(self, space: SearchSpace, phase: Phase, seed: int, *, n_random: int = 2,
                 balance: str = "none") -> None:
        if n_random < 0:
            raise OfaError(f"sandwich needs per_batch >= 0 random subnets, not {n_random}")
        super().__init__(space, [Phase(phase.name, phase.epochs, phase.lr, phase.warmup_epochs, 2 + n_random)],
                         seed)
        self.n_random, self.sample = n_random, make_sampler(space, balance)

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        rng = _rng(self.seed, "sandwich", epoch, step)
        return [self.space.largest(), self.space.smallest()] + [self.sample(rng) for _ in range(self.n_random)]


class Fixed(Schedule):
    """One subnet for the whole run (the paper's Fig. 6)."""

    method = "fixed"

    def __init__(self, space: SearchSpace, phase: Phase, seed: int, *, subnet: Subnet) -> None:
        super().__init__(space, [phase], seed)
        space.check(subnet)
        self.subnet = subnet

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        return [self.subnet]


class TwoSubnets(Schedule):
    """Largest and smallest only (the paper's Fig. 7).

    ``max-then-min``: the largest for the first half of the epochs (rounded up), then the
    smallest; ``min-then-max`` the reverse; ``alternating``: smallest on even epochs, largest
    on odd ones.
    """

    ORDERS = ("max-then-min", "min-then-max", "alternating")

    def __init__(self, space: SearchSpace, phase: Phase, seed: int, *, order: str) -> None:
        if order not in self.ORDERS:
            raise OfaError(f"unknown order {order!r}")
        super().__init__(space, [phase], seed)
        self.method = order

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        big, small = self.space.largest(), self.space.smallest()
        if self.method == "alternating":
            return [big if epoch % 2 else small]
        first_half = epoch < math.ceil(self.total_epochs / 2)
        if self.method == "max-then-min":
            return [big if first_half else small]
        return [small if first_half else big]


class ProgressiveShrinking(Schedule):
    """OFA's Progressive Shrinking: the largest network, then elastic kernel, depth (2
    phases) and expand (2 phases), each phase drawing its subnets per step from its own
    choices, with knowledge distillation from the trained largest network after the first
    phase and channel sorting before each expand phase."""

    method = "ps"

    def __init__(self, space: SearchSpace, phases: Sequence[Phase], seed: int) -> None:
        super().__init__(space, phases, seed)

    @classmethod
    def build(cls, space: SearchSpace, phase_epochs: Sequence[int], lr: float, warmup_epochs: int,
              seed: int, kd: bool = True, ps_lr: str = "restart", sort: str = "full") -> "ProgressiveShrinking":
        """Phases with the paper's learning-rate divisors and subnets per step.

        ``ps_lr``: ``restart`` (a fresh optimizer and a full cosine per phase) or ``tail``
        (the released code: one cosine tail per phase, momentum carried over, phases after
        the kernel phase one epoch shorter - ``fidelity.tail_start``). ``sort``: ``full``
        (importance sort before each expand phase), ``ofa`` (the same, keeping the middle
        expand ratios' prefixes first, as OFA's ``re_organize_middle_weights``) or ``none``.
        """
        if len(phase_epochs) != 1 + len(PS_PHASES) or any(e < 0 for e in phase_epochs):
            raise OfaError(f"Progressive Shrinking needs {1 + len(PS_PHASES)} non-negative phase epochs, "
                           f"got {list(phase_epochs)}")
        if phase_epochs[0] < 1 and any(phase_epochs[1:]):
            raise OfaError("Progressive Shrinking needs at least one epoch of largest-network training "
                           "to distil from")
        if ps_lr not in ("restart", "tail") or sort not in ("none", "ofa", "full"):
            raise OfaError(f"unknown ps_lr {ps_lr!r} or sort {sort!r}")
        tail = ps_lr == "tail"
        trained = tail_phase_epochs(phase_epochs) if tail else list(phase_epochs)
        phases = [Phase("largest", trained[0], lr, min(warmup_epochs, trained[0]), 1)]
        for j, ((name, _, divisor, per_step, limits), epochs) in enumerate(zip(PS_PHASES, trained[1:]), start=1):
            expand = _limit(space.expand_choices, limits["expand"])
            timing = dict(lr_start=tail_start(phase_epochs, j), lr_span=sum(phase_epochs[: j + 1]),
                          carry_momentum=True) if tail else {}
            phases.append(Phase(name, epochs, lr / divisor, 0, per_step, kd=kd,
                                sort_channels=name.startswith("expand") and sort != "none",
                                choices=(space.kernel_choices, expand, _limit(space.depth_choices, limits["depth"])),
                                sort_keep=tuple(expand[1:-1]) if sort == "ofa" else (), **timing))
        return cls(space, phases, seed)

    def subnets(self, epoch: int, step: int) -> list[Subnet]:
        _, phase, _ = self.locate(epoch)
        if phase.choices is None:
            return [self.space.largest()]
        kc, ec, dc = phase.choices
        rng = _rng(self.seed, "ps", epoch, step)
        return [self.space.sample(rng, kernel_choices=kc, expand_choices=ec, depth_choices=dc)
                for _ in range(phase.subnets_per_step)]


def _limit(choices: tuple[int, ...], rule) -> tuple[int, ...]:
    if rule == "max":
        return choices[-1:]
    start, stop = rule
    return choices[start:stop]


def ps_phase_epochs(supernet_epochs: int) -> list[int]:
    """The paper's phase split for B supernet epochs: [B, B/1.5, B/7.2, B/1.5, B/7.2, B/1.5]
    rounded (B = 25 gives 25 + 17+3+17+3+17 = 25 + 57, Table 1)."""
    return [supernet_epochs] + [rule(supernet_epochs) for _, rule, *_ in PS_PHASES]


def scale_epochs(parts: Sequence[int], total: int) -> list[int]:
    """Split ``total`` epochs in the proportions of ``parts`` (largest remainder), the first
    part getting at least one epoch: what ``--epochs N`` does to a multi-phase schedule."""
    if total < 1:
        raise OfaError(f"epochs={total} must be at least 1")
    weight = sum(parts)
    exact = [total * p / weight for p in parts]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    if out[0] == 0:
        donor = max(range(len(out)), key=lambda i: (out[i], -i))
        out[donor] -= 1
        out[0] += 1
    return out
