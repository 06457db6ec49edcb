"""Evaluating a search's subnets over torchrun ranks (host side, torch).

``torchrun --nproc-per-node N -m ofa_deploy search RUN ...`` (gloo: the evaluations run on
the CPU). Rank 0 runs the search itself (the accuracy predictor, NSGA-II, the journal, the
outputs); each round it hands the batch of subnets it proposes to :func:`Pool.evaluate`,
which broadcasts it, every rank (rank 0 too) evaluates its shard, and the accuracies are
gathered on rank 0. The other ranks only serve batches (:func:`serve`) and write nothing.

Determinism: a subnet's accuracy depends only on the checkpoint, the calibration images and
the choosing split, never on which rank measured it or what it measured before (BN is
recalibrated on a fresh extraction every time), and rank 0's search sees the accuracies in
the batch's order. So N ranks pick exactly what one process picks, at the same torch thread
count per process (a different count changes BN statistics in the last bits).

Shards are balanced by MACs (longest first onto the least loaded rank): evaluation time
grows with a subnet's size, and a round waits for its slowest rank.

Messages, all broadcast from rank 0: ``("go",)`` once rank 0's checks passed, ``("eval",
[subnet texts])`` per batch, ``("stop",)`` at the end or when rank 0 fails (so no rank waits
for a batch that never comes).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from ..errors import OfaError
from ..space import SearchSpace, Subnet

EvaluateOne = Callable[[Subnet], float]


def shard(costs: Sequence[float], world: int) -> list[list[int]]:
    """Indices per rank: largest cost first onto the least loaded rank (ties: lowest rank,
    lowest index), so every rank computes the same assignment."""
    load = [0.0] * world
    out: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        out[r].append(i)
        load[r] += costs[i]
    return [sorted(s) for s in out]


def _costs(space: SearchSpace, subnets: Sequence[Subnet]) -> list[float]:
    from ..cost import macs

    return [float(macs(space, s)) for s in subnets]


class Pool:
    """Rank 0's side: evaluate batches over every rank, recording each result as it
    arrives (``record(text, accuracy)``: the journal)."""

    def __init__(self, ctx: Any, space: SearchSpace, evaluate_one: EvaluateOne,
                 record: Callable[[str, float], None]) -> None:
        self.ctx, self.space, self.evaluate_one, self.record = ctx, space, evaluate_one, record
        self.evaluated_here = 0
        self.seconds = 0.0  # wall time inside evaluate (every rank's work overlaps in it)
        # True only while every other rank is known to wait in its next broadcast: before
        # "go", between batches (after a gather returned whole). A SIGTERM is raised at the
        # next bytecode after a collective returns - between a broadcast's two halves (size,
        # then payload), between the broadcast and the gather, inside the gather - and a
        # "stop" sent then meets another collective on the other side (mismatched
        # collectives hang until gloo's timeout, or abort the process). Whenever it is False
        # ``abort`` sends nothing: rank 0's exit closes the connections, and the other
        # ranks' collective fails in one line instead.
        self.listening = True

    def evaluate(self, subnets: Sequence[Subnet]) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return self._evaluate(list(subnets))
        finally:
            self.seconds += time.perf_counter() - started

    def _evaluate(self, subnets: list[Subnet]) -> dict[str, float]:
        if not subnets:
            return {}
        world = self.ctx.world_size
        if world > 1:
            self.listening = False
            _broadcast(("eval", [str(s) for s in subnets]), self.ctx)
        mine = shard(_costs(self.space, subnets), world)[0]
        results: dict[str, float] = {}
        for i in mine:
            acc = self.evaluate_one(subnets[i])
            results[str(subnets[i])] = acc
            self.record(str(subnets[i]), acc)  # rank 0's own results are journaled at once
        self.evaluated_here += len(mine)
        if world > 1:
            gathered = _gather(None, self.ctx) or []
            self.listening = True
            for text, acc in gathered:
                results[text] = acc
                self.record(text, acc)
        missing = [str(s) for s in subnets if str(s) not in results]
        if missing:
            raise OfaError(f"the ranks returned no accuracy for {len(missing)} subnet(s) ({missing[0]}, ...)")
        return results

    def start(self) -> None:
        """Rank 0's checks passed: the other ranks may serve."""
        if self.ctx.world_size > 1:
            self.listening = False
            _broadcast(("go",), self.ctx)
            self.listening = True

    def stop(self) -> None:
        if self.ctx.world_size > 1:
            self.listening = False
            _broadcast(("stop",), self.ctx)


def abort(ctx: Any, pool: Optional[Pool] = None) -> None:
    """Rank 0 failed before or during the search: release the other ranks if they are known
    to be waiting for a broadcast (best effort: a rank that failed itself no longer listens);
    otherwise send nothing and let rank 0's exit end their collective."""
    if ctx.world_size > 1 and (pool is None or pool.listening):
        try:
            _broadcast(("stop",), ctx)
        except OfaError:
            pass


def wait_for_go(ctx: Any) -> bool:
    """A serving rank: True once rank 0 says go, False if it says stop (it failed and said why)."""
    return _receive(ctx)[0] == "go"


def serve(ctx: Any, space: SearchSpace, evaluate_one: EvaluateOne) -> int:
    """A serving rank: evaluate this rank's shard of every batch until rank 0 says stop;
    returns how many subnets it evaluated."""
    count = 0
    while True:
        message = _receive(ctx)
        if message[0] != "eval":
            return count
        subnets = [Subnet.parse(t, space) for t in message[1]]
        mine = shard(_costs(space, subnets), ctx.world_size)[ctx.rank]
        _gather([(str(subnets[i]), evaluate_one(subnets[i])) for i in mine], ctx)
        count += len(mine)


# -- collectives -----------------------------------------------------------------------------

def _broadcast(message: tuple, ctx: Any) -> None:
    import torch.distributed as dist

    from ..train.dist import collective

    with collective("subnet batch broadcast", _AFTER):
        dist.broadcast_object_list([message], src=0)


def _receive(ctx: Any) -> tuple:
    import torch.distributed as dist

    from ..train.dist import collective

    box: list[Optional[tuple]] = [None]
    with collective("subnet batch broadcast", _AFTER):
        dist.broadcast_object_list(box, src=0)
    assert box[0] is not None
    return box[0]


def _gather(results: Optional[list[tuple[str, float]]], ctx: Any) -> Optional[list[tuple[str, float]]]:
    """Every rank's (subnet, accuracy) pairs on rank 0 (flattened, rank order); None elsewhere."""
    import torch.distributed as dist

    from ..train.dist import collective

    box: Optional[list[Any]] = [None] * ctx.world_size if ctx.rank == 0 else None
    with collective("accuracy gather", _AFTER):
        dist.gather_object(results or [], box, dst=0)
    if box is None:
        return None
    return [pair for part in box[1:] for pair in (part or [])]


# what a rank that lost a peer says next: the journal keeps every evaluation rank 0 received
_AFTER = "run the same search command again: it continues from its journal of evaluations"
