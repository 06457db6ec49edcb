"""Latency budgets with a predictor: what ``catalog select --confidence`` and ``catalog build
--budget-ms`` hold entries to (the measured p90, or the larger of it and the predictor's upper
bound at a confidence level). Device side: numpy, no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OfaError
from ..space import Subnet


def load_predictor(path: Optional[str | Path], target: Any) -> Any:
    """The predictor at ``path`` (a predictor.json or its directory; None for None), refused
    when it was fitted for another target than ``target`` (a ``Target`` or a name)."""
    if path is None:
        return None
    from ..predictor.directory import load_predictor as load
    from ..predictor.directory import predictor_file

    path = predictor_file(path)
    model = load(path)
    name = target if isinstance(target, str) else target.name
    if model.target != name:
        raise OfaError(f"predictor {path} was fitted for target {model.target}, not {name}")
    return model


def check_confidence(model: Any, confidence: float, path: Any) -> None:
    """``--confidence`` needs a predictor that states its uncertainty."""
    from ..predictor.uncertainty import check_level

    check_level(confidence, "--confidence")
    if model is None:
        raise OfaError("--confidence needs --predictor (it holds budgets to the predictor's upper bound)")
    if model.uncertainty is None:
        raise OfaError(f"--confidence: predictor {path} records no uncertainty (no validation error, no posterior); "
                       "refit it with `ofa-deploy predictor build` or adapt one with `ofa-deploy predictor adapt`")


def budget_latency(model: Any, subnets: Sequence[Subnet], confidence: Optional[float]) -> np.ndarray:
    """Predicted p90 (where the predictor knows its ratio; ``select`` holds budgets to p90)
    or, with ``confidence``, the latency that p90 stays below with that probability."""
    statistic = "p90" if "p90" in model.statistic_ratios else None
    if confidence is None:
        return np.asarray(model.predict(list(subnets), statistic))
    return model.upper_bound(list(subnets), confidence, statistic)


def bound_entries(items: list, predictor_path: Any, confidence: Optional[float], target: str) -> None:
    """Set each entry's ``budget_latency_ms``: max(measured p90, the predictor's p90 upper bound)."""
    if confidence is None:
        raise OfaError("--predictor is used by select only with --confidence")
    model = load_predictor(predictor_path, target)  # the catalog's target name: it may have no profile here
    check_confidence(model, confidence, predictor_path)
    if not items:
        return
    other = sorted({e["resolution"] for e in items} - {model.space.image_size})
    if other:  # its latency table is per input size: it cannot bound entries at another one
        raise OfaError(
            f"--confidence: predictor {predictor_path} was fitted at {model.space.image_size}x"
            f"{model.space.image_size} inputs; this catalog also has entries at {', '.join(map(str, other))}"
        )
    upper = budget_latency(model, [Subnet.from_dict(e["subnet"], model.space) for e in items], confidence)
    for e, bound in zip(items, upper):
        e["p90_upper_ms"] = float(bound)
        e["confidence"] = confidence
        e["budget_latency_ms"] = max(float(e["latency_ms"]["p90"]), float(bound))
