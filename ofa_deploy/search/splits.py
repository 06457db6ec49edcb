"""The data a search chooses on and the data its result is reported on (host side, torch).

Choose on validation, report on test once:

* calibration: the run's own training split - its subset, with its validation hold-out
  (``train --val-size``) excluded, so BN statistics never see a validation image;
* choosing: the run's validation hold-out (split name ``val``) when it has one; a run that
  trained on every training image has no unseen validation data, so it chooses on one
  seeded half of the test split (``test:half1:seedS``) ...
* reporting: ... and reports on the other half (``test:half2:seedS``); a run with a
  hold-out reports on the test split (``test``, all of it or a seeded ``--test-images``
  subset), which is read only when ``report()`` is called - after the finalists are chosen.

A run without a data set of its own (imported) given an ImageNet-style folder is read
streaming (``data.stream``): calibration from its ``train/``, and - it has no hold-out -
chosen on one seeded half of its ``val/`` (the test split) and reported on the other, as
above; the images stay on disk, the splits are lazy lists of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import OfaError
from ..run import IMAGENET_FOLDER, NO_DATASET


@dataclass
class Split:
    """Images and labels measured under one split name (normalised tensors)."""

    name: str
    images: Any
    labels: Any

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class ChoiceData:
    """A run's calibration images, its choosing split and (on demand) its reporting split."""

    dataset: str
    train_set: Any  # the run's training split (an ImageSet), its hold-out excluded
    choose: Split
    holdout: bool  # True: the run held out a validation split; False: halves of the test split
    _report: Optional[Split] = None
    _load_report: Any = field(default=None, repr=False)

    def report(self) -> Split:
        """The reporting split, read the first time it is asked for."""
        if self._report is None:
            self._report = self._load_report()
        return self._report

    @property
    def calibration(self) -> Any:
        """Training images for BN recalibration (and int8 calibration): never a held-out one."""
        return self.train_set.images

    @property
    def note(self) -> str:
        if self.holdout:
            return (f"chosen on the run's validation hold-out ({len(self.choose)} training images never trained on), "
                    "reported on the test split")
        return ("the run trained on every training image, so there is no unseen validation data: chosen on one "
                "seeded half of the test split, reported on the other half")


def choice_data(config: dict[str, Any], *, data_dir: Optional[str] = None, seed: int = 0,
                test_images: Optional[int] = None, device: str = "cpu", workers: Optional[int] = None) -> ChoiceData:
    """The calibration, choosing and reporting data of a run (see the module docstring).
    ``test_images``: a seeded subset of the test split (both halves, for a run without a
    hold-out); ``seed`` also draws the halves."""
    from ..data import load_dataset
    from ..data.datasets import run_data_options

    data = config.get("data") or {}
    name = data.get("dataset")
    if not name:
        raise OfaError("the run's config.toml names no dataset in [data]")
    if name in (NO_DATASET, IMAGENET_FOLDER):
        return _stream_choice(config, data_dir=data_dir, seed=seed, test_images=test_images, device=device,
                              workers=workers)
    run_seed = int((config.get("run") or {}).get("seed", 0))
    val_size = int(data.get("val_size", 0) or 0)
    common = dict(run_data_options(config, data_dir), device=device)
    train = load_dataset(name, "train", subset=data.get("train_subset"), val_size=val_size, seed=run_seed, **common)

    def test_split() -> Any:
        return load_dataset(name, "test", subset=test_images, seed=seed, **common)

    if val_size:
        val = load_dataset(name, "val", val_size=val_size, seed=run_seed, **common)

        def report() -> Split:
            test = test_split()
            return Split("test", test.images, test.labels)

        return ChoiceData(name, train, Split("val", val.images, val.labels), True, _load_report=report)
    import torch

    test = test_split()
    n = int(test.labels.shape[0])
    if n < 2:
        raise OfaError(f"the test split has {n} image; choosing on one half and reporting on the other needs 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(test.labels.device)
    first, second = order[: n // 2], order[n // 2:]
    choose = Split(f"test:half1:seed{seed}", test.images[first], test.labels[first])
    reported = Split(f"test:half2:seed{seed}", test.images[second], test.labels[second])
    return ChoiceData(name, train, choose, False, _report=reported)


def _halves(n: int, seed: int) -> tuple[Any, Any]:
    import torch

    if n < 2:
        raise OfaError(f"the test split has {n} image; choosing on one half and reporting on the other needs 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2], order[n // 2:]


def _stream_choice(config: dict[str, Any], *, data_dir: Optional[str], seed: int, test_images: Optional[int],
                   device: str, workers: Optional[int]) -> ChoiceData:
    """``choice_data`` of an imported run on an ImageNet-style folder (streams)."""
    from ..data.stream import open_run_folder, stream_dir

    folder = stream_dir(config, data_dir)
    if folder is None:
        raise OfaError("this run has no data set (an imported supernet); give --data-dir DIR, an ImageNet-style "
                       "folder (DIR/train/<class>/*, DIR/val/<class>/*)")
    data = open_run_folder(config, folder, device=device, workers=workers)
    if test_images is not None and test_images > len(data.test):
        raise OfaError(f"--test-images {test_images} exceeds the {len(data.test)} images of {folder}/val")
    test = data.test if test_images is None else data.test.subset(test_images, seed)
    first, second = _halves(len(test), seed)
    choose = Split(f"test:half1:seed{seed}", test[first], test.labels[first])
    reported = Split(f"test:half2:seed{seed}", test[second], test.labels[second])
    # the catalog keys accuracies by data set: the folder's fingerprint keeps two folders apart
    return ChoiceData(f"{IMAGENET_FOLDER}:{data.fingerprint}", data, choose, False, _report=reported)
