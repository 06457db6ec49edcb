"""The measurement protocol: warm up by time, then time single calls until both a minimum
number of iterations and a minimum duration are reached; summarise; re-measure when the
spread is too large and flag what stays unstable.

Nothing here knows what is being timed: a backend hands over ``step()`` (one synchronous
inference) and, on a GPU, ``device_ms()`` (the device compute time of the last step).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional

from ..errors import OfaError
from ..validate import LIMITS, finite, limited


@dataclass(frozen=True)
class Protocol:
    """How long to warm up and measure, and what spread counts as unstable.

    ``cov_threshold`` is a fraction (0.05 = 5 %) of the coefficient of variation of the
    primary latency (see ``robust_cov``); a measurement above it is repeated up to
    ``max_retries`` more times and, if no attempt is below it, flagged ``unstable``.
    ``max_time_s`` bounds one attempt even if ``min_iterations`` is not reached yet.
    """

    warmup_s: float = 2.0
    min_iterations: int = 200
    min_time_s: float = 3.0
    cov_threshold: float = 0.05
    max_retries: int = 2
    max_time_s: float = 120.0

    def __post_init__(self) -> None:
        # Bounded on every side: a NaN or infinite time would never end the timing loop.
        for name in ("warmup_s", "min_time_s", "cov_threshold", "max_retries", "min_iterations"):
            limited(name, getattr(self, name), f"measure.{name}", lo_open=name == "cov_threshold")
        finite(self.max_time_s, "measure.max_time_s", lo=0.0, hi=4 * LIMITS["min_time_s"][1], lo_open=True)
        if self.max_time_s < self.min_time_s:
            raise OfaError(f"max_time_s={self.max_time_s} is below min_time_s={self.min_time_s}")

    @classmethod
    def from_target(cls, target: Any, **overrides: Any) -> "Protocol":
        """The target's ``measure`` settings, with every override that is not ``None``."""
        measure = getattr(target, "measure", None)
        base = cls()
        if measure is not None:
            cov = float(getattr(measure, "cov_threshold", base.cov_threshold))
            base = cls(
                warmup_s=float(getattr(measure, "warmup_s", base.warmup_s)),
                min_iterations=int(getattr(measure, "min_iterations", base.min_iterations)),
                min_time_s=float(getattr(measure, "min_time_s", base.min_time_s)),
                cov_threshold=_as_fraction(cov),
                max_retries=int(getattr(measure, "max_retries", base.max_retries)),
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        if "cov_threshold" in given:
            given["cov_threshold"] = _as_fraction(float(given["cov_threshold"]))
        if "min_time_s" in given and given["min_time_s"] > base.max_time_s:
            given.setdefault("max_time_s", given["min_time_s"] * 4)
        return replace(base, **given)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _as_fraction(cov: float) -> float:
    """Thresholds above 1 are read as percent (trtexec states its 1 % that way)."""
    return cov / 100.0 if cov > 1.0 else cov


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """min, mean, std (sample), p50, p90, p95, p99, max of ``samples_ms`` (linear-interpolated
    percentiles, as numpy's default)."""
    if not samples_ms:
        raise OfaError("no samples to summarise")
    xs = sorted(samples_ms)
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {
        "min": xs[0],
        "mean": mean,
        "std": std,
        "p50": _percentile(xs, 50),
        "p90": _percentile(xs, 90),
        "p95": _percentile(xs, 95),
        "p99": _percentile(xs, 99),
        "max": xs[-1],
    }


def robust_cov(samples_ms: list[float]) -> float:
    """Coefficient of variation 1.4826 * MAD / median: the std / mean of the bulk of the
    samples, as a normal distribution would have it.

    Why not plain std / mean: on a CPU a sub-millisecond inference is occasionally
    preempted for a whole scheduler tick (4-30 ms); one such sample in thousands moves
    std / mean by several hundred percent while the distribution itself is steady. The
    tail is still reported, honestly, by p90/p99/max and ``cov_std_mean``.
    """
    xs = sorted(samples_ms)
    med = _percentile(xs, 50)
    if med <= 0:
        return float("inf")
    mad = _percentile(sorted(abs(x - med) for x in xs), 50)
    return 1.4826 * mad / med


def _percentile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass
class Attempt:
    """One timed series: host latencies and, where the backend has them, device times (ms)."""

    host_ms: list[float]
    device_ms: list[float]
    wall_s: float

    @property
    def primary(self) -> list[float]:
        return self.device_ms or self.host_ms

    @property
    def cov(self) -> float:
        return robust_cov(self.primary)


def time_once(
    step: Callable[[], None],
    protocol: Protocol,
    device_ms: Optional[Callable[[], Optional[float]]] = None,
) -> Attempt:
    """Warm up for ``protocol.warmup_s``, then time ``step`` until both ``min_iterations``
    and ``min_time_s`` are reached (or ``max_time_s`` passes)."""
    clock = time.perf_counter
    end_warmup = clock() + protocol.warmup_s
    step()  # at least one call: first-run allocations never land in the samples
    while clock() < end_warmup:
        step()
    host: list[float] = []
    device: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        step()
        t1 = clock()
        host.append((t1 - t0) * 1e3)
        if device_ms is not None:
            d = device_ms()
            if d is not None:
                device.append(float(d))
        elapsed = t1 - start
        if (len(host) >= protocol.min_iterations and elapsed >= protocol.min_time_s) or elapsed >= protocol.max_time_s:
            break
    if len(host) < 2:
        raise OfaError(f"only {len(host)} iteration fitted in max_time_s={protocol.max_time_s}; raise it")
    return Attempt(host, device, clock() - start)


def measure(
    step: Callable[[], None],
    protocol: Protocol,
    *,
    batch: int = 1,
    device_ms: Optional[Callable[[], Optional[float]]] = None,
    on_attempt: Optional[Callable[[int, float], None]] = None,
) -> dict[str, Any]:
    """Run the protocol on ``step`` and return the statistics.

    The result's ``latency_ms``/``cov``/``n`` describe the *primary* latency: device
    compute time where the backend reports it (GPU), host latency otherwise. Both series
    are also given under ``host_latency_ms`` and ``device_latency_ms`` (``None`` without
    a device timer). ``cov`` is ``robust_cov`` of the primary series (``cov_std_mean`` is
    the plain ratio). An attempt with CoV above the threshold is repeated up to
    ``max_retries`` times; the steadiest attempt is reported, and ``unstable`` is true if
    even that one is above the threshold.
    """
    attempts: list[Attempt] = []
    for i in range(protocol.max_retries + 1):
        attempt = time_once(step, protocol, device_ms)
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(i, attempt.cov)
        if attempt.cov <= protocol.cov_threshold:
            break
    best = min(attempts, key=lambda a: a.cov)
    primary = summarize(best.primary)
    host = summarize(best.host_ms)
    device = summarize(best.device_ms) if best.device_ms else None
    cov = best.cov
    return {
        "latency_ms": primary,
        "latency_kind": "device_compute" if device else "host",
        "n": len(best.primary),
        "cov": cov,
        "cov_kind": "1.4826*MAD/median",
        "cov_std_mean": primary["std"] / primary["mean"] if primary["mean"] > 0 else float("inf"),
        "unstable": cov > protocol.cov_threshold,
        "throughput_per_s": batch * len(best.host_ms) / best.wall_s if best.wall_s > 0 else None,
        "host_latency_ms": host,
        "device_latency_ms": device,
        "attempts": [
            {"n": len(a.primary), "cov": a.cov, "p50": summarize(a.primary)["p50"], "wall_s": a.wall_s}
            for a in attempts
        ],
        "protocol": protocol.to_dict(),
    }
