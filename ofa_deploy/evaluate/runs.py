"""Evaluating a run directory: its data, its checkpoint, and ``eval/<name>.json`` + ``.csv``.

``evaluate_run`` is what ``ofa-deploy eval`` and ``reproduce`` call (the file format lives in
the torch-free ``ofa_deploy.report.results``). The JSON holds the
parameters that define the evaluation (``"params"``, including the checkpoint's SHA-256),
so an existing file is reused only when it measured exactly the same thing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import run, weights
from ..buckets import PAPER_BUCKETS, paper_buckets, paper_scale
from ..errors import OfaError
from ..evals import EVAL_DIR, write_eval
from ..io import sha256_file
from ..resolution import ALL, space_at, trained_resolutions
from ..space import Subnet

DEFAULT_TOLERANCE = 0.5
DEFAULT_CALIB_N = 2000


def default_name(split: str, seed: int, per_bucket: int | None, subnet: Subnet | None = None, *,
                 buckets: Sequence[float] = PAPER_BUCKETS, tolerance: float = DEFAULT_TOLERANCE,
                 calib_n: int = DEFAULT_CALIB_N, test_subset: int | None = None,
                 resolution: int | None = None) -> str:
    """``test-s0-n100`` for the paper's population, ``test-subnet-<text>`` for one subnet;
    any other bucket set, tolerance, calibration count or test subset is part of the name
    (``test-s0-n5-b4_8-t2000``), so two different evaluations never share a file; so is a
    ``resolution`` other than the run's default (``-r24``)."""
    name = f"{split}-subnet-{subnet}" if subnet is not None else f"{split}-s{seed}-n{per_bucket}"
    if subnet is None and [float(b) for b in buckets] != [float(b) for b in PAPER_BUCKETS]:
        listed = "_".join(f"{b:g}" for b in buckets)
        name += f"-b{listed}" if len(listed) <= 40 else f"-b{hashlib.sha1(listed.encode()).hexdigest()[:10]}"
    if subnet is None and tolerance != DEFAULT_TOLERANCE:
        name += f"-tol{tolerance:g}"
    if calib_n != DEFAULT_CALIB_N:
        name += f"-c{calib_n}"
    if test_subset is not None:
        name += f"-t{test_subset}"
    if resolution is not None:
        name += f"-r{resolution}"
    return name


DEFINING = ("buckets", "per_bucket", "tolerance", "seed", "split", "subnet", "calib_n", "test_subset", "resolution",
            "bn_variance", "data_dir")
"""The parameters that define an evaluation; the checkpoint may change (a re-evaluation
after more training replaces the result of the same evaluation)."""


def check_name_free(json_path: Path, params: dict, *, overwrite: bool = False) -> None:
    """Refuse to replace ``eval/NAME.json`` when it holds a different evaluation (or is not
    an evaluation at all): a second ``eval`` must never silently replace the first."""
    if not os.path.lexists(json_path):
        return
    try:
        previous = json.loads(json_path.read_text())
    except (OSError, ValueError, RecursionError):
        previous = None
    theirs = previous.get("params") if isinstance(previous, dict) else None
    if not isinstance(theirs, dict):
        raise OfaError(f"{json_path} exists and is not an evaluation result; give another --name")
    differ = [k for k in DEFINING if theirs.get(k) != params.get(k)]
    if differ and not overwrite:
        shown = ", ".join(f"{k} {theirs.get(k)!r} there vs {params.get(k)!r}" for k in differ[:3])
        raise OfaError(f"{json_path} holds a different evaluation ({shown}); give another --name, "
                       "or --overwrite to replace it")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OfaError(f"device {name} was requested but torch sees no CUDA device; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise OfaError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return name


def load_eval_data(config: dict, *, split: str, seed: int, data_dir: str | None = None,
                   test_subset: int | None = None, download: bool = False, device: str = "cpu",
                   workers: int | None = None):
    """(training images for BN calibration, measured images, their labels) of a run.

    A run without a data set of its own (imported) is measured on an ImageNet-style folder
    streaming (``data.stream``): the first two are then streams, and a fourth item is the
    ``StreamData`` (what the result records about the folder).

    Calibration uses the run's own training split (its subset and held-out validation
    excluded). ``val`` is the run's held-out split; ``test`` the test split, reduced to
    ``test_subset`` images (default: the run's ``test_subset``) chosen by ``seed`` so that
    runs evaluated with one seed see the same images.
    """
    from ..data import load_dataset
    from ..data.datasets import run_data_options
    from ..data.stream import stream_dir

    data = config.get("data", {})
    if "dataset" not in data:
        raise OfaError("run config has no [data] dataset")
    name = data["dataset"]
    if name in (run.NO_DATASET, run.IMAGENET_FOLDER):
        folder = stream_dir(config, data_dir)
        if folder is None:
            raise OfaError("this run has no data set (an imported supernet); evaluate it on an ImageNet-style folder: "
                           "--data-dir DIR (DIR/train/<class>/*, DIR/val/<class>/*)")
        return _stream_eval_data(config, folder, split=split, seed=seed, test_subset=test_subset, device=device,
                                 workers=workers)
    data_dir = data_dir or data.get("data_dir")
    run_seed = int(config.get("run", {}).get("seed", 0))
    val_size = int(data.get("val_size", 0) or 0)
    common = dict(run_data_options(config, data_dir), download=download, device=device)
    train = load_dataset(name, "train", subset=data.get("train_subset"), val_size=val_size, seed=run_seed, **common)
    if split == "val":
        if val_size == 0:
            raise OfaError("this run held out no validation images (trained with val_size 0); use --split test")
        measured = load_dataset(name, "val", val_size=val_size, seed=run_seed, **common)
    elif split == "test":
        subset = test_subset if test_subset is not None else data.get("test_subset")
        measured = load_dataset(name, "test", subset=subset, seed=seed, **common)
    else:
        raise OfaError(f"unknown split {split!r}; use test or val")
    classes = (config.get("space") or {}).get("num_classes")
    if classes is not None and measured.num_classes != classes:
        raise OfaError(f"dataset {measured.name} has {measured.num_classes} classes, the run's classifier "
                       f"{classes}")
    return train.images, measured.images, measured.labels


def _stream_eval_data(config: dict, folder: Any, *, split: str, seed: int, test_subset: int | None, device: str,
                      workers: int | None):
    from ..data.stream import open_run_folder

    if split != "test":
        raise OfaError(f"--split {split}: an ImageNet-style folder has no validation hold-out; its val/ folder is the "
                       "test split (--split test)")
    data = open_run_folder(config, folder, device=device, workers=workers)
    measured = data.test if test_subset is None else data.test.subset(test_subset, seed)
    if test_subset is not None and test_subset > len(data.test):
        raise OfaError(f"--test-subset {test_subset} exceeds the {len(data.test)} images of {folder}/val")
    return data.train, measured, measured.labels, data


def evaluate_run(
    run_dir: str | Path,
    *,
    buckets: Sequence[float] = PAPER_BUCKETS,
    per_bucket: int = 100,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    split: str = "test",
    subnet: str | Subnet | None = None,
    calib_n: int = DEFAULT_CALIB_N,
    batch_size: int = 1000,
    data_dir: str | None = None,
    test_subset: int | None = None,
    download: bool = False,
    device: str = "auto",
    checkpoint: str = "auto",
    name: str | None = None,
    reuse: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_subnet: Callable[[int, int, dict], None] | None = None,
    resolution: int | None = None,
    workers: int | None = None,
    bn_variance: str | None = None,
) -> tuple[Path, dict]:
    """Evaluate the run's population (or one ``subnet``) and write ``eval/<name>.json`` and
    ``.csv`` atomically; returns (json path, result). With ``reuse``, an existing result
    with the same parameters and checkpoint is returned without measuring again. An
    existing ``NAME.json`` of a different evaluation is refused unless ``overwrite``.
    ``resolution``: one the run was trained at (default: its space's ``image_size``); the
    same subnets are drawn (buckets are MFLOPs at the default resolution), BN recalibrated
    and tested on images resized to it, MACs counted at it (``evaluate.resolution``).

    A run without a data set of its own (``import-ofa``) is measured streaming on the
    ImageNet-style folder ``data_dir`` (``data.stream``; ``workers`` loader processes): BN
    recalibration on ``calib_n`` seeded images of its ``train/``, accuracy over its ``val/``
    (``test_subset``: a seeded subset of it). ``bn_variance`` (``evaluate.bn``): default
    ``biased`` (OFA's) for an imported run, ``unbiased`` otherwise; recorded in the result."""
    from ..specs import resolve_subnet
    from .bn import VARIANCES, default_variance
    from .population import evaluate_population, sample_population
    from .resolution import images_at, run_resolution, supernet_at

    run_dir = Path(run_dir)
    config = run.read_config(run_dir)
    space = run.space_from_config(config)
    ckpt = run.checkpoint_path(run_dir, checkpoint)
    single = resolve_subnet(space, subnet) if subnet is not None else None
    res = run_resolution(config, resolution)
    other_res = res if res != space.image_size else None  # only then named and a defining param
    name = name or default_name(split, seed, per_bucket, single, buckets=buckets, tolerance=tolerance,
                                calib_n=calib_n, test_subset=test_subset, resolution=other_res)
    if "/" in name or name.startswith("."):
        raise OfaError(f"eval name {name!r} must be a plain file name")
    if [float(b) for b in buckets] == [float(b) for b in PAPER_BUCKETS] and space.image_size != 32:
        # the paper's buckets (and their width) where they sit at the run's image size
        buckets = paper_buckets(space)
        tolerance = round(tolerance * paper_scale(space), 2) if tolerance == DEFAULT_TOLERANCE else tolerance
    bn_variance = bn_variance or default_variance(config)
    if bn_variance not in VARIANCES:
        raise OfaError(f"unknown BN variance {bn_variance!r}; choose one of {', '.join(VARIANCES)}")
    from ..data.stream import stream_dir

    folder = stream_dir(config, data_dir)
    params = {
        "buckets": [float(b) for b in buckets] if single is None else None,
        "per_bucket": per_bucket if single is None else None,
        "tolerance": tolerance,
        "seed": seed,
        "split": split,
        "subnet": str(single) if single is not None else None,
        "calib_n": calib_n,
        "test_subset": test_subset if test_subset is not None else config.get("data", {}).get("test_subset"),
        "checkpoint": ckpt.name,
        "checkpoint_sha256": sha256_file(ckpt),
        **({"resolution": other_res} if other_res is not None else {}),
        # only where they are not what every earlier result used, so those stay reusable
        **({"bn_variance": bn_variance} if bn_variance != "unbiased" else {}),
        **({"data_dir": str(Path(folder).expanduser().resolve())} if folder is not None else {}),
    }
    json_path = run_dir / EVAL_DIR / f"{name}.json"
    if reuse and json_path.is_file():
        try:
            previous = json.loads(json_path.read_text())
        except (OSError, ValueError, RecursionError):
            previous = {}
        if isinstance(previous, dict) and previous.get("params") == params:
            return json_path, previous
    check_name_free(json_path, params, overwrite=overwrite)

    device = resolve_device(device)
    # sample before loading anything: an unreachable bucket fails in a second
    population = [(round(_mflops(space_at(space, res), single), 2), single)] if single is not None else \
        sample_population(space, buckets, per_bucket, tolerance, seed)
    supernet, _ = weights.load_supernet(run_dir, checkpoint, device=device)
    supernet = supernet_at(supernet, res)
    calib, images, labels, *streamed = load_eval_data(config, split=split, seed=seed, data_dir=data_dir,
                                                      test_subset=test_subset, download=download, device=device,
                                                      workers=workers)
    calib, images = images_at(calib, res), images_at(images, res)
    if images.shape[1] != space.in_channels:
        raise OfaError(f"the data has {images.shape[1]} channels, the run's network expects {space.in_channels}")
    with _Bar(progress, len(population), run_dir.name) as bar:
        def measured(done: int, total: int, result: dict) -> None:
            bar.update(done, total, result)
            if on_subnet is not None:
                on_subnet(done, total, result)

        result = evaluate_population(
            supernet, supernet.space, buckets=buckets, per_bucket=per_bucket, tolerance=tolerance, seed=seed,
            calib_images=calib, test_images=images, test_labels=labels, calib_n=calib_n, batch_size=batch_size,
            subnets=population, on_subnet=measured, bn_variance=bn_variance,
        )
    result["per_bucket"] = per_bucket if single is None else None
    run_table = config.get("run", {})
    result = {
        "run": run_table.get("name", run_dir.name),
        "run_dir": str(run_dir.resolve()),
        "dataset": config.get("data", {}).get("dataset"),
        **{k: v for k, v in config.get("data", {}).items() if k in ("data_dir", "data_hash")},  # reloads the data
        **(streamed[0].record() if streamed else {}),  # the streamed folder: its path, counts, skipped images
        "method": run_table.get("method"),
        "name": name,
        "split": split,
        "resolution": res,
        "trained_resolutions": list(trained_resolutions(config)),
        "device": device,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        **result,
    }
    check_name_free(json_path, params, overwrite=overwrite)  # again: another eval may have written it meanwhile
    write_eval(run_dir, name, result)
    return json_path, result


def _mflops(space, subnet: Subnet) -> float:
    from ..cost import macs

    return macs(space, subnet) / 1e6


class _Bar:
    """A rich progress bar on stderr (subnets, subnets/min, ETA); silent when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._progress = None

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} subnets/min  last {task.fields[last]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=sys.stderr), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, rate="-", last="-")
        return self

    def update(self, done: int, total: int, result: dict) -> None:
        if self._progress is None:
            return
        task = self._progress.tasks[0]
        rate = 60 * done / task.elapsed if task.elapsed else 0.0
        self._progress.update(self._task, completed=done, rate=f"{rate:.1f}",
                              last=f"{result['mflops']:.2f} MFLOPs {100 * result['accuracy']:.2f}%")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def evaluate_resolutions(run_dir: str | Path, resolutions: Sequence[int] | str = ALL,
                         **kwargs: Any) -> list[tuple[Path, dict]]:
    """``evaluate_run`` at each of ``resolutions`` (``all``: every trained one, smallest
    first); each result is written as its own ``eval/NAME.json`` (names carry ``-rR`` for
    every resolution but the default), so accuracy per trained resolution is on record."""
    from .resolution import run_resolution

    if kwargs.get("name") is not None:
        raise OfaError("--name names one result; with --resolution all each resolution gets its default name")
    config = run.read_config(run_dir)
    chosen = trained_resolutions(config) if resolutions == ALL else tuple(resolutions)
    for r in chosen:  # every one checked before anything is measured
        run_resolution(config, r)
    return [evaluate_run(run_dir, resolution=r, **kwargs) for r in chosen]
