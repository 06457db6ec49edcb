"""Measuring a run at one of its trained resolutions.

No weight of the supernet depends on the input size, so the network at resolution ``R`` is
the same weights under the space with ``image_size = R`` (whose MACs and block shapes are
those at ``R``); the images are the run's, resized to ``R`` (``data.resize``, as training
resized them). BatchNorm statistics are recomputed at ``R``: every caller recalibrates on
training images passed through ``images_at`` - the statistics of a 24x24 batch are not
those of a 32x32 one, which is why OFA recalibrates per resolution too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.resize import resize
from ..errors import OfaError
from ..resolution import ALL, require_trained, space_at


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


def images_at(images: Any, resolution: int) -> Any:
    """Normalised (N, C, H, W) images at ``resolution`` x ``resolution``; a stream (read at
    its run's one resolution: imported runs have no other) as it is."""
    if images is None or isinstance(images, torch.Tensor):
        return None if images is None else resize(images, resolution)
    if images.size != resolution:
        raise OfaError(f"the streamed images are {images.size}x{images.size}, not {resolution}x{resolution}")
    return images


def parse_resolution_choice(value: str | int | None) -> int | str | None:
    """``--resolution``: None, ``all`` or a size."""
    if value is None or value == ALL:
        return value
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise OfaError(f"--resolution must be an image size in pixels or 'all', got {str(value)[:40]!r}")
    return int(text)


__all__ = ["run_resolution", "supernet_at", "images_at", "parse_resolution_choice", "ALL"]
