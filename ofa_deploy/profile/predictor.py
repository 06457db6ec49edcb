"""A latency predictor per target: an OFA-style per-block lookup table fitted to measured
whole networks, plus a learned correction for what blocks do not add up to.

Features. Every active MBConv block is keyed as in OFA's latency tables
(``expanded_conv-input:HxWxC-output:HxWxC-expand:M-kernel:K-stride:S-idskip:I-se:E-hs:H``);
a subnet is the vector of how often each key occurs (90 keys in the paper's space: per
stage, a first block and a repeated block, times 3 kernels x 3 expand ratios). The stem,
first block and head are the same in every subnet and land in the intercept.

Model, in three layers, each fitted on the measured subnets:

1. a *physics prior* per key: ``phi(key) . beta`` with ``phi`` = (1, expand MACs,
   depthwise MACs, project MACs, SE MACs, activation elements) and non-negative ``beta``
   shared by all keys - six numbers that every measurement informs;
2. the *table*: prior plus a per-key deviation fitted by ridge regression on the key
   counts (shrunk towards the prior, so keys seen rarely or measured noisily stay near
   it) - OFA's lookup table, learned from whole networks, so per-call overheads and
   fusions are shared out among the blocks;
3. a *correction*: ridge regression of the residual on global features (table estimate,
   block count and the summed ``phi``), for what blocks do not add up to.

Ridge strengths are chosen by 5-fold cross-validation. Everything is linear, so the
fitted model is a table and a few numbers saved as JSON, and prediction is a sparse dot
product: numpy only, thousands of subnets per second.
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..cost import cost
from ..errors import OfaError
from ..io import atomic_write_json, read_json
from ..space import BlockSpec, SearchSpace, Subnet

FORMAT = "ofa-deploy/latency-predictor"
FORMAT_VERSION = 1


def block_key(spec: BlockSpec) -> str:
    """OFA's lookup-table key of one MBConv block."""
    return (f"expanded_conv-input:{spec.size_in}x{spec.size_in}x{spec.in_ch}"
            f"-output:{spec.size_out}x{spec.size_out}x{spec.out_ch}-expand:{spec.mid}-kernel:{spec.kernel}"
            f"-stride:{spec.stride}-idskip:{int(spec.residual)}-se:{int(spec.se_hidden > 0)}"
            f"-hs:{int(spec.act == 'hswish')}")


@functools.lru_cache(maxsize=16)
def _key_index(space: SearchSpace) -> tuple[tuple[str, ...], np.ndarray]:
    """(keys, index[b, k_i, e_i] -> column) for every block position and choice."""
    n, s = space.num_blocks, space.num_stages
    keys: dict[str, int] = {}
    index = np.zeros((n, len(space.kernel_choices), len(space.expand_choices)), dtype=np.int64)
    full = [space.max_depth] * s
    for ki, k in enumerate(space.kernel_choices):
        for ei, e in enumerate(space.expand_choices):
            specs = space.block_specs(space.subnet([k] * n, [e] * n, full))
            for b, spec in enumerate(specs):
                index[b, ki, ei] = keys.setdefault(block_key(spec), len(keys))
    return tuple(keys), index


PHI_FEATURES = ("block", "expand_mmacs", "depthwise_mmacs", "project_mmacs", "se_mmacs", "act_melems")
GLOBAL_FEATURES = ("table_ms", "blocks", "expand_mmacs", "depthwise_mmacs", "project_mmacs", "se_mmacs",
                   "act_melems")


def block_phi(spec: BlockSpec) -> list[float]:
    """Physics features of one block (see ``PHI_FEATURES``)."""
    area_in, area_out = spec.size_in**2, spec.size_out**2
    return [1.0, area_in * spec.in_ch * spec.mid / 1e6, area_out * spec.mid * spec.kernel**2 / 1e6,
            area_out * spec.mid * spec.out_ch / 1e6, 2 * spec.mid * spec.se_hidden / 1e6,
            spec.mid * (area_in + area_out) / 1e6]


@functools.lru_cache(maxsize=16)
def _phi_matrix(space: SearchSpace) -> np.ndarray:
    keys, _ = _key_index(space)
    specs: dict[str, BlockSpec] = {}
    n, full = space.num_blocks, [space.max_depth] * space.num_stages
    for k in space.kernel_choices:
        for e in space.expand_choices:
            for spec in space.block_specs(space.subnet([k] * n, [e] * n, full)):
                specs.setdefault(block_key(spec), spec)
    return np.array([block_phi(specs[key]) for key in keys])


class Featurizer:
    """Subnets of one space -> (N, K) key counts; counts -> (N, G) global features."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.keys, self._index = _key_index(space)
        self.phi = _phi_matrix(space)
        self._k = {k: i for i, k in enumerate(space.kernel_choices)}
        self._e = {e: i for i, e in enumerate(space.expand_choices)}

    def counts(self, subnets: Sequence[Subnet]) -> np.ndarray:
        out = np.zeros((len(subnets), len(self.keys)))
        for row, sub in enumerate(subnets):
            ks, e = sub.ks, sub.e
            for b in sub.active_blocks():
                out[row, self._index[b, self._k[ks[b]], self._e[e[b]]]] += 1
        return out

    def globals(self, counts: np.ndarray, table_ms: np.ndarray) -> np.ndarray:
        return np.column_stack([table_ms, counts @ self.phi])


@dataclass
class LatencyPredictor:
    """A fitted predictor: ``predict(subnets)`` -> latency in ms (the ``statistic`` of
    the target's measured latency, p50 by default)."""

    space: SearchSpace
    target: str
    statistic: str
    intercept: float
    table: dict[str, float]
    corr_mean: np.ndarray
    corr_scale: np.ndarray
    corr_coef: np.ndarray
    corr_intercept: float
    info: dict[str, Any]

    def __post_init__(self) -> None:
        self._feat = Featurizer(self.space)
        missing = [k for k in self._feat.keys if k not in self.table]
        if missing:
            raise OfaError(f"predictor has no table entry for {len(missing)} block keys of this space "
                           f"(e.g. {missing[0]}); it was fitted for another space")
        self._table_vec = np.array([self.table[k] for k in self._feat.keys])

    def table_ms(self, subnets: Sequence[Subnet]) -> np.ndarray:
        """The additive lookup-table estimate alone."""
        return self.intercept + self._feat.counts(subnets) @ self._table_vec

    def predict(self, subnets: Sequence[Subnet] | Subnet) -> np.ndarray | float:
        """Predicted latency (ms) of one subnet (a float) or of many (an array)."""
        single = isinstance(subnets, Subnet)
        subs = [subnets] if single else list(subnets)
        for sub in subs[:1]:
            self.space.check(sub)
        counts = self._feat.counts(subs)
        base = self.intercept + counts @ self._table_vec
        g = (self._feat.globals(counts, base) - self.corr_mean) / self.corr_scale
        pred = base + g @ self.corr_coef + self.corr_intercept
        pred = np.maximum(pred, 1e-6)
        return float(pred[0]) if single else pred

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "statistic": self.statistic,
            "space": self.space.to_dict(),
            "intercept_ms": self.intercept,
            "table_ms": self.table,
            "correction": {
                "features": list(GLOBAL_FEATURES),
                "mean": self.corr_mean.tolist(),
                "scale": self.corr_scale.tolist(),
                "coef": self.corr_coef.tolist(),
                "intercept": self.corr_intercept,
            },
            **self.info,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyPredictor":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OfaError(f"not a latency predictor (format {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise OfaError(f"latency predictor format version {data.get('format_version')} is not supported")
        try:
            corr = data["correction"]
            known = {"format", "format_version", "target", "statistic", "space", "intercept_ms", "table_ms",
                     "correction"}
            return cls(
                space=SearchSpace.from_dict(data["space"]),
                target=data["target"],
                statistic=data["statistic"],
                intercept=float(data["intercept_ms"]),
                table={k: float(v) for k, v in data["table_ms"].items()},
                corr_mean=np.asarray(corr["mean"], dtype=float),
                corr_scale=np.asarray(corr["scale"], dtype=float),
                corr_coef=np.asarray(corr["coef"], dtype=float),
                corr_intercept=float(corr["intercept"]),
                info={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
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


ALPHAS_TABLE = (1.0, 10.0, 100.0, 1e3, 1e4)
ALPHAS_CORRECTION = (1.0, 10.0, 100.0, 1e4)


@dataclass
class _Fit:
    intercept: float
    beta: np.ndarray
    table: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    corr_intercept: float

    def predict(self, feat: Featurizer, counts: np.ndarray) -> np.ndarray:
        base = self.intercept + counts @ self.table
        return base + ((feat.globals(counts, base) - self.mean) / self.scale) @ self.coef + self.corr_intercept


def _fit_arrays(feat: Featurizer, x: np.ndarray, y: np.ndarray, alpha_table: float, alpha_corr: float) -> _Fit:
    from sklearn.linear_model import LinearRegression, Ridge

    prior = LinearRegression(positive=True).fit(x @ feat.phi, y)
    table_prior = feat.phi @ prior.coef_
    base = prior.intercept_ + x @ table_prior
    deviation = Ridge(alpha=alpha_table, fit_intercept=False).fit(x, y - base).coef_
    table = table_prior + deviation
    base = prior.intercept_ + x @ table
    g = feat.globals(x, base)
    mean, scale = g.mean(axis=0), g.std(axis=0)
    scale[scale == 0] = 1.0
    corr = Ridge(alpha=alpha_corr).fit((g - mean) / scale, y - base)
    return _Fit(float(prior.intercept_), prior.coef_.astype(float), table, mean, scale, corr.coef_.astype(float),
                float(corr.intercept_))


def _folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(n)
    return [(np.setdiff1d(order, order[f::folds]), order[f::folds]) for f in range(folds)]


def fit(space: SearchSpace, subnets: Sequence[Subnet], latency_ms: Sequence[float], *, target: str,
        statistic: str = "p50", seed: int = 0, info: Optional[dict[str, Any]] = None) -> LatencyPredictor:
    """Fit prior, table and correction to measured ``latency_ms`` of ``subnets``; the two
    ridge strengths are the pair with the lowest 5-fold mean relative error."""
    y = np.asarray(latency_ms, dtype=float)
    if len(subnets) != len(y):
        raise OfaError("one latency per subnet is needed")
    if len(y) < 6:
        raise OfaError(f"a predictor needs at least 6 measured subnets, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise OfaError("measured latencies must be positive numbers")
    feat = Featurizer(space)
    x = feat.counts(subnets)
    splits = _folds(len(y), 5, seed)
    best, best_err = (ALPHAS_TABLE[-1], ALPHAS_CORRECTION[-1]), float("inf")
    for a_t in ALPHAS_TABLE:
        for a_c in ALPHAS_CORRECTION:
            err = 0.0
            for train, test in splits:
                pred = _fit_arrays(feat, x[train], y[train], a_t, a_c).predict(feat, x[test])
                err += float(np.sum(np.abs(pred - y[test]) / y[test]))
            if err < best_err - 1e-12:
                best, best_err = (a_t, a_c), err
    f = _fit_arrays(feat, x, y, *best)
    return LatencyPredictor(
        space=space, target=target, statistic=statistic, intercept=f.intercept,
        table={k: float(c) for k, c in zip(feat.keys, f.table)}, corr_mean=f.mean, corr_scale=f.scale,
        corr_coef=f.coef, corr_intercept=f.corr_intercept,
        info={"fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "train_subnets": len(y), "ridge_alpha": {"table": best[0], "correction": best[1]},
              "prior": dict(zip(PHI_FEATURES, f.beta.tolist())), **(info or {})},
    )


def accuracy_report(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
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
        "spearman": float(rho),
    }


def cross_validate(space: SearchSpace, subnets: Sequence[Subnet], latency_ms: Sequence[float], *,
                   folds: int = 5, seed: int = 0, target: str = "", statistic: str = "p50") -> dict[str, float]:
    """K-fold validation error of ``fit`` on these measurements (the error saved with a
    predictor: every subnet predicted by a model that never saw it)."""
    y = np.asarray(latency_ms, dtype=float)
    pred = np.zeros_like(y)
    for train, test in _folds(len(y), folds, seed):
        model = fit(space, [subnets[i] for i in train], y[train], target=target, statistic=statistic, seed=seed)
        pred[test] = model.predict([subnets[i] for i in test])
    return accuracy_report(y, pred)


class MacsBaseline:
    """What MACs alone achieve: latency = a * MACs + b, least squares."""

    def __init__(self, space: SearchSpace, subnets: Iterable[Subnet], latency_ms: Sequence[float]) -> None:
        self.space = space
        x = np.array([cost(space, s)[0] / 1e6 for s in subnets])
        self.slope, self.intercept = np.polyfit(x, np.asarray(latency_ms, dtype=float), 1)

    def predict(self, subnets: Sequence[Subnet]) -> np.ndarray:
        x = np.array([cost(self.space, s)[0] / 1e6 for s in subnets])
        return self.slope * x + self.intercept
