"""How often each setting and each MFLOPs range was trained: the sampling bias, counted.

The unit is the subnet-step: a step that trains K subnets adds K. Settings of blocks a
subnet skips (beyond its stage's depth) are not counted.
"""

from __future__ import annotations

import math

from ..buckets import macs_range, paper_buckets
from ..cost import macs
from ..space import SearchSpace, Subnet


class SamplingHistogram:
    """Counts per block and choice (``ks``, ``e``), per stage and depth (``d``), per 1-MFLOP
    bin and per paper bucket (+-0.5 MFLOPs around 4, 6, ..., 14)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        lo, hi = macs_range(space)
        self.edges = list(range(math.floor(lo / 1e6), math.ceil(hi / 1e6) + 1))
        self.ks = [[0] * len(space.kernel_choices) for _ in range(space.num_blocks)]
        self.e = [[0] * len(space.expand_choices) for _ in range(space.num_blocks)]
        self.d = [[0] * len(space.depth_choices) for _ in range(space.num_stages)]
        self.mflops = [0] * (len(self.edges) - 1)
        self.paper_buckets = paper_buckets(space)  # PAPER_BUCKETS at 32x32, their places at other sizes
        self.buckets = {f"{b:g}": 0 for b in self.paper_buckets}
        self.total = 0
        self._macs: dict[Subnet, int] = {}

    def macs(self, subnet: Subnet) -> int:
        if subnet not in self._macs:
            self._macs[subnet] = macs(self.space, subnet)
        return self._macs[subnet]

    def add(self, subnet: Subnet, count: int = 1) -> None:
        space = self.space
        for s, depth in enumerate(subnet.d):
            self.d[s][space.depth_choices.index(depth)] += count
            for i in range(depth):
                b = s * space.max_depth + i
                self.ks[b][space.kernel_choices.index(subnet.ks[b])] += count
                self.e[b][space.expand_choices.index(subnet.e[b])] += count
        mf = self.macs(subnet) / 1e6
        bin_index = min(max(0, math.floor(mf) - self.edges[0]), len(self.mflops) - 1)
        self.mflops[bin_index] += count
        for b in self.paper_buckets:
            if abs(mf - b) <= 0.5:
                self.buckets[f"{b:g}"] += count
        self.total += count

    def to_json(self) -> dict:
        space = self.space
        return {
            "unit": "subnet-steps",
            "choices": {"ks": list(space.kernel_choices), "e": list(space.expand_choices),
                        "d": list(space.depth_choices)},
            "ks": self.ks,
            "e": self.e,
            "d": self.d,
            "mflops_edges": self.edges,
            "mflops_counts": self.mflops,
            "buckets": self.buckets,
            "total": self.total,
        }

    def load_json(self, data: dict) -> None:
        self.ks, self.e, self.d = data["ks"], data["e"], data["d"]
        self.mflops, self.buckets, self.total = data["mflops_counts"], data["buckets"], data["total"]
