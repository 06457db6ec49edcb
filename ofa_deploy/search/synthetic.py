"""A synthetic accuracy landscape with a known optimum, for benchmarking and testing the
search (numpy, no torch).

Accuracy = base + per active block a[block, kernel, expand] + per stage b[stage, depth].
Two ways to get the tables:

* ``Landscape(space, seed=...)``, random: larger kernels, expand ratios and depths help on
  average with diminishing returns, with block-to-block variation and an idiosyncratic
  term per (block, kernel, expand) cell, scaled so the population spans about ``spread``
  (the issue's F-MNIST RSS supernet: ~2 points);
* ``Landscape.fitted(space, subnets, accuracies)``: the same additive form fitted by ridge
  regression to real (subnet, validation accuracy) pairs, the block term per (kernel,
  expand) cell or as a kernel plus an expand term, whichever predicts left-out subnets
  better, the penalty chosen by exact leave-one-out, the noise by default the leave-one-out residual SD (issue 33: "an
  additive per-block model fitted to real evaluations, plus noise at the measured level").

A measurement adds noise of standard deviation ``noise``, fixed per subnet (one validation
set: measuring a subnet again gives the same number). MACs are additive over blocks too,
so the true optimum under a MACs budget is exact: per stage every configuration,
Pareto-pruned, then stages combined and pruned.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from ..errors import OfaError
from ..space import SearchSpace, Subnet
from .accuracy import ridge_loo
from .encoding import Encoding

# ridge penalties tried for ``Landscape.fitted`` (features are 0/1 one-hots): wide, so that
# noise-free additive data is fitted (almost) exactly and noisy data shrunk hard
FIT_PENALTIES = tuple(float(v) for v in np.logspace(-6, 4, 41))
FIT_FORMS = ("auto", "joint", "marginal")


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
        self.fit_info: Optional[dict[str, float]] = None

    @classmethod
    def fitted(cls, space: SearchSpace, subnets: Sequence[Subnet], accuracies: Sequence[float], *,
               noise: Optional[float] = None, seed: int = 0, form: str = "auto") -> "Landscape":
        """The additive landscape (per active block a (kernel, expand) term, per stage a depth
        term, a constant) fitted by ridge regression to measured ``accuracies`` (fractions)
        of ``subnets``; the penalty minimises the exact leave-one-out error. ``form``: the
        block term as one number per (kernel, expand) cell (``"joint"``), as a kernel term
        plus an expand term (``"marginal"``: fewer numbers, no kernel x expand interaction),
        or whichever of the two has the smaller leave-one-out error (``"auto"``: the data
        choose how much structure they support). ``noise``: the
        measurement SD, by default the LOO residual SD (the fit's error on a subnet it did
        not see: measurement noise plus what the additive form misses). ``seed`` seeds the
        noise draw only; the landscape is the same for every seed. ``fit_info`` says how
        well it fits (n, penalty, LOO residual SD, R^2 in sample and LOO, the population's
        spread under it)."""
        enc = Encoding(space)
        x = enc.encode(list(subnets))
        y = np.asarray(accuracies, dtype=np.float64)
        if len(y) != len(x):
            raise OfaError(f"{len(x)} subnets but {len(y)} accuracies")
        if len(y) < 3:
            raise OfaError(f"fitting a landscape needs at least 3 evaluated subnets (got {len(y)})")
        if not np.isfinite(y).all():
            raise OfaError("an accuracy to fit the landscape to is not a finite number")
        if noise is not None and not (np.isfinite(noise) and noise >= 0):
            raise OfaError(f"the landscape's noise must be a finite number >= 0 (got {noise})")
        if form not in FIT_FORMS:
            raise OfaError(f"landscape form {form!r}: one of {', '.join(FIT_FORMS)}")
        fits = {name: _ridge_loo(_additive_design(enc, x, name), y) for name in ("joint", "marginal")
                if form in (name, "auto")}
        chosen = min(fits, key=lambda name: fits[name][2]["loo_sd"])
        weights, intercept, info = fits[chosen]
        info = {**info, "form": chosen, **{f"loo_sd_{name}": fit[2]["loo_sd"] for name, fit in fits.items()}}
        land = cls.__new__(cls)
        land.space, land.enc, land.seed = space, enc, seed
        land.a, land.b = _block_tables(enc, weights, chosen)
        land.structure = None  # all of it is structure: fitted, with no term left unidentified
        land.scale, land.offset = 1.0, intercept
        land.noise = info["loo_sd"] if noise is None else float(noise)
        population = land.true(enc.random(np.random.default_rng(0), 4000))
        lo, hi = np.percentile(population, [1, 99])
        land.fit_info = {**info, "noise_sd": land.noise, "population_p1_p99_span": float(hi - lo),
                         "population_sd": float(population.std()), "population_median": float(np.median(population))}
        return land

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


def _block_columns(enc: Encoding, form: str) -> int:
    return enc.n * (enc.nk * enc.ne if form == "joint" else enc.nk + enc.ne)


def _additive_design(enc: Encoding, x: np.ndarray, form: str = "joint") -> np.ndarray:
    """(N, block columns + stages * depths) 0/1: per active block its (kernel, expand) cell
    (``joint``) or its kernel and its expand ratio (``marginal``), per stage its depth."""
    count, width = len(x), _block_columns(enc, form)
    design = np.zeros((count, width + enc.stages * enc.nd))
    rows, blocks = np.nonzero(enc.active(x))
    kernel, expand = x[rows, blocks], x[rows, enc.n + blocks]
    if form == "joint":
        design[rows, blocks * enc.nk * enc.ne + kernel * enc.ne + expand] = 1.0
    else:
        design[rows, blocks * enc.nk + kernel] = 1.0
        design[rows, enc.n * enc.nk + blocks * enc.ne + expand] = 1.0
    depth_cols = width + np.arange(enc.stages)[None, :] * enc.nd + x[:, 2 * enc.n:]
    design[np.arange(count)[:, None], depth_cols] = 1.0
    return design


def _block_tables(enc: Encoding, weights: np.ndarray, form: str) -> tuple[np.ndarray, np.ndarray]:
    """The landscape's tables a[block, kernel, expand] and b[stage, depth] from the weights
    of ``_additive_design``'s columns."""
    width = _block_columns(enc, form)
    if form == "joint":
        a = weights[:width].reshape(enc.n, enc.nk, enc.ne)
    else:
        k = weights[: enc.n * enc.nk].reshape(enc.n, enc.nk)
        e = weights[enc.n * enc.nk: width].reshape(enc.n, enc.ne)
        a = k[:, :, None] + e[:, None, :]
    return a, weights[width:].reshape(enc.stages, enc.nd)


def _ridge_loo(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
    """Ridge regression with an unpenalised intercept, the penalty of least exact
    leave-one-out error over ``FIT_PENALTIES``: (weights, intercept, fit statistics)."""
    ym = float(y.mean())
    yc = y - ym
    fit = ridge_loo(design, yc, FIT_PENALTIES, floor=1e-9)
    xm, weights, lam, fitted, loo = fit.x_mean, fit.weights, fit.penalty, fit.fitted, fit.loo
    err = float(np.mean(loo**2))
    total = float((yc**2).sum()) or 1.0
    info = {"n": len(y), "parameters": design.shape[1] + 1, "penalty": lam,
            "loo_sd": float(np.sqrt(err)), "r2": 1.0 - float(((yc - fitted) ** 2).sum()) / total,
            "loo_r2": 1.0 - float((loo**2).sum()) / total, "accuracy_sd": float(y.std()),
            "accuracy_mean": ym}
    return weights, ym - float(xm @ weights), info
