"""``--dataset folder``: your own images in torchvision's ``ImageFolder`` layout.

Layouts (class = a sub-folder; its images may sit in nested folders; classes are sorted by
name, so the label of a class is its index in that order, as ``ImageFolder`` numbers them):

* ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` (or ``test/`` instead of ``val/``):
  ``val`` is what ofa-deploy calls the test split (what ``eval``, ``export`` and
  ``catalog build`` measure); ``--val-size`` still holds images out of ``train``.
* ``DIR/<class>/*`` (or ``DIR/train/<class>/*`` alone): one tree, split per class by a
  seeded fraction (``--val-fraction``, default 0.2, seed ``SPLIT_SEED`` whatever the run's
  seed, so runs with different seeds are measured on the same images).

Images are files with torchvision's image extensions; hidden files and other files are
ignored (and counted). Every image is decoded once with PIL, its shorter side resized to
``image_size`` (bilinear, antialiased) and the centre ``image_size`` x ``image_size``
cropped (torchvision's ``Resize(N)`` + ``CenterCrop(N)``, which also decide the deployed
model's expected preprocessing), and kept as uint8.

Channels: 1 when every image is greyscale (PIL modes 1, L, LA, I, I;16, F), otherwise 3
(RGB; grey images among colour ones are replicated, alpha and palettes are dropped by
PIL's RGB conversion). A grey data set saved as RGB files is therefore trained as RGB.

Unreadable images (PIL cannot identify or fully decode them, e.g. a truncated JPEG) are
**skipped with a warning and a count** rather than refused: one broken download among
thousands of good photos should not stop a run, and the skip is deterministic (the same
folder hash always skips the same files, recorded in the run's ``config.toml``). A class
left without readable images, and a folder without any, are refused.

Cache: the decoded tensors go to ``<cache>/folders/<hash>-<N>px.pt`` (written atomically).
The hash is SHA-256 over every image's path relative to the split, its size and its
modification time in nanoseconds: listing and ``stat`` cost milliseconds even for large
folders, where hashing the bytes would read the whole data set on every run; any edit,
addition, removal or rename changes it, and ``mv``/``cp -p``/``rsync -a`` keep it. (A
file rewritten with the same size and a restored mtime would go unnoticed.) The run's
``config.toml`` records ``data_dir`` and ``data_hash``; reloading a run whose folder no
longer matches its hash is refused.

(Slightly over 400 lines: scanning, decoding, caching and splitting one folder format share
its listing and its hash; the next change here should split decoding off.)
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import OfaError
from ..io import atomic_write

FOLDER = "folder"
DEFAULT_VAL_FRACTION = 0.2
SPLIT_SEED = 0
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")
CACHE_VERSION = 1
_EVAL_DIRS = ("val", "test")


@dataclass(frozen=True)
class Listing:
    """The image files of a folder: ``files[i]`` = (part, class name, path relative to the
    part's directory); ``part`` is ``train``, ``val`` or ``all`` (one tree to split)."""

    root: Path
    layout: str  # "train+val", "train+test" or "one tree"
    classes: tuple[str, ...]
    files: tuple[tuple[str, str, str], ...]
    stats: tuple[tuple[int, int], ...]  # (size, mtime_ns) per file
    ignored: int
    hash: str

    def path(self, i: int) -> Path:
        part, cls, rel = self.files[i]
        return self._part_dir(part) / cls / rel

    def _part_dir(self, part: str) -> Path:
        if part == "all":
            return self.root / "train" if self.layout == "one tree (train/)" else self.root
        return self.root / (part if part == "train" else self.layout.split("+")[1])


def scan(data_dir: str | os.PathLike) -> Listing:
    """List ``data_dir`` and check its shape (``OfaError`` for no images, one class, an
    empty class or different classes in train and val)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise OfaError(f"--data-dir {root} is not a directory")
    subdirs = {p.name for p in _visible(root) if p.is_dir()}
    evals = [d for d in _EVAL_DIRS if d in subdirs]
    ignored = 0
    if "train" in subdirs and len(evals) == 2:
        raise OfaError(f"--data-dir {root} has both val/ and test/; ofa-deploy measures one held-out split: keep one")
    if "train" in subdirs and evals:
        layout = f"train+{evals[0]}"
        train, n1 = _classes(root / "train")
        held, n2 = _classes(root / evals[0])
        ignored = n1 + n2 + sum(1 for p in _visible(root) if p.is_file())
        if set(train) != set(held):
            only_t, only_v = sorted(set(train) - set(held)), sorted(set(held) - set(train))
            raise OfaError(f"--data-dir {root}: train/ and {evals[0]}/ have different classes"
                           + (f"; only in train/: {_names(only_t)}" if only_t else "")
                           + (f"; only in {evals[0]}/: {_names(only_v)}" if only_v else ""))
        parts = (("train", train), ("val", held))
    else:
        tree = root / "train" if "train" in subdirs else root
        layout = "one tree (train/)" if "train" in subdirs else "one tree"
        found, ignored = _classes(tree)
        if tree != root:
            ignored += sum(1 for p in _visible(root) if p.is_file())
        parts = (("all", found),)
    classes = tuple(sorted(parts[0][1]))
    files, stats = [], []
    for part, found in parts:
        for cls in classes:
            if not found[cls]:
                where = (("train/" if layout == "one tree (train/)" else "") if part == "all"
                         else "train/" if part == "train" else f"{evals[0]}/") + cls
                raise OfaError(f"--data-dir {root}: class folder {where} holds no images ({_ext_list()})")
            for rel, st in found[cls]:
                files.append((part, cls, rel))
                stats.append(st)
    if not files:
        raise OfaError(f"--data-dir {root} holds no images ({_ext_list()}) in class folders: expected "
                       f"DIR/<class>/<image> or DIR/train/<class>/... and DIR/val/<class>/...")
    if len(classes) < 2:
        raise OfaError(f"--data-dir {root} has one class ({classes[0]}); a classifier needs at least 2 class folders")
    digest = hashlib.sha256()
    for (part, cls, rel), (size, mtime) in zip(files, stats):
        digest.update(f"{part}/{cls}/{rel}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    return Listing(root, layout, classes, tuple(files), tuple(stats), ignored, digest.hexdigest()[:16])


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise OfaError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _classes(tree: Path) -> tuple[dict[str, list[tuple[str, tuple[int, int]]]], int]:
    """{class: [(relative path, (size, mtime_ns)), ...]} of ``tree`` and the count of
    ignored (non-image) files."""
    found: dict[str, list[tuple[str, tuple[int, int]]]] = {}
    ignored = 0
    for entry in _visible(tree):
        if not entry.is_dir():
            ignored += 1
            continue
        images = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                if not name.lower().endswith(EXTENSIONS):
                    ignored += 1
                    continue
                path = Path(dirpath) / name
                st = path.stat()
                images.append((path.relative_to(entry).as_posix(), (st.st_size, st.st_mtime_ns)))
        found[entry.name] = images
    return found, ignored


def _names(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _ext_list() -> str:
    return "/".join(e.lstrip(".") for e in EXTENSIONS[:3]) + "/..."


# -- decoding -------------------------------------------------------------------------------
@dataclass
class Decoded:
    """A folder decoded at one image size: uint8 ``images`` (M, C, S, S) of the readable
    files, their ``labels``, ``parts`` (the listing's part per image) and per-image channel
    sums and sums of squares (for the normalisation of any subset)."""

    listing: Listing
    image_size: int
    images: torch.Tensor
    labels: torch.Tensor
    parts: list[str]
    sums: torch.Tensor
    sq_sums: torch.Tensor
    sizes: dict[str, Any]
    skipped: list[str]
    cached: bool


_MEMO: dict[tuple[str, str, int], Decoded] = {}


def decode(data_dir: str | os.PathLike, image_size: int, *, expected_hash: str | None = None) -> Decoded:
    """The folder at ``image_size``, from the cache or decoded now (and cached)."""
    from .imageset import cache_dir

    listing = scan(data_dir)
    if expected_hash is not None and listing.hash != expected_hash:
        raise OfaError(f"--data-dir {listing.root} changed since the run was trained: its images hash to "
                       f"{listing.hash}, the run recorded {expected_hash} (files added, removed or modified); "
                       f"restore it, point --data-dir at the original, or train a new run")
    key = (str(listing.root.resolve()), listing.hash, image_size)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / "folders" / f"{listing.hash}-{image_size}px.pt"
    decoded = _read_cache(path, listing, image_size)
    if decoded is None:
        decoded = _decode_all(listing, image_size)
        blob = {"version": CACHE_VERSION, "hash": listing.hash, "image_size": image_size,
                "images": decoded.images, "labels": decoded.labels, "parts": decoded.parts,
                "sums": decoded.sums, "sq_sums": decoded.sq_sums, "sizes": decoded.sizes,
                "skipped": decoded.skipped}
        try:
            atomic_write(path, lambda f: torch.save(blob, f))
        except OfaError:
            pass  # a read-only cache only costs speed
    if decoded.skipped:
        print(f"warning: {listing.root}: skipped {len(decoded.skipped)} unreadable image(s) of "
              f"{len(listing.files)}: {_names(decoded.skipped, 3)}", file=sys.stderr)
    _MEMO.clear()  # one folder at a time stays in memory
    _MEMO[key] = decoded
    return decoded


def _read_cache(path: Path, listing: Listing, image_size: int) -> Decoded | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob["version"] != CACHE_VERSION or blob["hash"] != listing.hash or blob["image_size"] != image_size:
            raise ValueError("stale")
        return Decoded(listing, image_size, blob["images"], blob["labels"], list(blob["parts"]), blob["sums"],
                       blob["sq_sums"], dict(blob["sizes"]), list(blob["skipped"]), cached=True)
    except Exception:  # a stale or damaged cache is rebuilt, never trusted
        path.unlink(missing_ok=True)
        return None


def _decode_all(listing: Listing, image_size: int) -> Decoded:
    import numpy as np

    arrays, labels, parts, grey, skipped = [], [], [], [], []
    sizes: Counter = Counter()
    index = {c: i for i, c in enumerate(listing.classes)}
    for i, (part, cls, rel) in enumerate(listing.files):
        try:
            array, is_grey, size = _decode_one(listing.path(i), image_size)
        except Exception as exc:  # PIL raises many types for a broken file; each is one skipped image
            skipped.append(f"{part}/{cls}/{rel} ({type(exc).__name__})" if part != "all" else
                           f"{cls}/{rel} ({type(exc).__name__})")
            continue
        arrays.append(array)
        grey.append(is_grey)
        sizes[size] += 1
        labels.append(index[cls])
        parts.append(part)
    for part in dict.fromkeys(p for p, _, _ in listing.files):
        have = {labels[j] for j in range(len(labels)) if parts[j] == part}
        for cls in listing.classes:
            if index[cls] not in have:
                raise OfaError(f"--data-dir {listing.root}: class {cls}"
                               + ("" if part == "all" else f" of {part}/") + " has no readable image "
                               f"({len(skipped)} unreadable file(s) in the folder, e.g. {_names(skipped, 2)})")
    stacked = np.stack(arrays)  # (M, S, S, 3) uint8
    if all(grey):
        stacked = stacked[..., :1]
    images = torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))
    x = images.to(torch.float64).div_(255.0)
    most = sizes.most_common(1)[0][0]
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return Decoded(listing, image_size, images, torch.tensor(labels, dtype=torch.int64), parts,
                   x.sum(dim=(2, 3)), x.square().sum(dim=(2, 3)),
                   {"distinct": len(sizes), "most_common": list(most), "min": [min(widths), min(heights)],
                    "max": [max(widths), max(heights)]}, skipped, cached=False)


def _decode_one(path: Path, image_size: int):
    """(uint8 (S, S, 3) array, greyscale?, (width, height)) of one image file."""
    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        mode, size = img.mode, img.size
        if mode.startswith("I;16"):
            img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
        rgb = img.convert("RGB")
    rgb = TF.center_crop(TF.resize(rgb, image_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True),
                         image_size)
    return np.asarray(rgb, dtype=np.uint8), mode in GREY_MODES, size


# -- splits ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderSplit:
    """One split (``train`` or ``test``) as uint8 images and labels, with the data set's
    channels, classes and training-split normalisation."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int


def check_val_fraction(val_fraction: float | None) -> None:
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise OfaError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive)")


def split_masks(decoded: Decoded, val_fraction: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (train, test) masks over ``decoded.images``."""
    check_val_fraction(val_fraction)
    parts = decoded.parts
    if decoded.listing.layout.startswith("train+"):
        if val_fraction is not None:
            raise OfaError(f"--val-fraction applies to a folder without a held-out split; {decoded.listing.root} "
                           f"has {decoded.listing.layout.replace('+', '/ and ')}/")
        test = torch.tensor([p == "val" for p in parts], dtype=torch.bool)
        return ~test, test
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    test = torch.zeros(len(parts), dtype=torch.bool)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    for c, name in enumerate(decoded.listing.classes):
        members = torch.nonzero(decoded.labels == c).flatten()
        n = len(members)
        if n < 2:
            raise OfaError(f"--data-dir {decoded.listing.root}: class {name} has {n} readable image; a train/val "
                           f"split needs at least 2 per class")
        n_val = min(n - 1, max(1, round(fraction * n)))
        test[members[torch.randperm(n, generator=gen)[:n_val]]] = True
    return ~test, test


def load_split(data_dir: str | os.PathLike, split: str, *, image_size: int, val_fraction: float | None = None,
               data_hash: str | None = None) -> FolderSplit:
    """The ``train`` or ``test`` split of the folder at ``image_size``."""
    decoded = decode(data_dir, image_size, expected_hash=data_hash)
    train, test = split_masks(decoded, val_fraction)
    count = train.sum().item() * image_size * image_size
    mean = decoded.sums[train].sum(0) / count
    var = (decoded.sq_sums[train].sum(0) / count - mean.square()).clamp_min(1e-12)
    mask = train if split == "train" else test
    return FolderSplit(decoded.images[mask], decoded.labels[mask], decoded.listing.classes,
                       int(decoded.images.shape[1]), tuple(round(float(m), 6) for m in mean),
                       tuple(round(float(s), 6) for s in var.sqrt()), int(train.sum()), int(test.sum()))


def report(data_dir: str | os.PathLike, *, image_size: int, val_fraction: float | None = None,
           data_hash: str | None = None) -> dict[str, Any]:
    """What was found, for the run's ``config.toml`` [data.found] and the progress line."""
    decoded = decode(data_dir, image_size, expected_hash=data_hash)
    train, test = split_masks(decoded, val_fraction)
    listing = decoded.listing
    per_class = {split: [int(((decoded.labels == c) & mask).sum()) for c in range(len(listing.classes))]
                 for split, mask in (("train", train), ("test", test))}
    return {
        "layout": listing.layout,
        "classes": list(listing.classes),
        "channels": int(decoded.images.shape[1]),
        "train_images": int(train.sum()),
        "test_images": int(test.sum()),
        "train_per_class": per_class["train"],
        "test_per_class": per_class["test"],
        "sizes_seen": decoded.sizes,
        "resize": "shorter side to image_size (bilinear), centre crop",
        "skipped_unreadable": len(decoded.skipped),
        "skipped_files": decoded.skipped[:20],
        "ignored_files": listing.ignored,
    }


def summary_line(found: dict[str, Any], data_dir: str | os.PathLike, image_size: int, cached: bool) -> str:
    """One line for the progress output."""
    sizes = found["sizes_seen"]
    seen = (f"{sizes['min'][0]}x{sizes['min'][1]}" if sizes["distinct"] == 1 else
            f"{sizes['distinct']} sizes {sizes['min'][0]}x{sizes['min'][1]} to {sizes['max'][0]}x{sizes['max'][1]}")
    return (f"folder {data_dir} ({found['layout']}): {len(found['classes'])} classes "
            f"({_names(found['classes'], 4)}), {found['train_images']} train / {found['test_images']} test images, "
            f"{'grey' if found['channels'] == 1 else 'RGB'}, {seen} -> {image_size}x{image_size}"
            + (f", {found['skipped_unreadable']} unreadable skipped" if found["skipped_unreadable"] else "")
            + (", from the cache" if cached else ", decoded and cached"))


def folder_tables(dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    """``{"found": report}`` for a folder run's [data] table (empty for other data sets);
    ``options``: ``TrainConfig.data_options()``."""
    if dataset != FOLDER:
        return {}
    return {"found": report(options["data_dir"], image_size=options["image_size"],
                            val_fraction=options.get("val_fraction"), data_hash=options.get("data_hash"))}


def folder_summary(options: dict[str, Any]) -> str:
    """The progress line of a folder run (``options`` as for ``folder_tables``)."""
    found = folder_tables(FOLDER, options)["found"]
    cached = decode(options["data_dir"], options["image_size"], expected_hash=options.get("data_hash")).cached
    return summary_line(found, options["data_dir"], options["image_size"], cached)
