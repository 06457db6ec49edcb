"""A training run directory: what is in it and how to read it back.

Layout (``ofa-deploy train --out runs/NAME``)::

    config.toml       resolved configuration: [run] [data] [space] [train] (+ versions)
    metrics.jsonl     one JSON object per epoch (each has an "epoch" key)
    histogram.json    how often each setting / MFLOPs bucket was trained
    last.pt           checkpoint written atomically at every epoch end
    final.pt          checkpoint of the finished run
    eval/             population evaluations (``ofa-deploy eval``)

A checkpoint is a ``torch.save`` dict whose ``"model"`` entry is ``Supernet.state_dict()``;
the trainer adds its own state (optimizer, scheduler, RNG, schedule, epoch); ``weights``
loads it. This module does not import torch: the device side reads run configurations too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import OfaError
from .io import atomic_write_bytes, read_toml
from .space import SearchSpace

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
HISTOGRAM = "histogram.json"
LAST = "last.pt"
FINAL = "final.pt"
NO_DATASET = "none"  # [data] dataset of a run without data (``ofa-deploy import-ofa``)
# [data] dataset of an imported run given an ImageNet-style folder (``import-ofa --data-dir``):
# measured on it streaming (``data.stream``); ``--data-dir`` does the same for a ``none`` run
IMAGENET_FOLDER = "imagenet-folder"


def write_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    import tomli_w

    return atomic_write_bytes(Path(run_dir) / CONFIG, tomli_w.dumps(_drop_none(config)).encode())


def read_config(run_dir: str | Path) -> dict[str, Any]:
    from .schemas import check_config
    from .validate import kind_of, path_text

    path = Path(path_text(str(run_dir), "run directory")) / CONFIG
    kind = kind_of(Path(run_dir))
    if kind != "dir":
        raise OfaError(f"run directory {run_dir} {'is a file' if kind == 'file' else 'does not exist'}")
    if kind_of(path) != "file":
        raise OfaError(f"{run_dir} is not a run directory: no {CONFIG} in it")
    config = read_toml(path, str(path), "run configuration")
    return check_config(config, str(path))


def space_from_config(config: dict[str, Any]) -> SearchSpace:
    if "space" not in config:
        raise OfaError("run config has no [space] table")
    return SearchSpace.from_dict(config["space"], "run config [space]")


def checkpoint_path(run_dir: str | Path, which: str = "auto") -> Path:
    """``final.pt``, ``last.pt``, or with ``auto`` the final one if the run finished."""
    run_dir = Path(run_dir)
    names = {"auto": (FINAL, LAST), "final": (FINAL,), "last": (LAST,)}.get(which)
    if names is None:
        raise OfaError(f"checkpoint must be auto, final or last, not {which!r}")
    for name in names:
        if (run_dir / name).is_file():
            return run_dir / name
    raise OfaError(f"{run_dir} has no checkpoint ({' or '.join(names)}); train it first")


def _drop_none(obj: Any) -> Any:
    """TOML has no null: leave unset options out of the file."""
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    return obj
