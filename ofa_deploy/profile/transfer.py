"""Transfer a latency predictor to a new target from a few measured subnets.

The model, in the log space of the multiplicative predictor (``psi`` = ``[1, key counts,
standardised size features]``, see ``LatencyPredictor.features``)::

    log latency_T(x) = psi(x) . theta + noise,        theta = theta_S + b0 e_0 + b1 d + w

``theta_S`` is the source predictor (so with no measurements the prediction is the
source's), ``b0`` the device scale (a flat prior: a new device may be 10x slower), ``b1``
a stretch of the source's own log-latency around its population mean (``d``: a target
where large networks gain more, as at batch 8, or less, as with two threads), and ``w``
per-feature corrections shrunk toward zero by a hierarchical Gaussian prior: a shared
per-block term, per stage, per kernel, per expand ratio, per stage x kernel and stage x
expand, then per OFA key, plus the size features; and corrections along the physics
table's directions (``Featurizer.physics``: per stage, the MACs of each operation - a
target where depthwise 7x7 convolutions in stage 3 cost 20 % more shifts every key in
proportion to its 7x7 MACs there). So a few measurements can learn "every 7x7 block is
20 % dearer here" without fitting each of the ~90 keys.

Bayesian linear regression with a normal-inverse-gamma prior (noise variance unknown):
closed-form posterior, Student-t predictive intervals (``uncertainty.Uncertainty``), and
a log evidence that weighs the strengths of the corrections prior over a small grid
(the posteriors averaged by evidence: the single best strength made intervals too narrow
when few subnets were measured, 82 % coverage at 20 in the prior-drawn test). The
posterior covariance does not depend on the measured values, so *which* subnets to
measure can be chosen before measuring any: greedily, the candidate whose measurement
most reduces the summed predictive variance over a population sample (integrated
variance reduction). The order is deterministic and nested: the first k picks of a budget
of 50 are the picks of a budget of k.

Numpy only (the device side); everything with n measurements is O(n^3 + n D^2), D ~ 100.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..errors import OfaError
from ..space import SearchSpace, Subnet
from .features import Featurizer
from .predictor import LatencyPredictor
from .uncertainty import Uncertainty

# Prior standard deviations, in log-latency (0.03 = 3 %). The noise prior is the
# measurement spread of a minimum on a shared VM plus what the source cannot know.
PRIOR_SD = {"intercept": 3.0, "stretch": 0.3, "group": 0.03, "key": 0.02, "size": 0.1, "physics": 0.05}
NOISE_SD, NOISE_A0 = 0.03, 2.0
# Multipliers of the prior variances, chosen by evidence: of the shared terms (stretch,
# groups, size) and, separately, of the per-key terms - a device may differ from the
# source only in a few shared ways, and then per-key freedom only widens the intervals.
# The shared grid reaches 0.01: with 0.1 as its lowest value, the best strength sat on
# that edge in every 20-subnet fit of results/predictor-transfer/second-vm-2s.
SHARED_STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
KEY_STRENGTHS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
PHYSICS_STRENGTHS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
Strength = Tuple[float, float, float]  # multipliers of the shared, per-key and physics covariances


@dataclass(frozen=True)
class Prior:
    """Mean ``theta_S`` and covariance pieces over ``psi`` (log-latency^2 units):
    ``cov((s, k, p)) = fixed + s * shared + k * keys + p * physics``."""

    mean: np.ndarray
    fixed: np.ndarray
    shared: np.ndarray
    keys: np.ndarray
    physics: np.ndarray
    size_mean: np.ndarray
    size_scale: np.ndarray
    source_approximation: Optional[float]

    def cov(self, strength: Strength) -> np.ndarray:
        return self.fixed + strength[0] * self.shared + strength[1] * self.keys + strength[2] * self.physics


def key_groups(space: SearchSpace, feat: Featurizer) -> np.ndarray:
    """(K, G) indicators of each key's groups: all, stage, kernel, expand, stage x kernel,
    stage x expand (a key belongs to one block position's stage and one choice)."""
    labels: list[set[str]] = [set() for _ in feat.keys]
    for b in range(space.num_blocks):
        stage = b // space.max_depth
        for ki, k in enumerate(space.kernel_choices):
            for ei, e in enumerate(space.expand_choices):
                labels[feat._index[b, ki, ei]].update(
                    {"all", f"s{stage}", f"k{k}", f"e{e}", f"s{stage}k{k}", f"s{stage}e{e}"})
    names = sorted(set().union(*labels))
    col = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(feat.keys), len(names)))
    for row, ls in enumerate(labels):
        out[row, [col[n] for n in ls]] = 1.0
    return out


def population(space: SearchSpace, n: int, seed: int) -> list[Subnet]:
    """``n`` uniform subnets drawn with ``seed`` (repeats allowed: this is a sample of
    what a search meets, weighted as it meets it)."""
    import random

    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def make_prior(source: LatencyPredictor, pop_counts: np.ndarray) -> Prior:
    """The prior around ``source``. A multiplicative source is exactly ``psi . theta_S``;
    an additive one is approximated by least squares of its log prediction on ``psi`` over
    the population sample (the r.m.s. approximation error is recorded)."""
    feat = source._feat
    k = len(feat.keys)
    approx = None
    if source.form == "multiplicative":
        size_mean, size_scale = source.size_mean, source.size_scale
        theta = np.concatenate([[source.intercept], source._model.table, source.size_coef])
    else:
        size = feat.size(pop_counts)
        size_mean, size_scale = size.mean(axis=0), size.std(axis=0)
        size_scale[size_scale == 0] = 1.0
        psi = np.column_stack([np.ones(len(pop_counts)), pop_counts, (size - size_mean) / size_scale])
        target = np.log(source._model.predict(feat, pop_counts))
        theta = np.linalg.lstsq(psi.T @ psi + 1e-6 * np.eye(psi.shape[1]), psi.T @ target, rcond=None)[0]
        approx = float(np.sqrt(np.mean((psi @ theta - target) ** 2)))
    g = len(theta) - 1 - k
    dim = len(theta)
    fixed = np.zeros((dim, dim))
    fixed[0, 0] = PRIOR_SD["intercept"] ** 2
    scaled = np.zeros((dim, dim))
    keys = np.zeros((dim, dim))
    stretch = theta.copy()
    stretch[0] = 0.0
    z = (feat.size(pop_counts) - size_mean) / size_scale
    psi_pop = np.column_stack([np.ones(len(pop_counts)), pop_counts, z])
    stretch[0] = -float(np.mean(psi_pop @ stretch))  # stretch around the population's mean log-latency
    scaled += PRIOR_SD["stretch"] ** 2 * np.outer(stretch, stretch)
    groups = key_groups(source.space, feat)
    scaled[1:1 + k, 1:1 + k] += PRIOR_SD["group"] ** 2 * groups @ groups.T
    keys[1:1 + k, 1:1 + k] = PRIOR_SD["key"] ** 2 * np.eye(k)
    scaled[1 + k:, 1 + k:] += PRIOR_SD["size"] ** 2 * np.eye(g)
    ops_scale = (pop_counts @ feat.physics).std(axis=0)
    directions = feat.physics / np.where(ops_scale > 0, ops_scale, 1.0)  # per population sd of each operation
    physics = np.zeros((dim, dim))
    physics[1:1 + k, 1:1 + k] = PRIOR_SD["physics"] ** 2 * directions @ directions.T
    return Prior(theta, fixed, scaled, keys, physics, np.asarray(size_mean, float), np.asarray(size_scale, float),
                 approx)


def features(feat: Featurizer, counts: np.ndarray, prior: Prior) -> np.ndarray:
    z = (feat.size(counts) - prior.size_mean) / prior.size_scale
    return np.column_stack([np.ones(len(counts)), counts, z])


@dataclass(frozen=True)
class Posterior:
    """Normal-inverse-gamma posterior: theta ~ N(mean, sigma^2 cov), sigma^2 ~ IG(a, b)."""

    mean: np.ndarray
    cov: np.ndarray
    a: float
    b: float
    log_evidence: float
    strength: Strength

    def uncertainty(self) -> Uncertainty:
        return Uncertainty("bayesian", self.b / self.a, 2 * self.a, self.cov,
                           source="posterior predictive of the transfer model (Student t)")


def posterior(psi: np.ndarray, y: np.ndarray, prior: Prior, strength: Strength) -> Posterior:
    """The closed-form posterior after measuring ``y`` (log latency) at rows ``psi``; the
    prior covariance is in units of the noise variance ``NOISE_SD^2`` (the NIG convention)."""
    v0 = prior.cov(strength) / NOISE_SD**2
    a0 = NOISE_A0
    b0 = NOISE_SD**2 * a0  # prior mean of the noise precision 1 / sigma^2 is 1 / NOISE_SD^2
    n = len(y)
    if n == 0:
        return Posterior(prior.mean.copy(), v0, a0, b0, 0.0, strength)
    vp = v0 @ psi.T
    s = np.eye(n) + psi @ vp
    chol = np.linalg.cholesky(s)
    r = y - psi @ prior.mean
    sr = np.linalg.solve(chol.T, np.linalg.solve(chol, r))
    gain = np.linalg.solve(chol.T, np.linalg.solve(chol, vp.T))  # S^-1 psi V0
    mean = prior.mean + vp @ sr
    cov = v0 - vp @ gain
    cov = (cov + cov.T) / 2
    a = a0 + n / 2
    b = b0 + float(r @ sr) / 2
    log_det = 2 * float(np.sum(np.log(np.diag(chol))))
    evidence = (-0.5 * log_det + a0 * math.log(b0) - a * math.log(b) + math.lgamma(a) - math.lgamma(a0)
                - n / 2 * math.log(2 * math.pi))
    return Posterior(mean, cov, a, b, evidence, strength)


def average(fits: Sequence[Posterior]) -> Posterior:
    """The posteriors of a grid of strengths averaged with weights proportional to their
    evidence (a uniform prior over the grid), moment-matched back to one normal-inverse-gamma
    form: mean = the weighted mean, covariance = the weighted covariances plus the spread
    of the means, noise scale and degrees of freedom weighted alike. ``strength`` and the
    returned log evidence are the best single strength's and the grid's marginal."""
    logs = np.array([f.log_evidence for f in fits])
    w = np.exp(logs - logs.max())
    w /= w.sum()
    mean = sum(wi * f.mean for wi, f in zip(w, fits))
    scale2 = float(sum(wi * f.b / f.a for wi, f in zip(w, fits)))
    spread = sum(wi * ((f.b / f.a) * f.cov + np.outer(f.mean - mean, f.mean - mean)) for wi, f in zip(w, fits))
    a = float(sum(wi * f.a for wi, f in zip(w, fits)))
    best = fits[int(np.argmax(logs))]
    marginal = float(logs.max() + math.log(np.exp(logs - logs.max()).sum() / len(fits)))
    return Posterior(mean, spread / scale2, a, scale2 * a, marginal, best.strength)


def select(psi_candidates: np.ndarray, psi_population: np.ndarray, prior: Prior, k: int,
           strength: Strength = (1.0, 1.0, 1.0)) -> list[int]:
    """Indices of ``k`` candidates, greedily the one that most reduces the summed posterior
    variance of the population's predictions (ties: the lowest index). Depends only on
    the features, never on measured values: deterministic and nested in ``k``."""
    if k > len(psi_candidates):
        raise OfaError(f"cannot choose {k} subnets from {len(psi_candidates)} candidates")
    v = prior.cov(strength) / NOISE_SD**2
    cross = psi_population @ v @ psi_candidates.T  # cov(population, candidate) / sigma^2
    own = np.einsum("ij,ij->i", psi_candidates @ v, psi_candidates)
    vc = v @ psi_candidates.T  # columns: V psi_c
    chosen: list[int] = []
    for _ in range(k):
        score = np.sum(cross**2, axis=0) / (1.0 + own)
        score[chosen] = -np.inf
        c = int(np.argmax(score))
        chosen.append(c)
        u = vc[:, c].copy()
        denom = 1.0 + own[c]
        pc = psi_candidates @ u
        cross -= np.outer(psi_population @ u, pc) / denom
        own -= pc**2 / denom
        vc -= np.outer(u, pc) / denom
    return chosen


def estimated_error(post: Posterior, psi_population: np.ndarray) -> float:
    """Expected mean absolute relative error over the population under the posterior:
    sqrt(2/pi) x the mean predictive standard deviation of log latency."""
    sd = post.uncertainty().log_sd(psi_population, len(psi_population))
    return float(math.sqrt(2 / math.pi) * np.mean(sd))


def adapt(source: LatencyPredictor, subnets: Sequence[Subnet], latency_ms: Sequence[float], *, target: str,
          statistic: str, pop: Sequence[Subnet], statistic_ratios: Optional[dict[str, float]] = None,
          info: Optional[dict[str, Any]] = None) -> LatencyPredictor:
    """The adapted predictor for ``target`` from ``source`` and the measured ``latency_ms``
    of ``subnets`` (averaged over the strengths of the corrections prior by evidence), with its
    posterior as ``info["uncertainty"]`` and the fit's details as ``info["transfer"]``."""
    y = np.asarray(latency_ms, dtype=float)
    if len(subnets) != len(y):
        raise OfaError("one latency per subnet is needed")
    if len(y) < 1:
        raise OfaError("adapting a predictor needs at least one measured subnet")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise OfaError("measured latencies must be positive numbers")
    feat = source._feat
    pop_counts = feat.counts(list(pop))
    prior = make_prior(source, pop_counts)
    psi = features(feat, feat.counts(list(subnets)), prior)
    fits = [posterior(psi, np.log(y), prior, (s, k, p))
            for s in SHARED_STRENGTHS for k in KEY_STRENGTHS for p in PHYSICS_STRENGTHS]
    best = average(fits)
    psi_pop = features(feat, pop_counts, prior)
    k = len(feat.keys)
    transfer = {
        "source_target": source.target,
        "measured": len(y),
        "strength": {"shared": best.strength[0], "keys": best.strength[1], "physics": best.strength[2]},
        "strength_averaged": True,
        "log_evidence": round(best.log_evidence, 3),
        "noise_sd": math.sqrt(best.b / best.a),
        "device_scale": float(math.exp(best.mean[0] - prior.mean[0])),
        "estimated_error": estimated_error(best, psi_pop),
        "prior_sd": dict(PRIOR_SD, noise=NOISE_SD, noise_a0=NOISE_A0),
    }
    if prior.source_approximation is not None:
        transfer["source_additive_approximation_rms_log"] = prior.source_approximation
    extra = {"fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "train_subnets": len(y),
             "transfer": transfer, "uncertainty": best.uncertainty().to_dict()}
    return LatencyPredictor(
        space=source.space, target=target, statistic=statistic, form="multiplicative",
        intercept=float(best.mean[0]), table={key: float(c) for key, c in zip(feat.keys, best.mean[1:1 + k])},
        size_mean=prior.size_mean, size_scale=prior.size_scale, size_coef=best.mean[1 + k:].astype(float),
        info={**extra, **(info or {})}, statistic_ratios=dict(statistic_ratios or {}))
