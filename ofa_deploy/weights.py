"""A run's weights (torch): its checkpoints and the supernet they fill.

``run`` reads what a run directory says without torch; this module is what needs torch to
use it (evaluation, export, analysis, resumed training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import OfaError
from .nn import Supernet
from .run import checkpoint_path, read_config, space_from_config


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    import pickle
    import zipfile

    import torch

    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise OfaError(f"checkpoint {path} is corrupt or not a checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise OfaError(f"checkpoint {path} has no 'model' entry")
    return ckpt


def load_supernet(run_dir: str | Path, which: str = "auto", device: str = "cpu"):
    """(Supernet with the run's weights, in eval mode on ``device``, run config)."""
    config = read_config(run_dir)
    space = space_from_config(config)
    ckpt = load_checkpoint(checkpoint_path(run_dir, which), map_location=device)
    net = Supernet(space)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise OfaError(f"checkpoint of {run_dir} does not fit its [space]: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval(), config
