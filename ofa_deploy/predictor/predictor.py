"""A latency predictor per target: an OFA-style per-block lookup table fitted to measured
whole networks, additive or multiplicative, whichever cross-validates better.

Features (``predictor.features``): how often each of OFA's per-block lookup-table keys
occurs in a subnet, and the sizes of the operations behind each key.

Model: ``latency = T^-1(intercept + counts . table + z . coef)``, fitted on the measured
subnets in one of three ways, whichever has the lowest 5-fold relative error:

- *additive* (``T`` = identity, no ``z``): OFA's lookup table, each key's cost in ms.
  The table is fitted as a *physics prior* ``phi(key) . beta`` (``phi`` = 1, expand MACs,
  depthwise MACs, project MACs, SE MACs, activation elements; ``beta`` >= 0, six numbers
  every measurement informs) plus a per-key deviation shrunk towards it by ridge, so keys
  seen rarely or measured noisily stay near the prior.
- *multiplicative* (``T`` = log): each key multiplies latency by ``exp(table[key])``, and
  ``z`` = standardised logs of the network's summed ``phi`` (expand, depthwise, project,
  SE MACs, activations) carry the size of the whole network. On this project's 2-core CPU
  (ONNX Runtime, one thread, batch 1) the additive form put 79 % of held-out subnets
  within +-10 % and this one 98 % (``results/predictor-cpu-full``): a block costs more
  inside a larger network (weights and activations leave the caches), which a sum of
  fixed per-block costs cannot express and a product of factors roughly does.
- *physics* (saved as multiplicative, ``info["table_model"] = "physics"``): the same
  log-space model with the table restricted to ``physics(key) . beta`` - per stage, a
  block's count and its MACs in each operation (expand, depthwise per kernel size,
  project, SE), ~33 numbers instead of ~90 free keys: a key's cost is mostly what its
  operations cost on that stage's feature map, which this states and the free table
  must learn. Measured (``results/predictor-transfer/drift``, 5-fold, 128 subnets per
  fit, five CPU landscapes): r.m.s. error 1.6-4.7 % vs 1.9-5.4 % with the per-key tables
  alone; on the committed ``cpu`` data (300 subnets) mean error 2.8 % vs 3.4 %.

A third saved form, *hybrid*, is what ``predictor adapt`` writes (``predictor.transfer``):
``base_scale x`` its source's model ``+ intercept + counts . table``, the source nested in
the file (``base``).

Ridge strengths are chosen by the same cross-validation. Prediction is a sparse dot
product and an ``exp``: numpy only, thousands of subnets per second.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union, overload

import numpy as np

from ..cost import cost
from ..errors import OfaError
from ..io import atomic_write_json, read_json
from ..space import SearchSpace, Subnet
from .features import PHI_FEATURES, SIZE_FEATURES, Featurizer
from .latency_model import FORMS, LatencyModel, all_finite, positive_number
from .uncertainty import Uncertainty, check_level, from_validation

FORMAT = "ofa-deploy/latency-predictor"
FORMAT_VERSION = 2
FITS = ("additive", "multiplicative", "physics")  # how its table may be fitted

Floats = Union[Sequence[float], np.ndarray]  # measured or predicted latencies: a list or an array


@dataclass
class LatencyPredictor:
    """A fitted predictor: ``predict(subnets)`` -> latency in ms (the ``statistic`` of
    the target's measured latency it was fitted to). ``statistic_ratios`` hold, per other
    statistic, its median ratio to that one over the measurements, so that
    ``predict(subnets, "p90")`` can answer for a p90 budget."""

    space: SearchSpace
    target: str
    statistic: str
    form: str
    intercept: float
    table: dict[str, float]
    size_mean: np.ndarray
    size_scale: np.ndarray
    size_coef: np.ndarray
    info: dict[str, Any]
    statistic_ratios: dict[str, float] = field(default_factory=dict)
    base: Optional[LatencyModel] = None  # hybrid only: the source's model, times ``base_scale``
    base_scale: float = 1.0
    floor: float = 1e-6  # ms; no prediction is lower (see ``LatencyModel``)

    def __post_init__(self) -> None:
        self.statistic_ratios = {**self.statistic_ratios, self.statistic: 1.0}
        if self.form not in FORMS:
            raise OfaError(f"unknown predictor form {self.form!r}; expected one of {', '.join(FORMS)}")
        self._feat = Featurizer(self.space)
        missing = [k for k in self._feat.keys if k not in self.table]
        if missing:
            raise OfaError(f"predictor has no table entry for {len(missing)} block keys of this space "
                           f"(e.g. {missing[0]}); it was fitted for another space")
        if (self.form == "hybrid") != (self.base is not None):
            raise OfaError("a hybrid predictor needs a base model, and only a hybrid has one")
        self._model = LatencyModel(self.form, self.intercept, np.array([self.table[k] for k in self._feat.keys]),
                             self.size_mean, self.size_scale, self.size_coef, self.base, self.base_scale, self.floor)
        # files written before predictions carried uncertainty hold only their validation error
        recorded = self.info.get("uncertainty")
        self.uncertainty = Uncertainty.from_dict(recorded) if recorded is not None else from_validation(self.info)
        if self.uncertainty is not None and self.uncertainty.cov is not None:
            dim = {"multiplicative": 1 + len(self._feat.keys) + len(self.size_coef),
                   "hybrid": 2 + len(self._feat.keys)}.get(self.form)
            if self.uncertainty.cov.shape[0] != dim:
                raise OfaError("uncertainty cov does not match the predictor's features")

    @overload
    def predict(self, subnets: Subnet, statistic: Optional[str] = None) -> float: ...

    @overload
    def predict(self, subnets: Sequence[Subnet], statistic: Optional[str] = None) -> np.ndarray: ...

    def predict(self, subnets: Sequence[Subnet] | Subnet, statistic: Optional[str] = None) -> np.ndarray | float:
        """Predicted latency (ms) of one subnet (a float) or of many (an array), as the
        fitted statistic or, scaled by its measured ratio, as ``statistic``."""
        statistic = statistic or self.statistic
        if statistic not in self.statistic_ratios:
            raise OfaError(f"this predictor was fitted to {self.statistic} and knows no {statistic} ratio; "
                           f"it knows {', '.join(sorted(self.statistic_ratios))}")
        single = isinstance(subnets, Subnet)
        subs = [subnets] if isinstance(subnets, Subnet) else list(subnets)
        for sub in subs[:1]:
            self.space.check(sub)
        pred = self._model.predict(self._feat, self._feat.counts(subs)) * self.statistic_ratios[statistic]
        return float(pred[0]) if single else pred

    def features(self, counts: np.ndarray) -> np.ndarray:
        """The rows ``psi`` the posterior covariance of ``uncertainty`` is over. Multiplicative:
        (N, 1 + K + G) ``[1, key counts, standardised size features]``, ``log latency = psi .
        [intercept, table, size_coef]``. Hybrid: (N, 2 + K) ``[base latency, 1, key counts]``
        divided by the predicted latency, ``latency = psi . [base_scale, intercept, table]``
        times it - a relative error, as the multiplicative rows give."""
        if self.form == "hybrid":
            base = self._model.base
            assert base is not None  # __post_init__ refuses a hybrid without one
            rows = np.column_stack([base.predict(self._feat, counts), np.ones(len(counts)), counts])
            return rows / self._model.predict(self._feat, counts)[:, None]
        z = (self._feat.size(counts) - self.size_mean) / self.size_scale if len(self.size_coef) else np.zeros(
            (len(counts), 0))
        return np.column_stack([np.ones(len(counts)), counts, z])

    def predict_distribution(self, subnets: Sequence[Subnet], statistic: Optional[str] = None
                             ) -> tuple[np.ndarray, np.ndarray]:
        """(predicted ms, standard deviation of log(measured / predicted)) per subnet; the
        second is the relative standard error. ``OfaError`` if the predictor has none."""
        if self.uncertainty is None:
            raise OfaError(f"this {self.target} predictor records no validation error and no posterior, so its "
                           "predictions carry no uncertainty; refit it with `ofa-deploy predictor build` (from its "
                           "latency.jsonl, without measuring again) or adapt one with `ofa-deploy predictor adapt`")
        subs = list(subnets)
        pred = np.asarray(self.predict(subs, statistic), dtype=float)
        psi = self.features(self._feat.counts(subs)) if self.uncertainty.cov is not None else None
        return pred, self.uncertainty.log_sd(psi, len(subs))

    def interval(self, subnets: Sequence[Subnet], level: float = 0.9, statistic: Optional[str] = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted, lower, upper) ms: the central ``level`` interval of the measurement."""
        pred, sd = self.predict_distribution(subnets, statistic)
        assert self.uncertainty is not None  # predict_distribution raised otherwise
        half = self.uncertainty.z(check_level(level, "interval level"), two_sided=True) * sd
        return pred, pred * np.exp(-half), pred * np.exp(half)

    def upper_bound(self, subnets: Sequence[Subnet], confidence: float = 0.9, statistic: Optional[str] = None
                    ) -> np.ndarray:
        """Latency (ms) the measurement stays below with probability ``confidence``."""
        pred, sd = self.predict_distribution(subnets, statistic)
        assert self.uncertainty is not None  # predict_distribution raised otherwise
        return pred * np.exp(self.uncertainty.z(check_level(confidence), two_sided=False) * sd)

    def predict_counts(self, counts: np.ndarray, statistic: Optional[str] = None,
                       confidence: Optional[float] = None) -> np.ndarray:
        """``predict`` (``confidence`` None) or ``upper_bound`` of subnets given as their key
        ``counts`` (``Featurizer.counts_from_choices``): the vectorised path of a search."""
        statistic = statistic or self.statistic
        if statistic not in self.statistic_ratios:
            raise OfaError(f"this predictor was fitted to {self.statistic} and knows no {statistic} ratio")
        pred = self._model.predict(self._feat, counts) * self.statistic_ratios[statistic]
        if confidence is None:
            return pred
        if self.uncertainty is None:
            raise OfaError(f"this {self.target} predictor records no uncertainty, so it has no upper bound")
        psi = self.features(counts) if self.uncertainty.cov is not None else None
        sd = self.uncertainty.log_sd(psi, len(counts))
        return pred * np.exp(self.uncertainty.z(check_level(confidence), two_sided=False) * sd)

    @property
    def featurizer(self) -> Featurizer:
        return self._feat

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "statistic": self.statistic,
            "statistic_ratios": self.statistic_ratios,
            "form": self.form,
            "space": self.space.to_dict(),
            "intercept": self.intercept,
            "table": self.table,
            "size": {
                "features": list(SIZE_FEATURES),
                "mean": self.size_mean.tolist(),
                "scale": self.size_scale.tolist(),
                "coef": self.size_coef.tolist(),
            },
            **({"base": self.base.to_dict(self._feat.keys), "base_scale": self.base_scale, "floor": self.floor}
               if self.base else {}),
            **self.info,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyPredictor":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OfaError(f"not a latency predictor (format {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise OfaError(f"latency predictor format version {data.get('format_version')} is not supported "
                           f"(this ofa-deploy reads {FORMAT_VERSION}); rerun `ofa-deploy predictor build` with the "
                           f"same --out to refit it from its latency.jsonl without measuring again")
        try:
            size = data["size"]
            known = {"format", "format_version", "target", "statistic", "statistic_ratios", "form", "space",
                     "intercept", "table", "size", "base", "base_scale", "floor"}
            space = SearchSpace.from_dict(data["space"])
            hybrid = data["form"] == "hybrid"
            numbers = [data["intercept"], *data["table"].values(), *size["mean"], *size["scale"], *size["coef"],
                       data.get("base_scale", 1.0)]
            if not all_finite(numbers):
                raise ValueError("intercept, table, size and base_scale must be finite numbers")
            return cls(
                space=space,
                target=data["target"],
                statistic=data["statistic"],
                form=data["form"],
                intercept=float(data["intercept"]),
                table={k: float(v) for k, v in data["table"].items()},
                size_mean=np.asarray(size["mean"], dtype=float),
                size_scale=np.asarray(size["scale"], dtype=float),
                size_coef=np.asarray(size["coef"], dtype=float),
                info={k: v for k, v in data.items() if k not in known},
                statistic_ratios={k: float(v) for k, v in data.get("statistic_ratios", {}).items()},
                base=LatencyModel.from_dict(data["base"], Featurizer(space).keys) if hybrid else None,
                base_scale=float(data["base_scale"]) if hybrid else 1.0,
                floor=positive_number(data["floor"], "floor") if hybrid else 1e-6,
            )
        except KeyError as exc:
            raise OfaError(f"latency predictor is malformed: missing field {exc}") from None
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise OfaError(f"latency predictor is malformed: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        path = Path(path)
        if not path.is_file():
            raise OfaError(f"latency predictor {path} does not exist; build one with `ofa-deploy predictor build`")
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except OfaError as exc:
            raise OfaError(f"{path}: {exc}") from None


ALPHAS = {"additive": (1.0, 10.0, 100.0, 1e3, 1e4), "multiplicative": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
          "physics": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)}


def _fit_model(feat: Featurizer, x: np.ndarray, y: np.ndarray, form: str,
               alpha: float) -> tuple[LatencyModel, np.ndarray]:
    """One form at one ridge strength; returns the model and (additive only) the prior's beta."""
    from sklearn.linear_model import LinearRegression, Ridge

    if form == "additive":
        prior = LinearRegression(positive=True).fit(x @ feat.phi, y)
        table_prior = feat.phi @ prior.coef_
        deviation = Ridge(alpha=alpha, fit_intercept=False).fit(x, y - prior.intercept_ - x @ table_prior).coef_
        empty = np.zeros(0)
        return (LatencyModel(form, float(prior.intercept_), table_prior + deviation, empty, empty, empty),
                prior.coef_.astype(float))
    z = feat.size(x)
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale[scale == 0] = 1.0
    if form == "physics":  # ridge on standardised per-stage operation costs, mapped back onto the keys
        ops = x @ feat.physics
        ops_mean, ops_scale = ops.mean(axis=0), ops.std(axis=0)
        ops_scale[ops_scale == 0] = 1.0
        p = ops.shape[1]
        reg = Ridge(alpha=alpha).fit(np.column_stack([(ops - ops_mean) / ops_scale, (z - mean) / scale]), np.log(y))
        beta = reg.coef_[:p] / ops_scale
        return LatencyModel("multiplicative", float(reg.intercept_ - ops_mean @ beta), feat.physics @ beta, mean, scale,
                      reg.coef_[p:].astype(float)), np.zeros(0)
    k = x.shape[1]
    reg = Ridge(alpha=alpha).fit(np.column_stack([x, (z - mean) / scale]), np.log(y))
    return LatencyModel(form, float(reg.intercept_), reg.coef_[:k].astype(float), mean, scale,
                  reg.coef_[k:].astype(float)), np.zeros(0)


def _folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(n)
    return [(np.setdiff1d(order, order[f::folds]), order[f::folds]) for f in range(folds)]


def fit(space: SearchSpace, subnets: Sequence[Subnet], latency_ms: Floats, *, target: str,
        statistic: str = "p50", seed: int = 0, forms: Sequence[str] = FITS,
        statistic_ratios: Optional[dict[str, float]] = None,
        info: Optional[dict[str, Any]] = None) -> LatencyPredictor:
    """Fit the predictor to measured ``latency_ms`` of ``subnets``: the form and ridge
    strength with the lowest 5-fold mean relative error, refitted on all of them. The
    cross-validated error of every form is kept in ``info["forms"]``."""
    y = np.asarray(latency_ms, dtype=float)
    if len(subnets) != len(y):
        raise OfaError("one latency per subnet is needed")
    if len(y) < 6:
        raise OfaError(f"a predictor needs at least 6 measured subnets, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise OfaError("measured latencies must be positive numbers")
    unknown = [f for f in forms if f not in FITS]
    if unknown or not forms:
        raise OfaError(f"unknown predictor form(s) {unknown}; expected some of {', '.join(FITS)}")
    feat = Featurizer(space)
    x = feat.counts(subnets)
    splits = _folds(len(y), 5, seed)
    scores: dict[str, dict[str, float]] = {}
    for form in forms:
        for alpha in ALPHAS[form]:
            err = 0.0
            for train, test in splits:
                pred = _fit_model(feat, x[train], y[train], form, alpha)[0].predict(feat, x[test])
                err += float(np.sum(np.abs(pred - y[test]) / y[test]))
            if form not in scores or err / len(y) < scores[form]["cv_mean_abs_rel_error"] - 1e-12:
                scores[form] = {"alpha": alpha, "cv_mean_abs_rel_error": err / len(y)}
    form = min(scores, key=lambda f: scores[f]["cv_mean_abs_rel_error"])
    model, beta = _fit_model(feat, x, y, form, scores[form]["alpha"])
    extra: dict[str, Any] = {"fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             "train_subnets": len(y), "forms": scores,
                             "table_model": "physics" if form == "physics" else "per-key"}
    if form == "additive":
        extra["prior"] = dict(zip(PHI_FEATURES, beta.tolist()))
    return LatencyPredictor(
        space=space, target=target, statistic=statistic, form=model.form, intercept=model.intercept,
        table={k: float(c) for k, c in zip(feat.keys, model.table)}, size_mean=model.size_mean,
        size_scale=model.size_scale, size_coef=model.size_coef, info={**extra, **(info or {})},
        statistic_ratios=dict(statistic_ratios or {}),
    )


def accuracy_report(measured: Floats, predicted: Floats) -> dict[str, float]:
    """Share of predictions within +-5 % and +-10 % of the measurement, mean/max absolute
    relative error, RMSE (ms) and Spearman's rank correlation."""
    from scipy.stats import spearmanr

    m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    rel = np.abs(p - m) / m
    rho = spearmanr(m, p).statistic if len(m) > 2 else float("nan")
    return {
        "n": int(len(m)),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "mean_abs_rel_error": float(rel.mean()),
        "max_abs_rel_error": float(rel.max()),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "rms_log_error": float(np.sqrt(np.mean(np.log(np.maximum(p, 1e-9) / m) ** 2))),
        "spearman": float(rho),
    }


def cross_validate(space: SearchSpace, subnets: Sequence[Subnet], latency_ms: Sequence[float], *,
                   folds: int = 5, seed: int = 0, target: str = "", statistic: str = "p50",
                   forms: Sequence[str] = FITS) -> dict[str, float]:
    """K-fold validation error of ``fit`` (choosing among ``forms``) on these measurements
    (the error saved with a predictor: every subnet predicted by a model that never saw it)."""
    y = np.asarray(latency_ms, dtype=float)
    pred = np.zeros_like(y)
    for train, test in _folds(len(y), folds, seed):
        model = fit(space, [subnets[i] for i in train], y[train], target=target, statistic=statistic, seed=seed,
                    forms=forms)
        pred[test] = model.predict([subnets[i] for i in test])
    return accuracy_report(y, pred)


class MacsBaseline:
    """What MACs alone achieve: latency = a * MACs + b, least squares."""

    def __init__(self, space: SearchSpace, subnets: Iterable[Subnet], latency_ms: Floats) -> None:
        self.space = space
        x = np.array([cost(space, s)[0] / 1e6 for s in subnets])
        self.slope, self.intercept = np.polyfit(x, np.asarray(latency_ms, dtype=float), 1)

    def predict(self, subnets: Sequence[Subnet]) -> np.ndarray:
        x = np.array([cost(self.space, s)[0] / 1e6 for s in subnets])
        return self.slope * x + self.intercept
