"""What a run directory records about its run: the config tables written at its start
(``config.toml``), whether a directory holds the same run, and the summary written at its end."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__, run
from ..data.folder import folder_tables
from ..errors import OfaError
from ..io import atomic_write_json
from ..space import SearchSpace
from .config import TrainConfig
from .fidelity import with_defaults

SUMMARY = "summary.json"


def config_from_dir(run_dir: Path, requested: TrainConfig) -> TrainConfig:
    """The run's own config, with what may change between sessions (output, device,
    CUDA graphs, threads) taken from ``requested``."""
    cfg = TrainConfig.from_tables(run.read_config(run_dir))
    cfg.quiet, cfg.device, cfg.cuda_graphs = requested.quiet, requested.device, requested.cuda_graphs
    cfg.threads = requested.threads
    return cfg


def data_info(cfg: TrainConfig):
    from ..data import dataset_info

    return dataset_info(cfg.dataset, **cfg.data_options())


def config_tables(cfg: TrainConfig, space: SearchSpace, out: Path) -> dict[str, Any]:
    """The tables of a new run's ``config.toml``."""
    return {
        "run": {
            "name": cfg.name or out.name,
            "method": cfg.method,
            "seed": cfg.seed,
            "device": cfg.device,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"ofa_deploy": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "completed": False,
        },
        "data": {**cfg.data_table(), **folder_tables(cfg.dataset, cfg.data_options())},
        "space": space.to_dict(),
        "train": cfg.train_table(),
    }


def same_run(existing: dict, tables: dict) -> bool:
    """Same data, space, hyper-parameters and seed (device, time and versions may differ)."""
    clean = run._drop_none
    existing = {**existing, "train": with_defaults(existing.get("train", {}))}  # runs from before --fidelity
    for key in ("data", "space", "train"):
        if clean(existing.get(key, {})) != clean(tables[key]):
            return False
    return all(existing.get("run", {}).get(k) == tables["run"][k] for k in ("method", "seed"))


def completed(run_dir: Path) -> bool:
    """The run finished: its summary and final checkpoint are there."""
    return (run_dir / SUMMARY).is_file() and (run_dir / run.FINAL).is_file()


def write_summary(run_dir: Path, cfg: TrainConfig, metrics: list[dict], wall_time: float, epochs: int) -> None:
    """``summary.json`` of a finished run (``metrics``: its per-epoch rows)."""
    last = metrics[-1]
    images = sum(m["images_per_s"] * m["epoch_time_s"] for m in metrics)
    atomic_write_json(run_dir / SUMMARY, {
        "completed": True,
        "train_wall_time_s": wall_time,
        "epochs": epochs,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "final_train_loss": last["loss"],
        "final_train_acc": last["train_acc"],
        "images_per_s": images / wall_time if wall_time > 0 else 0.0,
    })


def read_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise OfaError(f"{run_dir} has no {SUMMARY}: the run has not finished")
    from ..io import read_json
    from ..schemas import check_summary

    return check_summary(read_json(path), str(path), complete=True)
