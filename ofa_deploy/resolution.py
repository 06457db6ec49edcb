"""Elastic input resolution (OFA's way): which resolutions a run was trained at, and the
search space at one of them.

A run trained with ``--resolutions 24,28,32`` saw one of those sizes per batch; its
``config.toml`` records the set as ``[train] resolutions`` and its ``[space]`` has
``image_size`` = the largest (OFA tests at the largest training size by default, and the
data are held at that size and resized down per batch). A run trained without it knows
exactly one resolution, its space's ``image_size``. Everything downstream (eval, export,
catalog, predictor) takes a resolution from that set; the space at resolution ``R`` is the
run's space with ``image_size = R``, so MACs (``cost``), block shapes and the ONNX input
all follow from it.

No torch: the catalog and the CLI use this on the device side (Python 3.8).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Tuple

from .errors import OfaError
from .space import SearchSpace

MAX_RESOLUTION = 4096
ALL = "all"  # every resolution a run was trained at (``eval --resolution all``)
MAX_RESOLUTIONS = 32


def space_at(space: SearchSpace, resolution: int) -> SearchSpace:
    """``space`` with ``image_size = resolution`` (checked: its strides can downsample it)."""
    check_resolution(space, resolution)
    return space if resolution == space.image_size else dataclasses.replace(space, image_size=resolution)


def check_resolution(space: SearchSpace, resolution: int, what: str = "resolution") -> None:
    """Refuse a size the space cannot run at: every stride-2 layer (the stem and each
    stride-2 stage) must get at least a 2x2 map, else it no longer downsamples and the
    network is not the one trained (the paper's space needs at least 17)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 8 <= resolution <= MAX_RESOLUTION:
        raise OfaError(f"{what} {resolution!r} must be an integer from 8 to {MAX_RESOLUTION}")
    where = _first_stuck_layer(space, resolution)
    if where is not None:
        raise OfaError(f"{what} {resolution} is too small for this space's strides: {where} would get a 1x1 map "
                       f"to downsample; use at least {minimum_resolution(space)}")


def _first_stuck_layer(space: SearchSpace, resolution: int):
    """The first stride-2 layer whose input is 1x1 at ``resolution`` (None if every one halves)."""
    size = resolution
    for layer, stride in enumerate([2] + [stage.stride for stage in space.stages]):
        if stride > 1 and size < 2:
            return "the stem" if layer == 0 else f"stage {layer}"
        size = (size - 1) // stride + 1  # padding k // 2: ceil(size / stride) for every odd kernel
    return None


def minimum_resolution(space: SearchSpace) -> int:
    """The smallest input every stride-2 layer of ``space`` still halves."""
    n = 8
    while _first_stuck_layer(space, n) is not None:
        n += 1
    return n


def parse_resolutions(text: str, flag: str = "--resolutions") -> Tuple[int, ...]:
    """``"24,28,32"`` -> (24, 28, 32): sorted, without repeats (a repeat is refused)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts) or len(parts) > MAX_RESOLUTIONS:
        raise OfaError(f"{flag}: expected 1 to {MAX_RESOLUTIONS} comma-separated image sizes, e.g. 24,28,32; "
                       f"got {str(text)[:80]!r}")
    values = []
    for p in parts:
        if not p.isascii() or not p.isdigit():
            raise OfaError(f"{flag}: {p[:20]!r} is not a whole number of pixels")
        values.append(int(p))
    if len(set(values)) != len(values):
        raise OfaError(f"{flag}: a resolution is listed twice in {str(text)[:80]!r}")
    return tuple(sorted(values))


def check_resolutions(space: SearchSpace, resolutions: Sequence[int], flag: str = "--resolutions") -> Tuple[int, ...]:
    """Validated, sorted ``resolutions`` for ``space`` (each one runnable, no repeats)."""
    values = tuple(sorted(resolutions))
    if not values or len(set(values)) != len(values) or len(values) > MAX_RESOLUTIONS:
        raise OfaError(f"{flag} needs 1 to {MAX_RESOLUTIONS} distinct image sizes, got {list(resolutions)}")
    for r in values:
        check_resolution(space, r, f"{flag}: resolution")
    return values


def trained_resolutions(config: dict[str, Any]) -> Tuple[int, ...]:
    """The resolutions a run (its ``config.toml``) was trained at, smallest first."""
    from .run import space_from_config

    space = space_from_config(config)
    listed = (config.get("train") or {}).get("resolutions")
    if listed is None:
        return (space.image_size,)
    if not isinstance(listed, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in listed):
        raise OfaError("run config [train] resolutions must be a list of integers")
    return check_resolutions(space, listed, "run config [train] resolutions")


def require_trained(config: dict[str, Any], resolution: int, flag: str = "--resolution") -> int:
    """``resolution`` if the run was trained at it; else one clear ``OfaError``."""
    trained = trained_resolutions(config)
    if resolution not in trained:
        listed = ", ".join(str(r) for r in trained)
        hint = "" if len(trained) > 1 else " (train with --resolutions to evaluate and deploy at other sizes)"
        raise OfaError(f"{flag} {resolution}: the run was trained at {listed} only{hint}")
    return resolution


__all__ = ["space_at", "check_resolution", "minimum_resolution", "parse_resolutions", "check_resolutions",
           "trained_resolutions", "require_trained"]
