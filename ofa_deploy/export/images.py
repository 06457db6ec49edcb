"""The images an export needs, loaded for a run: training images (BN recalibration and
TensorRT calibration), test images (parity check) and, optionally, the test split with
labels (accuracy of the exported network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import OfaError


@dataclass
class ExportImages:
    """``train`` (N, C, 32, 32) and ``parity`` (P, C, 32, 32) normalised float32 on the CPU;
    ``eval`` = (test images, labels) or None; ``normalization`` = dataset, mean, std."""

    name: str
    in_channels: int
    num_classes: int
    train: torch.Tensor
    parity: torch.Tensor
    eval: tuple[torch.Tensor, torch.Tensor] | None
    normalization: dict[str, Any]


def export_images(
    config: dict[str, Any],
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    parity_images: int = 512,
    accuracy: bool = True,
) -> ExportImages:
    """Load the dataset named in a run's ``config`` ([data] dataset, data_dir); ``data_dir``
    overrides the run's. ``parity_images`` test images are drawn by ``seed``."""
    from ..data import load_dataset

    data_cfg = config.get("data", {})
    name = data_cfg.get("dataset")
    if not name:
        raise OfaError("the run's config.toml names no [data] dataset")
    directory = data_dir if data_dir is not None else data_cfg.get("data_dir")
    train = load_dataset(name, "train", data_dir=directory)
    test = load_dataset(name, "test", data_dir=directory)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    parity = test.images[order[: min(parity_images, len(test))]]
    return ExportImages(
        name=train.name,
        in_channels=train.in_channels,
        num_classes=train.num_classes,
        train=train.images,
        parity=parity,
        eval=(test.images, test.labels) if accuracy else None,
        normalization={"dataset": train.name, "mean": list(train.mean), "std": list(train.std)},
    )
