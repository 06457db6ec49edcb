"""Reading ``profile --json`` result files: what ``ofa-deploy profile`` prints, saved on a
device and carried back. ``catalog import`` and ``predictor adapt --import`` read them here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import OfaError
from ..io import read_json
from ..schemas import check_profile_result

REQUIRED = ("latency_ms", "n", "cov")
LATENCY_STATS = ("min", "mean", "std", "p50", "p90", "p99")


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """A results file: one ``profile --json`` object, a list of them, or ``{"results": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise OfaError(f"results file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    data = read_json(path, "results file")
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        data = data["results"]
    results = data if isinstance(data, list) else [data]
    for i, r in enumerate(results):
        if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
            raise OfaError(f"{path}: result {i} is not a profile result (needs {', '.join(REQUIRED)})")
        lat = r["latency_ms"]
        if not isinstance(lat, dict) or any(not _is_number(lat.get(k)) for k in LATENCY_STATS):
            raise OfaError(f"{path}: result {i} has no latency statistics min/mean/std/p50/p90/p99")
        for k in LATENCY_STATS:  # std may be 0; a latency is a positive time
            if not math.isfinite(lat[k]) or lat[k] < 0 or (lat[k] == 0 and k != "std"):
                raise OfaError(f"{path}: result {i} has latency_ms.{k} = {lat[k]!r}; latencies must be positive "
                               "and finite")
        if not _is_number(r["cov"]) or not math.isfinite(r["cov"]) or r["cov"] < 0:
            raise OfaError(f"{path}: result {i} has cov = {r['cov']!r}; it must be a finite number >= 0")
        if isinstance(r["n"], bool) or not isinstance(r["n"], int) or r["n"] < 1:
            raise OfaError(f"{path}: result {i} has n = {r['n']!r}; it must be a positive integer")
        check_profile_result(r, f"{path}: result {i}")  # the identity's types too (model, accuracy, target)
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

