"""Datasets as tensors: (N, C, 32, 32) float32 images, normalised, on the training device.

The paper's datasets are small enough to live on the device whole, which removes the
per-image Python of a ``DataLoader`` from the hot loop (airbench style). Sources:

* ``digits``  - scikit-learn's bundled 8x8 digits (1,797 images, no files needed), upscaled;
* ``mnist``, ``fmnist`` - torchvision's MNIST / FashionMNIST (28x28, resized, 1 channel kept);
  a folder holding the original IDX ``.gz`` files (e.g. Debian's ``dataset-fashion-mnist``
  in ``/usr/share/datasets/fashion-mnist``) is accepted too;
* ``cifar10``, ``cifar100`` - torchvision's CIFAR (32x32 RGB).

Decoded uint8 images are cached (``$OFA_DEPLOY_CACHE`` or ``~/.cache/ofa-deploy``) so the
second load of a dataset skips torchvision's decoding.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import OfaError
from ..io import atomic_write
from ..run import IMAGENET_FOLDER, NO_DATASET
from .folder import FOLDER
from .imageset import ImageSet, cache_dir

IMAGE_SIZE = 32  # the paper's input size, the default of --image-size
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its channels, classes and per-channel normalisation."""

    name: str
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    torchvision: str | None  # torchvision.datasets class name, None for bundled data


DATASETS: dict[str, DatasetInfo] = {
    # digits statistics: the 32x32 upscaled training split, computed once
    "digits": DatasetInfo("digits", 1, 10, (0.3054,), (0.3236,), 1437, 360, None),
    "mnist": DatasetInfo("mnist", 1, 10, (0.1307,), (0.3081,), 60000, 10000, "MNIST"),
    "fmnist": DatasetInfo("fmnist", 1, 10, (0.2860,), (0.3530,), 60000, 10000, "FashionMNIST"),
    "cifar10": DatasetInfo("cifar10", 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50000, 10000,
                           "CIFAR10"),
    "cifar100": DatasetInfo("cifar100", 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50000, 10000,
                            "CIFAR100"),
}
DATASET_NAMES = (*DATASETS, FOLDER)  # what --dataset takes: the tables above and your own image folder

# The original IDX files of MNIST-like datasets, as published and as torchvision expects them.
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def dataset_info(name: str, **folder_options: Any) -> DatasetInfo:
    """What ``name`` is; for ``folder`` (decoded or read from the cache) ``folder_options``
    are ``load_dataset``'s data_dir, image_size, val_fraction and data_hash."""
    if name == FOLDER:
        split = _folder_split("train", **folder_options)
        return DatasetInfo(FOLDER, split.in_channels, len(split.classes), split.mean, split.std, split.train_size,
                           split.test_size, None)
    if name in (NO_DATASET, IMAGENET_FOLDER):
        raise OfaError("this run has no data set of its own (an imported supernet): eval, export and catalog build "
                       "read an ImageNet-style --data-dir streaming; this command needs a data set in memory")
    try:
        return DATASETS[name]
    except KeyError:
        raise OfaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}") from None


def check_data_options(name: str, *, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
                       val_fraction: float | None = None, preset: str | None = None) -> None:
    """The checks of a data choice that need no loading (``OfaError`` naming the flag)."""
    from ..resolution import check_resolution
    from ..space import SearchSpace
    from .folder import check_val_fraction

    if name == FOLDER:
        if data_dir is None:
            raise OfaError("--dataset folder needs --data-dir DIR (DIR/<class>/<image> or DIR/train/ + DIR/val/)")
        if preset is not None:
            raise OfaError(f"--preset {preset} sets the paper's epochs for its data sets; give --epochs for "
                           "--dataset folder")
    else:
        dataset_info(name)
        if val_fraction is not None:
            raise OfaError("--val-fraction applies to --dataset folder only (use --val-size to hold out images)")
    check_val_fraction(val_fraction)
    if image_size is not None:
        check_resolution(SearchSpace(), image_size, "--image-size")


def run_data_options(config: dict[str, Any], data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """``load_dataset`` keywords that reload a run's data from its ``config.toml``: the data
    directory (``data_dir`` overrides the run's), the image size of its [space], and for a
    ``folder`` run the val fraction and the folder hash it was trained on."""
    data = config.get("data") or {}
    options: dict[str, Any] = {"data_dir": data_dir if data_dir is not None else data.get("data_dir"),
                               "image_size": int((config.get("space") or {}).get("image_size", IMAGE_SIZE))}
    if data.get("dataset") == FOLDER:
        options.update(val_fraction=data.get("val_fraction"), data_hash=data.get("data_hash"))
    protocol = (config.get("train") or {}).get("data_protocol")  # train --data-protocol
    if protocol is not None:
        options["protocol"] = protocol
    return options


def _folder_split(split: str, *, data_dir: str | os.PathLike | None = None, image_size: int = IMAGE_SIZE,
                  val_fraction: float | None = None, data_hash: str | None = None, **_: Any):
    from .folder import load_split

    if data_dir is None:
        raise OfaError("--dataset folder needs --data-dir DIR (DIR/<class>/<image> or DIR/train/ + DIR/val/)")
    return load_split(data_dir, split, image_size=image_size, val_fraction=val_fraction, data_hash=data_hash)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    subset: int | None = None,
    val_size: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    image_size: int = IMAGE_SIZE,
    val_fraction: float | None = None,
    data_hash: str | None = None,
    protocol: str | None = None,
) -> ImageSet:
    """One split of ``name`` as normalised ``image_size`` x ``image_size`` tensors on ``device``.

    ``folder`` (``ofa_deploy.data.folder``): ``data_dir`` in ImageFolder layout, its held-out
    split is ``test``; ``val_fraction`` splits a single tree, ``data_hash`` (a run's) refuses
    a folder that changed since.

    ``val`` is ``val_size`` images of the training split chosen by ``seed``; ``train``
    excludes them whenever ``val_size`` > 0. ``subset=N`` keeps the first N images of a
    permutation seeded by ``seed`` (for quick runs). Raises ``OfaError`` for an unknown
    name or split, impossible sizes, or missing files without ``download``.
    ``protocol``: ``ofa-deploy`` (None, the default) or ``released``, the paper's released
    code (``data.released``: fixed 50k/10k split, no normalisation, native-size test).
    """
    if split not in SPLITS:
        raise OfaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if val_size < 0 or (subset is not None and subset < 1):
        raise OfaError(f"val_size ({val_size}) must be >= 0 and subset ({subset}) >= 1")
    if split == "val" and val_size == 0:
        raise OfaError("the val split needs val_size > 0 (images held out of the training split)")
    if protocol == "released":
        from .released import load_released

        if name == FOLDER:
            raise OfaError("--data-protocol released is the released code's F-MNIST provider; it does not apply "
                           "to --dataset folder")
        info = dataset_info(name)
        return load_released(info, split, read_raw=lambda which: _raw_split(info, which, data_dir, download),
                             subset=subset, val_size=val_size, seed=seed, device=device, image_size=image_size)
    if protocol not in (None, "ofa-deploy"):
        raise OfaError(f"unknown data protocol {protocol!r}; choose ofa-deploy or released")

    classes = None
    if name == FOLDER:
        part = _folder_split("test" if split == "test" else "train", data_dir=data_dir, image_size=image_size,
                             val_fraction=val_fraction, data_hash=data_hash)
        info = DatasetInfo(FOLDER, part.in_channels, len(part.classes), part.mean, part.std, part.train_size,
                           part.test_size, None)
        raw_images, raw_labels, classes = part.images, part.labels, part.classes
    else:
        info = dataset_info(name)
        raw_images, raw_labels = _raw_split(info, "test" if split == "test" else "train", data_dir, download)
    n = raw_labels.shape[0]
    gen = torch.Generator().manual_seed(seed)
    if split == "test":
        index = torch.randperm(n, generator=gen) if subset is not None else torch.arange(n)
    else:
        if val_size >= n:
            raise OfaError(f"val_size={val_size} leaves no training images ({name} has {n})")
        perm = torch.randperm(n, generator=gen)
        if split == "val":
            index = perm[:val_size]
        elif val_size or subset is not None:
            index = perm[val_size:]
        else:
            index = torch.arange(n)
    if subset is not None:
        if subset > len(index):
            raise OfaError(f"subset={subset} exceeds the {len(index)} images of the {name} {split} split")
        index = index[:subset]
    images = _prepare(raw_images[index], info, torch.device(device), image_size)
    labels = raw_labels[index].to(device=device, dtype=torch.int64)
    return ImageSet(info.name, split, images, labels, info.num_classes, info.in_channels, info.mean, info.std,
                    classes)


def _prepare(raw: torch.Tensor, info: DatasetInfo, device: torch.device, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalised float32 (N, C, size, size) on ``device``."""
    x = raw.to(device).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < min(x.shape[-2:]))
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def _raw_split(info: DatasetInfo, split: str, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels of the original train or test split."""
    if info.torchvision is None:
        return _digits(split)
    root = _torchvision_root(info, Path(data_dir).expanduser() if data_dir is not None else None)
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    cached = cache_dir() / "tensors" / f"{info.name}-{key}.pt"
    if cached.is_file():
        try:
            blob = torch.load(cached, map_location="cpu", weights_only=True)
            return blob[f"{split}_images"], blob[f"{split}_labels"]
        except Exception:  # a stale or damaged cache is rebuilt, never trusted
            cached.unlink(missing_ok=True)
    blob = {}
    for part, train in (("train", True), ("test", False)):
        images, labels = _torchvision_split(info, root, train, download)
        blob[f"{part}_images"], blob[f"{part}_labels"] = images, labels
    try:
        atomic_write(cached, lambda f: torch.save(blob, f))
    except OfaError:
        pass  # a read-only cache only costs speed
    return blob[f"{split}_images"], blob[f"{split}_labels"]


def _torchvision_split(info: DatasetInfo, root: Path, train: bool, download: bool):
    import numpy as np
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.torchvision)
    try:
        ds = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError, AssertionError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, RuntimeError) and ("not found" in str(exc).lower() or "corrupted" in str(exc).lower()):
            raise OfaError(_missing_message(info, root)) from None
        raise OfaError(f"could not read {info.name} from {root}; are its files complete? "
                       f"({type(exc).__name__}: {exc})") from None
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR: (N, H, W, C) uint8
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST-like: (N, H, W) uint8
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels


def _missing_message(info: DatasetInfo, root: Path) -> str:
    how = "pass --download (needs internet) or --data-dir DIR pointing at a torchvision root"
    if info.name in ("mnist", "fmnist"):
        how += " or at a folder of the original IDX .gz files"
        if info.name == "fmnist":
            how += " (Debian: apt install dataset-fashion-mnist, then --data-dir /usr/share/datasets/fashion-mnist)"
    return f"{info.name} not found: looked in {root} (torchvision layout); {how}"


def _torchvision_root(info: DatasetInfo, data_dir: Path | None) -> Path:
    """The torchvision root to read ``info`` from, preparing one from bare IDX files if needed."""
    if data_dir is None:
        return cache_dir() / "datasets"
    if not data_dir.is_dir():
        raise OfaError(f"data directory {data_dir} does not exist")
    if info.name in ("mnist", "fmnist") and _idx_sources(data_dir):
        return _prepare_idx_root(info, data_dir)
    return data_dir


def _idx_sources(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (gzipped or not), or None if any is missing."""
    found = {}
    for stem in _IDX_FILES:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _prepare_idx_root(info: DatasetInfo, folder: Path) -> Path:
    """Decompress the IDX files of ``folder`` into ``<cache>/prepared/<key>/<Class>/raw/``.

    torchvision checks its own md5 list of the ``.gz`` files, which other distributions
    of the same data (Debian's) do not match; the decompressed files are what it reads.
    """
    sources = _idx_sources(folder)
    assert sources is not None
    fingerprint = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources.values())
    root = cache_dir() / "prepared" / hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
    raw = root / info.torchvision / "raw"
    for stem, src in sources.items():
        dst = raw / stem
        if dst.is_file():
            continue
        opener = gzip.open if src.suffix == ".gz" else open

        def copy(f, src=src, opener=opener):
            with opener(src, "rb") as fin:
                shutil.copyfileobj(fin, f)

        try:
            atomic_write(dst, copy)
        except (gzip.BadGzipFile, EOFError) as exc:
            raise OfaError(f"{src} is not a valid gzip file: {exc}") from None
    return root


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as uint8 (N, 1, 8, 8); a fixed stratified 1437/360 split."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(np.arange(len(bunch.target)), test_size=360, random_state=0,
                                           stratify=bunch.target)
    idx = idx_train if split == "train" else idx_test
    return torch.from_numpy(images[idx]).unsqueeze(1).contiguous(), torch.from_numpy(bunch.target[idx]).long()
