"""How much slower or faster a measuring chunk ran, from the anchor subnets it re-measured.

Model, per anchor ``a`` and chunk ``c`` in log latency: ``log t[a, c] = mu[a] + delta[c] +
eps[a, c]`` - the chunk's drift ``delta`` is shared by everything measured in it, ``eps``
is one measurement's noise. The plain estimate of ``delta[c]`` (the anchors' mean deviation
from their own medians) carries the anchors' noise ``sigma^2 / A`` into every row of the
chunk; when the drift is smaller than that noise, dividing it out makes a data set worse
(seen: 2 s measurements on a quiet VM, where one anchor read 38 % slow once and the plain
estimate moved its whole chunk by 12 %). So the estimate is shrunk toward no drift by the
empirical-Bayes factor ``tau^2 / (tau^2 + sigma^2 / A)``: ``sigma^2`` from the anchors'
disagreement within chunks, ``tau^2`` the chunk-to-chunk variance beyond it. With one
anchor, or one chunk, nothing tells noise from drift and the plain estimate is used.

Numpy only (the device side).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

# One measurement's noise (log sd) above which the anchors' verdict is "noisy": with 5 %
# noise even a perfect predictor, scored against single measurements, has only 68 % of
# them within +-5 % (P(|N(0, 0.05)| < 0.05)). Seen: 0.8-4.9 % on quiet 2-core VMs except
# cpu-2t (8.7 %: two threads on two shared cores), 11-12 % on a VM whose anchors moved 35 %
# between chunks (results/predictor-transfer/third-vm-noisy).
NOISY_SD = 0.05


def chunk_drift(anchors: Mapping[str, Mapping[int, float]], shrink: bool = True,
                ) -> tuple[dict[int, float], dict[str, float]]:
    """``({chunk: factor}, details)`` from ``{anchor: {chunk: latency}}`` (positive numbers).

    Only chunks every anchor was measured in get a factor. ``details``: the shrinkage
    weight and the noise and drift standard deviations it came from (log units).
    ``shrink=False``: the plain estimate (weight 1), for comparison."""
    if not anchors:
        return {}, {"weight": 1.0, "anchor_noise_sd": float("nan"), "drift_sd": float("nan")}
    chunks = sorted(set.intersection(*(set(v) for v in anchors.values())))
    if not chunks:
        return {}, {"weight": 1.0, "anchor_noise_sd": float("nan"), "drift_sd": float("nan")}
    logs = np.log(np.array([[anchors[a][c] for c in chunks] for a in sorted(anchors)], dtype=float))
    rel = logs - np.median(logs, axis=1, keepdims=True)
    raw = rel.mean(axis=0)
    n_anchors, n_chunks = logs.shape
    if n_anchors < 2 or n_chunks < 2:
        return ({c: float(np.exp(d)) for c, d in zip(chunks, raw)},
                {"weight": 1.0, "anchor_noise_sd": float("nan"), "drift_sd": float("nan")})
    centred = logs - logs.mean(axis=1, keepdims=True)
    resid = centred - centred.mean(axis=0, keepdims=True)
    noise2 = float(np.sum(resid**2)) / ((n_anchors - 1) * (n_chunks - 1))
    between = float(np.var(centred.mean(axis=0), ddof=1))
    drift2 = max(0.0, between - noise2 / n_anchors)
    weight = drift2 / (drift2 + noise2 / n_anchors) if drift2 + noise2 > 0 else 0.0
    weight = weight if shrink else 1.0
    factors = {c: float(np.exp(weight * d)) for c, d in zip(chunks, raw)}
    return factors, {"weight": weight, "anchor_noise_sd": noise2**0.5, "drift_sd": drift2**0.5}


def noise_warning(report: Mapping[str, Any]) -> Optional[str]:
    """One line for the user when ``LatencyDataset.drift_report``'s anchors say a single
    measurement on this machine is noisier than ``NOISY_SD``, else None."""
    sd = report.get("anchor_noise_sd")
    if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not sd > NOISY_SD:
        return None
    return (f"the latency measurements are noisy: the anchor subnets re-measured in each of "
            f"{report.get('anchored_chunks', '?')} chunks disagree by {sd:.1%} (sd of one measurement): a predictor "
            f"fitted to or checked against them is no more accurate than that; stop other work on the machine that "
            f"measures (or raise --min-time-s) and measure again into a new output directory")
