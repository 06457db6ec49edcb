"""Resizing image batches on their device: the one resize elastic resolution uses.

Training (a batch per step), evaluation, export and the catalog all resize with this, so a
network is measured on images made the way it was trained on them: bilinear with
antialiasing. Antialiasing because shrinking without it (32 -> 24) aliases - plain
bilinear reads only the 2x2 neighbours of each output pixel - while OFA's data pipeline
resized PIL images, whose bilinear filter widens with the scale factor as torch's
``antialias=True`` does. Enlarging is the same either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size); the same tensor when it has that size already."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


__all__ = ["resize"]
