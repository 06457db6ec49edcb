"""What a loaded split is (``ImageSet``) and where prepared data are cached (``cache_dir``):
the bottom of ``data``, shared by the built-in sets, image folders and the released protocol."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ImageSet:
    """One split of a dataset, ready for training or evaluation.

    ``images``: float32 (N, C, 32, 32), normalised with ``mean``/``std``; ``labels``:
    int64 (N,); both on the same device.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None  # class names (``folder`` data sets), label i = classes[i]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> "ImageSet":
        return ImageSet(self.name, self.split, self.images.to(device), self.labels.to(device), self.num_classes,
                        self.in_channels, self.mean, self.std, self.classes)


def cache_dir() -> Path:
    """Where prepared datasets and decoded tensors are kept."""
    return Path(os.environ.get("OFA_DEPLOY_CACHE") or Path.home() / ".cache" / "ofa-deploy")
