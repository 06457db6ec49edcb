"""A synthetic accuracy landscape with a known optimum, for benchmarking and testing the
search (numpy, no torch).

Accuracy = base + per active block a[block, kernel, expand] + per stage b[stage, depth]:
larger kernels, expand ratios and depths help on average with diminishing returns, with
block-to-block variation, scaled so the population spans about ``spread`` (the issue's
F-MNIST RSS supernet: ~2 points). A measurement adds noise of standard deviation
``noise``, fixed per subnet (one validation set: measuring a subnet again gives the same
number). MACs are additive over blocks too, so the true optimum under a MACs budget is
exact: per stage every configuration, Pareto-pruned, then stages combined and pruned.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from ..space import SearchSpace, Subnet
from .encoding import Encoding


class Landscape:
    def __init__(self, space: SearchSpace, *, seed: int = 0, spread: float = 0.02, noise: float = 0.002,
                 base: float = 0.88) -> None:
        self.space, self.enc, self.seed, self.noise = space, Encoding(space), seed, noise
        rng = np.random.default_rng(seed)
        enc = self.enc
        kernel_gain = np.log(np.array(space.kernel_choices, float))
        expand_gain = np.log(np.array(space.expand_choices, float))
        # drawn in this order (kernel slopes, expand slopes, per-cell terms, depths): the
        # landscapes of earlier results are unchanged
        trend = (rng.uniform(0.3, 1.0, (enc.n, 1, 1)) * kernel_gain[None, :, None]
                 + rng.uniform(0.3, 1.0, (enc.n, 1, 1)) * expand_gain[None, None, :])
        idiosyncratic = rng.normal(0, 0.25, (enc.n, enc.nk, enc.ne))
        depth_gain = np.cumsum(rng.uniform(0.0, 1.0, (enc.stages, enc.nd)), axis=1)
        self.a, self.b = trend + idiosyncratic, depth_gain
        # the landscape less its per-cell terms: what few evaluations can identify (a
        # kernel and an expand slope per block, shared shapes, depths); ``structured_oracle``
        self.structure: np.ndarray | None = trend
        # scale so that the population's 1st-99th percentile span is ``spread``
        raw = self._raw(enc.random(rng, 4000))
        lo, hi = np.percentile(raw, [1, 99])
        self.scale = spread / (hi - lo)
        self.offset = base - self.scale * float(np.median(raw))

    def _raw(self, x: np.ndarray) -> np.ndarray:
        enc = self.enc
        blocks = self.a[np.arange(enc.n)[None, :], x[:, : enc.n], x[:, enc.n: 2 * enc.n]]
        depth = self.b[np.arange(enc.stages)[None, :], x[:, 2 * enc.n:]]
        return (blocks * enc.active(x)).sum(axis=1) + depth.sum(axis=1)

    def true(self, x: np.ndarray) -> np.ndarray:
        return self.offset + self.scale * self._raw(np.asarray(x, dtype=np.int64))

    def measure(self, subnets: Sequence[Subnet]) -> list[float]:
        """Noisy accuracy, the same each time a subnet is measured."""
        x = self.enc.encode(list(subnets))
        out = []
        for sub, value in zip(subnets, self.true(x)):
            digest = hashlib.sha256(f"{self.seed}:{sub}".encode()).digest()
            noise = np.random.default_rng(int.from_bytes(digest[:8], "little")).normal(0, self.noise)
            out.append(float(value + noise))
        return out

    def structured_oracle(self, budgets_mflops: Sequence[float]) -> list[Optional[float]]:
        """Per budget, the true accuracy of the exact optimum of the landscape *without* its
        per-cell terms (``structure``): what a perfect estimate of the identifiable
        structure would pick. None where no subnet fits, or for a landscape without that
        split (``fitted``: all of it is structure)."""
        from .exact import best_under_budgets

        if self.structure is None:
            return [None] * len(budgets_mflops)
        found = best_under_budgets(self.enc, self.structure, self.b, list(budgets_mflops))
        return [None if f is None else float(self.true(f[0][None, :])[0]) for f in found]

    def optimum(self, max_mflops: float) -> tuple[float, float]:
        """(true accuracy, MFLOPs) of the best subnet within ``max_mflops``."""
        enc, space = self.enc, self.space
        budget = max_mflops * 1e6 - enc.fixed_macs
        total = [(0.0, 0.0)]  # (macs, raw accuracy) Pareto set over the stages so far
        for s in range(enc.stages):
            options = []
            for di, depth in enumerate(space.depth_choices):
                blocks = [s * enc.depth_max + i for i in range(depth)]
                costs = np.zeros(1)
                gains = np.full(1, self.b[s, di])
                for blk in blocks:
                    m = enc.block_macs[blk].ravel()
                    g = self.a[blk].ravel()
                    costs = (costs[:, None] + m[None, :]).ravel()
                    gains = (gains[:, None] + g[None, :]).ravel()
                    costs, gains = _prune(costs, gains)
                options.append((costs, gains))
            sc = np.concatenate([c for c, _ in options])
            sg = np.concatenate([g for _, g in options])
            sc, sg = _prune(sc, sg)
            tc = np.array([c for c, _ in total])
            tg = np.array([g for _, g in total])
            cc = (tc[:, None] + sc[None, :]).ravel()
            cg = (tg[:, None] + sg[None, :]).ravel()
            keep = cc <= budget
            cc, cg = _prune(cc[keep], cg[keep])
            total = list(zip(cc, cg))
        if not total:
            return float("nan"), float("nan")
        c, g = max(total, key=lambda t: t[1])
        return float(self.offset + self.scale * g), float((c + enc.fixed_macs) / 1e6)


def _prune(cost: np.ndarray, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (cost lower, gain higher) Pareto set."""
    if not len(cost):
        return cost, gain
    order = np.lexsort((-gain, cost))
    cost, gain = cost[order], gain[order]
    best = np.maximum.accumulate(gain)
    keep = np.r_[True, gain[1:] > best[:-1]]
    return cost[keep], gain[keep]
