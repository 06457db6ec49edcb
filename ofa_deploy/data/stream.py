"""The ImageNet-style streaming folder mode: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``
read from disk batch by batch, never held in memory whole.

Used for runs without a data set of their own (``import-ofa``: [data] dataset ``none``, or
``imagenet-folder`` when the import recorded a folder): ``--data-dir DIR`` (or the recorded
``data_dir``) switches ``eval``, ``export`` and ``catalog build`` to it. ImageNet's 1.28M
training images would not fit in memory as tensors, and ``folder`` mode's decode-once cache
would mean a 700 GB file at 224x224, hence a separate mode rather than a bigger ``folder``.

* ``train/`` only feeds BN recalibration (a seeded subset, 2,000 images by default as OFA's
  ``set_running_statistics``) and int8 calibration (a few hundred of those);
* ``val/`` is what ofa-deploy calls the test split: accuracy is measured over it streaming.

Preprocessing is OFA's ImageNet evaluation transform: RGB, shorter side resized to
ceil(N / 0.875) (bilinear, antialiased), centre crop N, ImageNet mean/std (the run's
[data] normalization) - what ``data.preprocessing`` records for an imported run.

Reading is torchvision's ``ImageFolder`` (class = sub-folder, sorted names = labels; hidden
folders are not classes) + a torch ``DataLoader`` (``workers`` processes, pinned memory
when the batches go to a CUDA device). A ``FolderStream`` is a lazy list of image indices:
indexing or drawing a subset gives another stream, ``batches`` reads one batch at a time,
so memory is bounded by the batch size (and the loader's prefetch), not by the images.

Unreadable images (PIL cannot identify or decode them) follow ``folder`` mode's policy:
skipped with a warning naming each once and counted (``skipped`` in the outputs), not
refused - one broken file among 50,000 should not stop an evaluation that took an hour; the
same folder always skips the same files. Accuracy is over the images that were read.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import OfaError
from ..run import IMAGENET_FOLDER

MAX_BATCH = 200  # OFA recalibrates BN in batches of 200; bounds the memory of a batch at 224x224 (120 MB)
OFA_CROP_RATIO = 0.875


def default_workers() -> int:
    """Loader processes: one core is left to the network; none on a single core (decoding
    then shares the main process)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _Folder(ImageFolder):
    """``ImageFolder`` whose hidden folders (``.ipynb_checkpoints``) are not classes and whose
    unreadable images come back as None (with their path) instead of raising in a worker.
    At module level: a loader started with ``spawn`` pickles it."""

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = self.transform(self.loader(path))
        except (OSError, ValueError, SyntaxError):  # PIL: unidentified, truncated, bad header
            return None, target, path
        return image, target, path


def _is_image(path: str) -> bool:
    """torchvision's image extensions, hidden files left out (macOS's ``._x.jpg`` forks are
    not images), as ``folder`` mode lists them."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _image_folder(root: Path, size: int, mean: Sequence[float], std: Sequence[float]) -> _Folder:
    transform = transforms.Compose([
        transforms.Resize(math.ceil(size / OFA_CROP_RATIO),
                          interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])
    try:
        return _Folder(str(root), transform=transform, loader=_load_rgb, is_valid_file=_is_image, allow_empty=True)
    except OSError as exc:
        raise OfaError(f"--data-dir: cannot read {root}: {exc.strerror or exc}") from None


def _load_rgb(path: str):
    from PIL import Image

    with open(path, "rb") as f:
        image = Image.open(f)
        return image.convert("RGB")


def _collate(items: list[tuple[Any, int, str]]) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """Stack the readable images of a batch; the unreadable ones come back by path."""
    good = [(x, y) for x, y, _ in items if x is not None]
    skipped = [p for x, _, p in items if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), skipped
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.int64), skipped


class FolderStream:
    """Images ``indices`` of one ``ImageFolder`` split, read in batches; quacks like the
    (N, C, H, W) tensor the in-memory modes pass around where that is cheap (``shape``,
    ``len``, ``device``, indexing), never materialised unless ``as_tensor`` asks."""

    def __init__(self, folder: Any, indices: torch.Tensor, *, name: str, size: int, device: str | torch.device,
                 workers: int, skipped: set[str] | None = None) -> None:
        self.folder, self.indices, self.name, self.size = folder, indices, name, size
        self.device = torch.device(device)
        self.workers = workers
        self.skipped: set[str] = skipped if skipped is not None else set()  # shared by sub-streams: warned once
        targets = torch.as_tensor(folder.targets, dtype=torch.int64)
        self.labels = targets[indices] if len(indices) else torch.empty(0, dtype=torch.int64)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.indices), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.indices)

    def _sub(self, indices: torch.Tensor) -> "FolderStream":
        return FolderStream(self.folder, indices, name=self.name, size=self.size, device=self.device,
                            workers=self.workers, skipped=self.skipped)

    def __getitem__(self, which: Any) -> "FolderStream":
        """A sub-stream (a slice or an index tensor, as tensor indexing), still lazy."""
        if isinstance(which, torch.Tensor):
            which = which.to("cpu")
        return self._sub(self.indices[which])

    def to(self, device: str | torch.device, *_: Any) -> "FolderStream":
        out = self._sub(self.indices)
        out.device = torch.device(device)
        return out

    def contiguous(self, **_: Any) -> "FolderStream":
        return self  # the layout is set per batch, by the network it is fed to

    def subset(self, n: int, seed: int) -> "FolderStream":
        """``n`` images drawn without replacement by ``seed`` (all, in order, if fewer)."""
        if len(self) <= n:
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self._sub(self.indices[order])

    def describe(self) -> dict[str, Any]:
        """What an output records about the images measured: their folder, count, skips."""
        return {"folder": str(Path(self.folder.root).resolve()), "images": len(self),
                "skipped": len(self.skipped)}

    def batches(self, batch_size: int = MAX_BATCH) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) on ``device``, ``min(batch_size, MAX_BATCH)`` at a time, in order;
        unreadable images are left out (warned about once, counted in ``skipped``)."""
        from torch.utils.data import DataLoader, Subset

        size = max(1, min(int(batch_size), MAX_BATCH))
        loader = DataLoader(Subset(self.folder, self.indices.tolist()), batch_size=size, shuffle=False,
                            num_workers=self.workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for x, y, skipped in loader:
            for path in skipped:
                if path not in self.skipped:
                    self.skipped.add(path)
                    print(f"warning: skipped unreadable image {path}", file=sys.stderr)
            if x is not None:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def as_tensor(images: Any) -> Any:
    """A stream's images as one (N, C, H, W) tensor on its device (unreadable ones left
    out); a tensor (or None) as it is. Only for the few hundred images that must be in
    memory: parity inputs, int8 calibration."""
    if not isinstance(images, FolderStream):
        return images
    parts = [x for x, _ in images.batches()]
    return torch.cat(parts) if parts else torch.empty((0, 3, images.size, images.size), device=images.device)


class StreamData:
    """A checked ImageNet-style folder: ``train`` and ``test`` (``val/``) streams of all their
    images; ``classes`` (sorted names), ``fingerprint`` (path, classes and image counts), and
    what ``preprocessing_record`` reads (``name``, ``in_channels``, ``mean``, ``std``)."""

    def __init__(self, root: Path, train: FolderStream, test: FolderStream, classes: tuple[str, ...],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.root, self.train, self.test, self.classes = root, train, test, classes
        self.name, self.in_channels, self.num_classes = IMAGENET_FOLDER, 3, len(classes)
        self.mean, self.std = tuple(mean), tuple(std)
        counts = f"{root.resolve()}|{'/'.join(classes)}|{len(train)}|{len(test)}"
        self.fingerprint = hashlib.sha256(counts.encode("utf-8", "surrogateescape")).hexdigest()[:12]

    @property
    def images(self) -> FolderStream:
        """The training images (as an ``ImageSet``'s ``images``: what calibrates BN)."""
        return self.train

    @property
    def skipped(self) -> int:
        return len(self.train.skipped) + len(self.test.skipped)

    def record(self) -> dict[str, Any]:
        """What an output records about the data it was measured on."""
        return {"dataset": IMAGENET_FOLDER, "data_dir": str(self.root.resolve()), "data_fingerprint": self.fingerprint,
                "train_images": len(self.train), "val_images": len(self.test), "classes": len(self.classes),
                "skipped": self.skipped}


def open_folder(data_dir: str | os.PathLike, *, size: int, num_classes: int, mean: Sequence[float],
                std: Sequence[float], device: str | torch.device = "cpu", workers: int | None = None) -> StreamData:
    """Check ``data_dir`` and list it (no image is decoded): ``OfaError`` in one line for an
    unreadable path, a missing ``train/`` or ``val/``, different class names in the two, a
    class count other than ``num_classes`` (the run's classifier), or an empty class."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise OfaError(f"--data-dir {root} is not a directory (expected DIR/train/<class>/* and DIR/val/<class>/*)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise OfaError(f"--data-dir {root} is not readable")
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise OfaError(f"--data-dir {root} has no {part}/ folder; the ImageNet-style layout is DIR/train/<class>/* "
                           "(BN recalibration, int8 calibration) and DIR/val/<class>/* (accuracy)")
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise OfaError(f"--workers {workers} must be 0 (read in the main process) or more")
    folders = {part: _image_folder(root / part, size, mean, std) for part in ("train", "val")}
    train_classes, val_classes = (tuple(folders[p].classes) for p in ("train", "val"))
    if train_classes != val_classes:
        only_t = sorted(set(train_classes) - set(val_classes))
        only_v = sorted(set(val_classes) - set(train_classes))
        raise OfaError(f"--data-dir {root}: train/ and val/ have different classes"
                       + (f"; only in train/: {_names(only_t)}" if only_t else "")
                       + (f"; only in val/: {_names(only_v)}" if only_v else ""))
    if len(train_classes) != num_classes:
        raise OfaError(f"--data-dir {root} has {len(train_classes)} class folders, the run's classifier "
                       f"{num_classes} classes")
    for part, folder in folders.items():
        counts = torch.bincount(torch.as_tensor(folder.targets, dtype=torch.int64), minlength=num_classes)
        empty = [train_classes[i] for i in range(num_classes) if counts[i] == 0]
        if empty:
            raise OfaError(f"--data-dir {root}: class folder {part}/{empty[0]} holds no images"
                           + (f" (and {len(empty) - 1} more classes)" if len(empty) > 1 else ""))
    train, test = (FolderStream(folders[p], torch.arange(len(folders[p])), name=p, size=size, device=device,
                                workers=workers) for p in ("train", "val"))
    return StreamData(root, train, test, train_classes, mean, std)


def _names(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def stream_dir(config: dict[str, Any], data_dir: str | os.PathLike | None = None) -> str | os.PathLike | None:
    """The ImageNet-style folder a run is measured on in streaming mode: ``data_dir``
    (``--data-dir``) or the folder the import recorded, for a run without a data set of its
    own; None for every other run (and for an imported run given no folder)."""
    data = config.get("data") or {}
    if data.get("dataset") not in ("none", IMAGENET_FOLDER):
        return None
    return data_dir if data_dir is not None else data.get("data_dir")


def open_run_folder(config: dict[str, Any], data_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
                    workers: int | None = None, size: int | None = None) -> StreamData:
    """``open_folder`` with a run's input size, classes and [data] normalization."""
    space = config.get("space") or {}
    norm = (config.get("data") or {}).get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
        raise OfaError("the run's [data] normalization gives no RGB mean/std; the streaming folder mode needs them")
    if int(space.get("in_channels", 3)) != 3:
        raise OfaError("the streaming folder mode reads RGB images; this run's network takes "
                       f"{space.get('in_channels')} channels")
    return open_folder(data_dir, size=int(size or space.get("image_size", 224)),
                       num_classes=int(space.get("num_classes", 1000)), mean=mean, std=std, device=device,
                       workers=workers)
