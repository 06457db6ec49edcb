"""Accuracy predictors with uncertainty, on block choices (``Encoding.features``).

``ridge``: Bayesian ridge regression; the penalty is chosen by exact leave-one-out error
over a grid, the predictive standard deviation is the LOO residual scale times
``sqrt(1 + x' (X'X + lam I)^-1 x)`` (the noise plus the uncertainty of the weights).
``mlp``: an ensemble of small MLPs (scikit-learn), each fitted on a bootstrap resample; the
standard deviation is the spread of the members plus the residual scale.

The ridge model is linear, hence additive over blocks on ``Encoding.features``: the search
optimises its mean, and draws from its posterior over weights (Thompson sampling), exactly
under MACs budgets (``weights``, ``sample_weights``, ``search.exact``).

numpy (and scikit-learn for ``mlp``); the search benchmark compares the two
(``benchmarks/bench_search.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OfaError

KINDS = ("ridge", "mlp")
LAMBDAS = tuple(float(v) for v in np.logspace(-2, 3, 16))


def spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman rank correlation (average ranks for ties); None for fewer than 3 points or
    a constant side."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v[np.r_[np.diff(np.sort(v)) == 0, False]]):  # ties -> average rank
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks


@dataclass
class RidgeFit:
    """Ridge regression of centred targets on centred features (``ridge_loo``)."""

    weights: np.ndarray   # (F,) per feature
    x_mean: np.ndarray    # (F,) the features' means (the intercept is the targets' mean)
    penalty: float        # the one of least leave-one-out error
    fitted: np.ndarray    # (N,) in-sample predictions of the centred targets
    loo: np.ndarray       # (N,) exact leave-one-out residuals
    vt: np.ndarray        # the centred features' right singular vectors
    singular: np.ndarray  # and singular values


def ridge_loo(x: np.ndarray, y: np.ndarray, penalties: Sequence[float], *, floor: float = 1e-6) -> RidgeFit:
    """Ridge regression of ``y`` (N,), already centred, on the features ``x`` (N, F),
    centred here (an unpenalised intercept), with the penalty among ``penalties`` of least
    exact leave-one-out error (one SVD serves every penalty: residual / (1 - leverage), the
    leverage floored at ``1 - floor``)."""
    x_mean = x.mean(axis=0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ y
    best: Optional[tuple[float, float, np.ndarray, np.ndarray]] = None
    for lam in penalties:
        shrink = s**2 / (s**2 + lam)
        fitted = u @ (shrink * uty)
        hat = (u**2) @ shrink + 1.0 / len(y)  # leverage, the intercept included
        loo = (y - fitted) / np.maximum(1.0 - hat, floor)
        err = float(np.mean(loo**2))
        if best is None or err < best[0]:
            best = (err, lam, fitted, loo)
    assert best is not None
    _, lam, fitted, loo = best
    return RidgeFit(vt.T @ (s / (s**2 + lam) * uty), x_mean, lam, fitted, loo, vt, s)


class AccuracyModel:
    """``fit(F, y)`` then ``predict(F) -> (mean, sd)``; ``loo_spearman`` after a ridge fit."""

    def __init__(self, kind: str = "ridge", *, seed: int = 0, members: int = 5) -> None:
        if kind not in KINDS:
            raise OfaError(f"unknown accuracy predictor {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, self.seed, self.members = kind, seed, members
        self.info: dict[str, Any] = {}

    def fit(self, features: np.ndarray, accuracy: np.ndarray) -> "AccuracyModel":
        x, y = np.asarray(features, float), np.asarray(accuracy, float)
        if len(y) < 2:
            raise OfaError("the accuracy predictor needs at least 2 evaluated subnets")
        self._mean = float(y.mean())
        if self.kind == "ridge":
            self._fit_ridge(x, y - self._mean)
        else:
            self._fit_mlp(x, y - self._mean)
        return self

    # -- ridge ----------------------------------------------------------------------------
    def _fit_ridge(self, x: np.ndarray, y: np.ndarray) -> None:
        # centred features: the intercept is the mean, unpenalised
        fit = ridge_loo(x, y, LAMBDAS)
        self._xm, self._w, self._lam = fit.x_mean, fit.weights, fit.penalty
        # (X'X + lam I)^-1 in the SVD basis; directions outside X's row space get 1/lam
        self._vt, self._inv = fit.vt, 1.0 / (fit.singular**2 + fit.penalty)
        self._noise = float(np.sqrt(np.mean(fit.loo**2)))
        self._n = len(y)
        self.info = {"kind": "ridge", "lambda": fit.penalty, "loo_rmse": self._noise,
                     "loo_spearman": spearman(y - fit.loo, y)}

    # -- mlp ------------------------------------------------------------------------------
    def _fit_mlp(self, x: np.ndarray, y: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        rng = np.random.default_rng(self.seed)
        self._nets = []
        scale = float(y.std()) or 1.0
        self._scale = scale
        out_of_bag = np.zeros(len(y))
        counts = np.zeros(len(y))
        for m in range(self.members):
            pick = rng.integers(0, len(y), len(y))
            net = MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-2, learning_rate_init=3e-3, max_iter=600,
                               random_state=int(self.seed * 1000 + m))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                net.fit(x[pick], y[pick] / scale)
            self._nets.append(net)
            oob = np.setdiff1d(np.arange(len(y)), pick)
            if len(oob):
                out_of_bag[oob] += net.predict(x[oob]) * scale
                counts[oob] += 1
        seen = counts > 0
        resid = y[seen] - out_of_bag[seen] / counts[seen]
        self._noise = float(np.sqrt(np.mean(resid**2))) if seen.any() else float(y.std())
        self.info = {"kind": "mlp", "members": self.members, "oob_rmse": self._noise,
                     "oob_spearman": spearman(out_of_bag[seen] / counts[seen], y[seen]) if seen.sum() > 2 else None}

    # -- weights (ridge) ------------------------------------------------------------------
    @property
    def additive(self) -> bool:
        """Whether ``weights`` exist: a linear model, optimised exactly over additive costs."""
        return self.kind == "ridge"

    def weights(self) -> np.ndarray:
        """The fitted weights on the features (the intercept left out: a constant)."""
        if self.kind != "ridge":
            raise OfaError("only the ridge accuracy predictor has weights")
        return np.array(self._w)

    def sample_weights(self, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """A draw of the weights from the ridge posterior N(w, s^2 (X'X + lam I)^-1), s the LOO
        residual scale; ``scale`` widens (> 1) or narrows (< 1) it. A draw's optimum is a
        Thompson-sampling proposal: where the model is unsure it is often, but not always,
        optimistic, so a batch of draws explores and exploits without a tuned UCB bonus."""
        w = self.weights()
        vt, inv = self._vt, self._inv
        inside = vt.T @ (np.sqrt(inv) * rng.standard_normal(len(inv)))
        z = rng.standard_normal(vt.shape[1])
        outside = (z - vt.T @ (vt @ z)) / np.sqrt(self._lam)  # directions no evaluation has seen
        return w + scale * self._noise * (inside + outside)

    # -- predictions ----------------------------------------------------------------------
    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(features, float)
        if self.kind == "ridge":
            xc = x - self._xm
            mean = xc @ self._w
            proj = xc @ self._vt.T
            # x' A^-1 x with A = X'X + lam I: inside the row space via the SVD, outside 1/lam
            inside = (proj**2 * self._inv).sum(axis=1)
            outside = np.maximum((xc**2).sum(axis=1) - (proj**2).sum(axis=1), 0.0) / self._lam
            sd = self._noise * np.sqrt(1.0 + 1.0 / self._n + inside + outside)
            return mean + self._mean, sd
        preds = np.stack([net.predict(x) * self._scale for net in self._nets])
        return preds.mean(axis=0) + self._mean, np.sqrt(preds.var(axis=0) + self._noise**2)
