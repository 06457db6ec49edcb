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
    train_images: int = 2000,
    parity_images: int = 512,
    accuracy: bool = True,
) -> ExportImages:
    """Load the dataset named in a run's ``config`` ([data] dataset, data_dir); ``data_dir``
    overrides the run's. ``train_images`` training images (all if fewer) and
    ``parity_images`` test images are drawn by ``seed``; only those are decoded, so a
    large training split is never held in memory whole. The whole test split is loaded
    when ``accuracy`` is wanted."""
    from ..data import dataset_info, load_dataset
    from ..data.datasets import run_data_options

    data_cfg = config.get("data", {})
    name = data_cfg.get("dataset")
    if not name:
        raise OfaError("the run's config.toml names no [data] dataset")
    options = run_data_options(config, data_dir)
    info = dataset_info(name, **options)
    train = load_dataset(name, "train", **options, seed=seed, subset=min(train_images, info.train_size))
    n_parity = min(parity_images, info.test_size)
    test = load_dataset(name, "test", **options, seed=seed, subset=None if accuracy else n_parity)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    parity = test.images[order[:n_parity]]
    return ExportImages(
        name=train.name,
        in_channels=train.in_channels,
        num_classes=train.num_classes,
        train=train.images,
        parity=parity,
        eval=(test.images, test.labels) if accuracy else None,
        normalization={"dataset": train.name, "mean": list(train.mean), "std": list(train.std),
                       **({"classes": list(train.classes), "resize": "shorter side to the input size, centre crop"}
                          if train.classes else {})},
    )
