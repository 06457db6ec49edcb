"""The held-out truth measured more than once (``predictor check --repeats K``): how far
one measurement is from a subnet's latency, and what that lets any predictor score.

On a shared 2-core VM a 2 s measurement of one subnet carried 4.5-5.3 % noise between two
runs even after the anchors' drift was divided out (``results/predictor-transfer/
same-vm-repeat-2s``): the true latency itself would have scored only 93-97 % within ±10 %,
69-77 % within ±5 % and Spearman 0.961-0.976 against one such measurement, so a check
against one measurement could not tell a predictor that meets ``predictor check``'s usual
goals from one that does not. Measuring each held-out subnet K times, in other chunks and
another order, and scoring against the geometric mean divides that noise variance by K;
the spread between the repeats says how large it was.

Numpy only (the device side); ``repeat_truth`` takes a (K, n) array of latencies.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

MAX_REPEATS = 5


def _within(sd: float, tolerance: float) -> float:
    """P(|p - m| / m <= tolerance) for a perfect prediction p and a measurement m = p e^z,
    z ~ N(0, sd^2)."""
    if sd <= 0:
        return 1.0
    lo, hi = math.log(1 / (1 + tolerance)), math.log(1 / (1 - tolerance))
    return 0.5 * (math.erf(hi / (sd * math.sqrt(2))) - math.erf(lo / (sd * math.sqrt(2))))


def repeat_truth(latency_ms: np.ndarray) -> Tuple[np.ndarray, dict[str, Any]]:
    """``latency_ms`` (K repeats, n subnets), K >= 2 -> (the geometric mean per subnet, a
    report). Each repeat's common scale (the machine was faster in one of them) is removed
    before the subnets' spread is pooled: ``noise_sd`` is the relative noise of one
    measurement, ``truth_noise_sd`` that of the mean (``noise_sd / sqrt(K)``); the
    ``ceiling_*`` figures are what a perfect predictor would score against the mean (normal
    noise; Spearman by the Spearman-Brown step from the repeats' mean pairwise correlation)."""
    from scipy.stats import spearmanr

    logs = np.log(np.asarray(latency_ms, dtype=float))
    k, n = logs.shape
    scale = np.median(logs - logs.mean(axis=0), axis=1, keepdims=True)  # each repeat's log scale
    dev = (logs - scale) - (logs - scale).mean(axis=0)
    noise = float(np.sqrt(np.sum(dev ** 2) / ((k - 1) * n)))
    truth_sd = noise / math.sqrt(k)
    # rank correlations need 3 subnets; a non-positive one leaves no ceiling to state (None)
    r = float(np.mean([spearmanr(logs[a], logs[b]).statistic for a in range(k) for b in range(a + 1, k)])) \
        if n > 2 else None
    reliability = k * r / (1 + (k - 1) * r) if r is not None and r > 0 else None
    report = {
        "repeats": k,
        "n": n,
        "noise_sd": round(noise, 5),
        "truth_noise_sd": round(truth_sd, 5),
        "scale_by_repeat": [round(float(x), 4) for x in np.exp(scale[:, 0])],
        "spearman_between_repeats": round(r, 4) if r is not None and r == r else None,
        "ceiling_within_10pct": round(_within(truth_sd, 0.10), 4),
        "ceiling_within_5pct": round(_within(truth_sd, 0.05), 4),
        "ceiling_spearman": round(math.sqrt(reliability), 4) if reliability is not None else None,
    }
    return np.exp(logs.mean(axis=0)), report
