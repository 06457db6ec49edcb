"""How sure a latency prediction is: a spread of log-latency per subnet, turned into
relative standard errors, two-sided intervals and one-sided upper bounds.

Predictors are fitted in log space (the multiplicative form) or judged by relative error,
so uncertainty is kept as the standard deviation of ``log(measured / predicted)``: a
relative error, the same for a 0.3 ms and a 30 ms subnet unless the model says otherwise.

Two sources, recorded in ``predictor.json`` under ``"uncertainty"``:

- ``bayesian`` (``predictor adapt``): the posterior of a Bayesian linear model; the
  predictive spread of subnet ``x`` is ``scale2 * (1 + psi(x)' cov psi(x))`` with Student-t
  quantiles of ``dof`` degrees of freedom - wider for subnets unlike the measured ones.
- ``cross-validation`` (``predictor build``, and every predictor written before this
  module existed): one spread for all subnets, the root mean square of the cross-validated
  log residuals, or, for files that recorded only the mean absolute relative error,
  ``mean_abs_rel_error * sqrt(pi / 2)`` (what a normal residual implies); normal quantiles.

A predictor with neither has no uncertainty, and asking for it is an ``OfaError`` that says so.
Numpy only (the device side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Optional

import numpy as np

from ..errors import OfaError

KINDS = ("bayesian", "cross-validation")


def t_quantile(p: float, dof: float) -> float:
    """Quantile ``p`` of Student's t with ``dof`` degrees of freedom (``inf``: normal), by
    the Cornish-Fisher expansion in 1/dof (error below 2e-3 for dof >= 5 at p <= 0.99)."""
    z = NormalDist().inv_cdf(p)
    if not math.isfinite(dof):
        return z
    if dof <= 0:
        raise OfaError(f"degrees of freedom must be positive, got {dof}")
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


def check_level(level: float, name: str = "confidence") -> float:
    level = float(level)
    if not (0.5 <= level < 1.0):
        raise OfaError(f"{name} must be in [0.5, 1), got {level:g}")
    return level


@dataclass(frozen=True)
class Uncertainty:
    """The spread of ``log(measured / predicted)``: ``scale2`` (a variance), optionally
    grown per subnet by ``psi' cov psi``; quantiles of Student's t with ``dof``."""

    kind: str
    scale2: float
    dof: float
    cov: Optional[np.ndarray] = None
    source: str = ""

    def log_sd(self, psi: Optional[np.ndarray], n: int) -> np.ndarray:
        """Per-subnet standard deviation of the log prediction error (``psi``: the model's
        feature rows, needed only when ``cov`` is set)."""
        if self.cov is None or psi is None:
            return np.full(n, math.sqrt(self.scale2))
        quad = np.einsum("ij,ij->i", psi @ self.cov, psi)
        return np.sqrt(self.scale2 * (1.0 + np.maximum(quad, 0.0)))

    def z(self, level: float, two_sided: bool) -> float:
        """The multiplier of ``log_sd`` for an interval of ``level`` (two-sided: central)."""
        p = (1 + level) / 2 if two_sided else level
        return t_quantile(p, self.dof)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "scale2": self.scale2,
                               "dof": self.dof if math.isfinite(self.dof) else None, "source": self.source}
        if self.cov is not None:
            out["cov"] = self.cov.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Uncertainty":
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise OfaError(f"uncertainty must be an object with kind one of {', '.join(KINDS)}")
        scale2 = float(data["scale2"])
        dof = float("inf") if data.get("dof") is None else float(data["dof"])
        if not (math.isfinite(scale2) and scale2 > 0) or dof <= 0:
            raise OfaError("uncertainty scale2 and dof must be positive numbers")
        cov = None
        if data.get("cov") is not None:
            cov = np.asarray(data["cov"], dtype=float)
            if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.all(np.isfinite(cov)):
                raise OfaError("uncertainty cov must be a finite square matrix")
        return cls(data["kind"], scale2, dof, cov, str(data.get("source", "")))


def from_validation(info: dict[str, Any]) -> Optional[Uncertainty]:
    """A constant spread from the cross-validated error a predictor recorded, or None."""
    validation = info.get("validation")
    if not isinstance(validation, dict):
        return None
    rms = validation.get("rms_log_error")
    if isinstance(rms, (int, float)) and rms > 0:
        return Uncertainty("cross-validation", float(rms) ** 2, float("inf"),
                           source="root mean square of the cross-validated log residuals")
    mare = validation.get("mean_abs_rel_error")
    if isinstance(mare, (int, float)) and mare > 0:
        return Uncertainty("cross-validation", (float(mare) * math.sqrt(math.pi / 2)) ** 2, float("inf"),
                           source="cross-validated mean absolute relative error x sqrt(pi/2) "
                                  "(normal residuals assumed; the file records no log residuals)")
    return None
