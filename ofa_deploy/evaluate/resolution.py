"""Measuring a run at one of its trained resolutions.

No weight of the supernet depends on the input size, so the network at resolution ``R`` is
the same weights under the space with ``image_size = R`` (whose MACs and block shapes are
those at ``R``); the images are the run's, resized to ``R`` (``data.resize``, as training
resized them). BatchNorm statistics are recomputed at ``R``: every caller recalibrates on
training images passed through ``images_at`` - the statistics of a 24x24 batch are not
those of a 32x32 one, which is why OFA recalibrates per resolution too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..data.resize import resize
from ..errors import OfaError
from ..resolution import require_trained, space_at, trained_resolutions

ALL = "all"


def run_resolution(config: dict[str, Any], requested: int | None, flag: str = "--resolution") -> int:
    """``requested`` if the run was trained at it (one clear ``OfaError`` if not); the run's
    default (its space's ``image_size``) when None."""
    from ..run import space_from_config

    if requested is None:
        return space_from_config(config).image_size
    return require_trained(config, int(requested), flag)


def supernet_at(supernet: nn.Module, resolution: int) -> nn.Module:
    """The supernet's weights under its space at ``resolution`` (the same module when that is
    its own); a copy, on the same device and in the same mode."""
    from ..nn import Supernet

    space = space_at(supernet.space, resolution)
    if space == supernet.space:
        return supernet
    device = next(supernet.parameters()).device
    net = Supernet(space).to(device)
    net.load_state_dict(supernet.state_dict())
    return net.train(supernet.training)


def images_at(images: torch.Tensor | None, resolution: int) -> torch.Tensor | None:
    """Normalised (N, C, H, W) images at ``resolution`` x ``resolution``."""
    return None if images is None else resize(images, resolution)


def parse_resolution_choice(value: str | int | None) -> int | str | None:
    """``--resolution``: None, ``all`` or a size."""
    if value is None or value == ALL:
        return value
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise OfaError(f"--resolution must be an image size in pixels or 'all', got {str(value)[:40]!r}")
    return int(text)


def evaluate_resolutions(run_dir: str | Path, resolutions: Sequence[int] | str = ALL,
                         **kwargs: Any) -> list[tuple[Path, dict]]:
    """``evaluate_run`` at each of ``resolutions`` (``all``: every trained one, smallest
    first); each result is written as its own ``eval/NAME.json`` (names carry ``-rR`` for
    every resolution but the default), so accuracy per trained resolution is on record."""
    from ..run import read_config
    from .runs import evaluate_run

    if kwargs.get("name") is not None:
        raise OfaError("--name names one result; with --resolution all each resolution gets its default name")
    config = read_config(run_dir)
    chosen = trained_resolutions(config) if resolutions == ALL else tuple(resolutions)
    for r in chosen:  # every one checked before anything is measured
        run_resolution(config, r)
    return [evaluate_run(run_dir, resolution=r, **kwargs) for r in chosen]


__all__ = ["run_resolution", "supernet_at", "images_at", "parse_resolution_choice", "evaluate_resolutions", "ALL"]
