"""What computes a latency prediction from a subnet's key counts (``predictor.features``):
the form and numbers a ``LatencyPredictor`` saves, without how they were fitted.

Numpy only (the device side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .features import Featurizer

FORMS = ("additive", "multiplicative", "hybrid")  # how a saved predictor computes
MAX_BASE_DEPTH = 8  # a hybrid adapted from a hybrid nests; a file nesting deeper is refused


@dataclass
class LatencyModel:
    """What computes a prediction: ``intercept + counts . table`` as is (additive), through
    ``exp`` with the size features (multiplicative), or added to ``base_scale`` x another
    model's prediction (hybrid: an adapted predictor on top of its source's model). Sums
    are held at ``floor`` ms or above: a hybrid fitted to wild measurements can extrapolate
    below zero, and ``transfer.adapt`` sets its floor at a quarter of the fastest measurement."""

    form: str
    intercept: float
    table: np.ndarray
    size_mean: np.ndarray
    size_scale: np.ndarray
    size_coef: np.ndarray
    base: Optional["LatencyModel"] = None
    base_scale: float = 1.0
    floor: float = 1e-6

    def predict(self, feat: Featurizer, counts: np.ndarray) -> np.ndarray:
        lin = self.intercept + counts @ self.table
        if self.form == "hybrid":
            # a hybrid always has a base: from_dict reads it, LatencyPredictor refuses one without
            assert self.base is not None
            return np.maximum(self.base_scale * self.base.predict(feat, counts) + lin, self.floor)
        if self.form == "additive":
            return np.maximum(lin, self.floor)
        return np.exp(lin + ((feat.size(counts) - self.size_mean) / self.size_scale) @ self.size_coef)

    def to_dict(self, keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"form": self.form, "intercept": self.intercept,
                               "table": dict(zip(keys, self.table.tolist())),
                               "size": {"mean": self.size_mean.tolist(), "scale": self.size_scale.tolist(),
                                        "coef": self.size_coef.tolist()}}
        if self.base is not None:
            out.update(base=self.base.to_dict(keys), base_scale=self.base_scale, floor=self.floor)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], keys: Sequence[str], depth: int = 1) -> "LatencyModel":
        """Raises KeyError/TypeError/ValueError on a malformed model (the caller words it)."""
        if depth > MAX_BASE_DEPTH:
            raise ValueError(f"base models nest deeper than {MAX_BASE_DEPTH}")
        if data["form"] not in FORMS:
            raise ValueError(f"unknown base model form {data['form']!r}")
        missing = [k for k in keys if k not in data["table"]]
        if missing:
            raise ValueError(f"base model has no table entry for {missing[0]}")
        hybrid = data["form"] == "hybrid"
        try:
            size = {k: np.asarray(data["size"][k], dtype=float) for k in ("mean", "scale", "coef")}
            model = cls(data["form"], float(data["intercept"]), np.array([float(data["table"][k]) for k in keys]),
                        size["mean"], size["scale"], size["coef"],
                        cls.from_dict(data["base"], keys, depth + 1) if hybrid else None,
                        float(data["base_scale"]) if hybrid else 1.0,
                        positive_number(data["floor"], "floor") if hybrid else 1e-6)
        except OverflowError:
            raise ValueError("base model holds a number too large for a float") from None
        if not all_finite([model.intercept, model.base_scale, *model.table, *size["mean"], *size["scale"],
                           *size["coef"]]):
            raise ValueError("base model holds a non-finite number")
        return model


def all_finite(values: Sequence[Any]) -> bool:
    """Every value a finite int or float (what a saved model's numbers must be); an int too
    large for a float is not."""
    try:
        return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    except OverflowError:
        return False


def positive_number(value: Any, name: str) -> float:
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a positive number, got an integer too large for a float") from None
    if not (math.isfinite(out) and out > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return out
