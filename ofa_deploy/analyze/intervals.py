"""Bootstrap confidence intervals for differences between training methods (numpy only).

A reproduction measures every method on the same subnets for several training seeds, so a
per-bucket difference ``RSS - PS`` is an ``S x n`` matrix (seeds x subnets). Both factors are
random: another seed trains another supernet, another draw of the bucket gives other
subnets. The interval therefore resamples seeds and subnets *independently* (rows and
columns of the matrix, each with replacement: the bootstrap for crossed random effects,
Owen 2007, "The pigeonhole bootstrap") and takes percentiles of the resampled mean.
Resampling cells independently would treat the ``S x n`` numbers as independent and give
an interval too narrow whenever one seed's supernet is better across all its subnets.

With one seed the rows are fixed and the interval covers only the subnet draw; with three
seeds the seed factor has just ten distinct resamples, so the interval is coarse: a claim
"holds" only when every resample agrees, which is the honest reading of three seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import OfaError

DRAWS = 10_000
LEVEL = 0.95
BOOTSTRAP_SEED = 0
"""Fixed: the same measurements always give the same interval."""

HOLDS, FAILS, NOISE = "holds", "fails", "inside the noise"
ZERO = 1e-9
"""Interval ends closer to 0 than this count as 0 (rounding of differences of accuracies)."""


def crossed_bootstrap(values: Sequence[Sequence[float]] | np.ndarray, *, draws: int = DRAWS, level: float = LEVEL,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval at ``level`` of the mean of ``values`` (rows x columns), resampling
    rows and columns independently with replacement, ``draws`` times."""
    data = np.asarray(values, dtype=float)
    if data.ndim != 2 or data.size == 0:
        raise OfaError(f"bootstrap needs a non-empty 2-D matrix, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise OfaError("bootstrap values must be finite")
    if draws < 1 or not 0 < level < 1:
        raise OfaError(f"draws={draws} must be >= 1 and level={level} in (0, 1)")
    rows, cols = data.shape
    rng = np.random.default_rng(seed)
    # resampling k items with replacement = multinomial counts of how often each is picked
    row_counts = rng.multinomial(rows, np.full(rows, 1.0 / rows), size=draws)
    col_counts = rng.multinomial(cols, np.full(cols, 1.0 / cols), size=draws)
    means = np.einsum("dr,rc,dc->d", row_counts, data, col_counts) / (rows * cols)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def verdict(interval: tuple[float, float]) -> str:
    """``holds`` (interval above 0), ``fails`` (below 0) or ``inside the noise`` (contains 0)."""
    lo, hi = interval
    # accuracies are fractions k/N: a difference that is 0 can come out as +-1e-17
    if lo > ZERO:
        return HOLDS
    if hi < -ZERO:
        return FAILS
    return NOISE


def difference(a: np.ndarray, b: np.ndarray, **bootstrap) -> dict:
    """``a - b`` for two ``seeds x subnets`` matrices of the same subnets: the mean difference,
    its interval and verdict (``a > b`` holds / fails / inside the noise)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise OfaError(f"cannot pair measurements of shapes {a.shape} and {b.shape}")
    diff = a - b
    lo, hi = crossed_bootstrap(diff, **bootstrap)
    return {"mean": float(diff.mean()), "interval": [lo, hi], "verdict": verdict((lo, hi))}
