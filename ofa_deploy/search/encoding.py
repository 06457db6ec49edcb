"""Subnets as integer vectors, for searching over many at once (numpy, no torch).

A subnet of a ``SearchSpace`` is a row of ``2 * num_blocks + num_stages`` choice indices:
kernel index per block, expand index per block, depth index per stage. Rows are made
canonical (a block beyond its stage's depth takes index 0, as ``Subnet`` does), so equal
networks have equal rows. ``features`` is what the accuracy predictor sees; ``gains`` turns
a linear model's weights on them back into per block and per stage tables
(``search.exact``); ``macs`` is exact (``cost``) and vectorised.

The features, all zero for an absent block (beyond its stage's depth), so that a block
counts only when it runs, as its MACs do:

* per active block, its (kernel, expand) cell one-hot: kernel x expand interactions, which
  marginal one-hots cannot fit (measured on the synthetic benchmark: the best marginal
  fit's optimum is ~0.16 points below the true one even with noise-free data);
* per active block, kernel and expand as numbers (divided by the largest choice): a trend
  that "larger helps", two weights per block instead of nine, learnt from few evaluations;
* per cell, the number of active blocks using it: what all blocks share, learnt from every
  evaluation at once;
* per stage, its depth one-hot.

A ridge penalty over all of them lets the data decide how much per-block detail to trust.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..cost import _tables
from ..space import SearchSpace, Subnet


class Encoding:
    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.n = space.num_blocks
        self.stages = space.num_stages
        self.depth_max = space.max_depth
        self.nk, self.ne, self.nd = len(space.kernel_choices), len(space.expand_choices), len(space.depth_choices)
        self.n_var = 2 * self.n + self.stages
        self.upper = np.array([self.nk - 1] * self.n + [self.ne - 1] * self.n + [self.nd - 1] * self.stages)
        self.stage_of = np.arange(self.n) // self.depth_max
        self.slot = np.arange(self.n) % self.depth_max
        self.depths = np.array(space.depth_choices)
        (fixed, _), tables = _tables(space)
        self.fixed_macs = fixed
        self.block_macs = np.array([[[tables[b][(k, e)][0] for e in space.expand_choices]
                                     for k in space.kernel_choices] for b in range(self.n)], dtype=np.float64)
        cells = self.nk * self.ne
        kk, ee = np.divmod(np.arange(cells), self.ne)
        kv, ev = np.array(space.kernel_choices, float), np.array(space.expand_choices, float)
        # per cell: its per-block columns (one-hot, then kernel and expand as numbers)
        self._cell_local = np.hstack([np.eye(cells), np.column_stack([kv[kk] / kv.max(), ev[ee] / ev.max()])])
        self._cell_shared = np.eye(cells)  # per cell: its shared (count over blocks) columns
        self.n_features = (self.n * self._cell_local.shape[1] + self._cell_shared.shape[1]
                                 + self.stages * self.nd)

    # -- conversions --------------------------------------------------------------------
    def encode(self, subnets: Sequence[Subnet]) -> np.ndarray:
        k = {v: i for i, v in enumerate(self.space.kernel_choices)}
        e = {v: i for i, v in enumerate(self.space.expand_choices)}
        d = {v: i for i, v in enumerate(self.space.depth_choices)}
        rows = [[k[v] for v in s.ks] + [e[v] for v in s.e] + [d[v] for v in s.d] for s in subnets]
        return self.canonical(np.array(rows, dtype=np.int64).reshape(len(rows), self.n_var))

    def decode(self, row: np.ndarray) -> Subnet:
        sp = self.space
        row = np.asarray(row, dtype=np.int64)
        return sp.subnet([sp.kernel_choices[i] for i in row[: self.n]],
                         [sp.expand_choices[i] for i in row[self.n: 2 * self.n]],
                         [sp.depth_choices[i] for i in row[2 * self.n:]])

    def active(self, x: np.ndarray) -> np.ndarray:
        """(N, num_blocks) booleans: which blocks run."""
        depth = self.depths[x[:, 2 * self.n:]]  # (N, stages)
        return self.slot[None, :] < depth[:, self.stage_of]

    def canonical(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.int64, copy=True)
        off = ~self.active(x)
        x[:, : self.n][off] = 0
        x[:, self.n: 2 * self.n][off] = 0
        return x

    def random(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return self.canonical(rng.integers(0, self.upper + 1, size=(count, self.n_var)))

    def keys(self, x: np.ndarray) -> list[bytes]:
        """A hashable key per (canonical) row."""
        x = np.ascontiguousarray(x, dtype=np.int8)
        return [row.tobytes() for row in x]

    # -- what models see ------------------------------------------------------------------
    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, n_features): the accuracy predictor's input (see the module docstring)."""
        x = np.asarray(x, dtype=np.int64)
        count = x.shape[0]
        act = self.active(x).astype(np.float64)[:, :, None]
        cell = x[:, : self.n] * self.ne + x[:, self.n: 2 * self.n]  # (N, blocks)
        local = (self._cell_local[cell] * act).reshape(count, -1)
        shared = (self._cell_shared[cell] * act).sum(axis=1)
        depth = np.zeros((count, self.stages * self.nd))
        depth[np.arange(count)[:, None], np.arange(self.stages)[None, :] * self.nd + x[:, 2 * self.n:]] = 1.0
        return np.hstack([local, shared, depth])

    def gains(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A linear model's weights on ``features`` -> (per block gains (blocks, kernels,
        expands), per stage gains (stages, depths)): the model is their sum over active
        blocks and stages, plus a constant."""
        w = np.asarray(weights, dtype=np.float64)
        per = self._cell_local.shape[1]
        local = w[: self.n * per].reshape(self.n, per)
        rest = w[self.n * per:]
        shared = rest[: self._cell_shared.shape[1]]
        depth = rest[self._cell_shared.shape[1]:].reshape(self.stages, self.nd)
        block = local @ self._cell_local.T + (self._cell_shared @ shared)[None, :]
        return block.reshape(self.n, self.nk, self.ne), depth

    def macs(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        per_block = self.block_macs[np.arange(self.n)[None, :], x[:, : self.n], x[:, self.n: 2 * self.n]]
        return self.fixed_macs + (per_block * self.active(x)).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"n_var": self.n_var, "features": self.n_features}
