"""The images an export needs, loaded for a run: training images (BN recalibration and
TensorRT calibration), test images (parity check) and, optionally, the test split with
labels (accuracy of the exported network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import OfaError
from ..run import IMAGENET_FOLDER, NO_DATASET


@dataclass
class ExportImages:
    """``train`` (N, C, 32, 32) and ``parity`` (P, C, 32, 32) normalised float32 on the CPU;
    ``eval`` = (test images, labels) or None; ``normalization`` = dataset, mean, std.
    ``train`` is None for a run without data (``random_images``)."""

    name: str
    in_channels: int
    num_classes: int
    train: torch.Tensor | None
    parity: torch.Tensor
    eval: tuple[torch.Tensor, torch.Tensor] | None
    normalization: dict[str, Any]
    parity_source: str | None = None  # what the parity images are, when not test images
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    validation_source: dict[str, Any] | None = None


def export_images(
    config: dict[str, Any],
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    train_images: int = 2000,
    parity_images: int = 512,
    accuracy: bool = True,
    validation: bool = False,
) -> ExportImages:
    """Load the dataset named in a run's ``config`` ([data] dataset, data_dir); ``data_dir``
    overrides the run's. ``train_images`` training images (all if fewer) and
    ``parity_images`` test images are drawn by ``seed``; only those are decoded, so a
    large training split is never held in memory whole. The whole test split is loaded
    when ``accuracy`` is wanted.

    ``validation`` (for ``--max-drop``): labelled images to bound an int8 drop on, kept
    apart from ``eval``: the run's held-out validation split when it has one (the training
    images are then drawn from the run's training split only, as it was trained), else a
    seeded part of the test split (``bound.split_test``), ``eval`` being the rest."""
    from ..data import dataset_info, load_dataset
    from ..data.datasets import run_data_options

    data_cfg = config.get("data", {})
    name = data_cfg.get("dataset")
    if not name:
        raise OfaError("the run's config.toml names no [data] dataset")
    if name in (NO_DATASET, IMAGENET_FOLDER):  # export_run reads those with stream_images
        raise OfaError("this run has no data set of its own (an imported supernet): give an ImageNet-style "
                       "--data-dir (read streaming), or export with --no-recalibrate")
    options = run_data_options(config, data_dir)
    info = dataset_info(name, **options)
    val_size = int(data_cfg.get("val_size", 0) or 0) if validation else 0
    run_seed = int(config.get("run", {}).get("seed", 0))
    if val_size:
        train = load_dataset(name, "train", **options, seed=run_seed, val_size=val_size,
                             subset=min(train_images, info.train_size - val_size))
    else:
        train = load_dataset(name, "train", **options, seed=seed, subset=min(train_images, info.train_size))
    n_parity = min(parity_images, info.test_size)
    test = load_dataset(name, "test", **options, seed=seed, subset=None if accuracy or validation else n_parity)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    parity = test.images[order[:n_parity]]
    evaluated = (test.images, test.labels) if accuracy else None
    held_out = source = None
    if val_size:
        val = load_dataset(name, "val", **options, seed=run_seed, val_size=val_size)
        held_out = (val.images, val.labels)
        source = {"split": "val", "images": int(len(val)), "seed": run_seed,
                  "what": "the run's held-out validation split (val_size), not trained or calibrated on",
                  "accuracy_split": "test"}
    elif validation:
        from .bound import VALIDATION_FRACTION, split_test

        val_index, test_index = (torch.from_numpy(i) for i in split_test(len(test), seed))
        held_out = (test.images[val_index], test.labels[val_index])
        evaluated = (test.images[test_index], test.labels[test_index])
        source = {"split": "test-part", "images": int(len(val_index)), "seed": seed, "fraction": VALIDATION_FRACTION,
                  "what": f"the run holds out no validation images (val_size 0): a seeded {VALIDATION_FRACTION:.0%} of "
                          "the test split, kept apart from the images the accuracy is reported on",
                  "accuracy_split": f"test-rest ({len(test_index)} of {len(test)} test images)"}
    return ExportImages(
        name=train.name,
        in_channels=train.in_channels,
        num_classes=train.num_classes,
        train=train.images,
        parity=parity,
        eval=evaluated,
        normalization={"dataset": train.name, "mean": list(train.mean), "std": list(train.std),
                       **({"classes": list(train.classes), "resize": "shorter side to the input size, centre crop"}
                          if train.classes else {})},
        validation=held_out,
        validation_source=source,
    )


def stream_images(config: dict[str, Any], folder: str | Path, *, seed: int = 0, train_images: int = 2000,
                  parity_images: int = 512, accuracy: bool = True, workers: int | None = None) -> ExportImages:
    """For a run measured on an ImageNet-style folder (``data.stream``): ``train`` is a
    stream of ``train_images`` seeded ``train/`` images (BN recalibration, int8 calibration:
    only those are ever read), ``parity`` ``parity_images`` seeded ``val/`` images in memory,
    ``eval`` the whole ``val/`` folder as a stream (read batch by batch) when ``accuracy``."""
    from ..data.stream import as_tensor, open_run_folder

    data = open_run_folder(config, folder, workers=workers)
    parity = as_tensor(data.test.subset(parity_images, seed))
    return ExportImages(
        name=data.name, in_channels=3, num_classes=data.num_classes, train=data.train.subset(train_images, seed),
        parity=parity, eval=(data.test, data.test.labels) if accuracy else None,
        normalization={"dataset": data.name, "mean": list(data.mean), "std": list(data.std),
                       "classes": list(data.classes)},
        parity_source=f"{len(parity)} val/ images of {data.root}, seed {seed}",
    )


RANDOM_PARITY_IMAGES = 64


def random_images(config: dict[str, Any], space: Any, *, seed: int = 0,
                  parity_images: int = RANDOM_PARITY_IMAGES) -> ExportImages:
    """For a run without data: no training images (so no BN recalibration, no int8
    calibration, no accuracy) and at most ``RANDOM_PARITY_IMAGES`` standard-normal parity
    inputs drawn by ``seed`` - the ONNX is checked against PyTorch on them. The
    normalisation recorded is the run's ([data] normalization, e.g. ImageNet's for an
    imported OFA checkpoint)."""
    n = min(parity_images, RANDOM_PARITY_IMAGES)
    shape = (n, space.in_channels, space.image_size, space.image_size)
    parity = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    norm = (config.get("data") or {}).get("normalization")
    return ExportImages(
        name=NO_DATASET, in_channels=space.in_channels, num_classes=space.num_classes, train=None, parity=parity,
        eval=None, normalization=dict(norm) if isinstance(norm, dict) else {"dataset": NO_DATASET},
        parity_source=f"random: {n} standard-normal inputs, seed {seed}",
    )
