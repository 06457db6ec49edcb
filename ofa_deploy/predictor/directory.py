"""The predictor directory (``--out`` of ``predictor build`` and ``predictor adapt``,
default ``predictors/<target>`` for build): its files, and what ``build`` and ``adapt``
both need to fill it. Layout::

    predictor.json   the fitted model (table + correction, or adapted) with its validation
    latency.jsonl    every measured subnet (split "train" for fitting, "adapt" for an adapted
                     predictor's chosen subnets, "anchor" for the drift anchors, "holdout"
                     and with --repeats "holdout-2", ... for check)
    check.json       the held-out report of ``predictor check`` (predictor next to a linear
                     fit on MACs)
    check.png        predicted vs measured latency, predictor and MACs side by side
    curve.json       ``predictor check --curve``: the learning curve of an adapted predictor
    curve.png        its figure
    to-measure/      ``predictor adapt --no-measure``: the chosen subnets' exports to profile
                     on the device, and under ``to-measure/anchors/`` the anchor subnets'

``outputs.PREDICTOR`` recognises such a directory by these names. Measuring needs the
run's supernet (torch, imported only by ``load_supernet``); reading a predictor does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple

from ..errors import OfaError

PREDICTOR_FILE = "predictor.json"
DATASET_FILE = "latency.jsonl"
CHECK_FILE = "check.json"
FIGURE_FILE = "check.png"
CURVE_FILE, CURVE_FIGURE = "curve.json", "curve.png"
TO_MEASURE = "to-measure"
ANCHOR_DIR = "anchors"  # under TO_MEASURE: the anchor subnets, profiled between every --step chosen ones

Progress = Callable[[str, int, int], None]
# the statistics whose measured ratio to the fitted one a predictor records
RATIO_STATISTICS = ("min", "p50", "mean", "p90", "p99")


def predictor_file(path: str | Path) -> Path:
    """``path`` itself, or the predictor file in it when it is a predictor directory."""
    path = Path(path)
    return path / PREDICTOR_FILE if path.is_dir() else path


def load_predictor(path: str | Path, flag: Optional[str] = None):
    """The ``LatencyPredictor`` at ``path`` (a file or its directory); its errors start with
    ``flag`` where given (``--from``)."""
    from .predictor import LatencyPredictor

    try:
        return LatencyPredictor.load(predictor_file(path))
    except OfaError as exc:
        if flag is None:
            raise
        raise OfaError(f"{flag}: {exc}") from None


def predictor_target(model: Any, path: str | Path, given: Any = None):
    """The ``Target`` a predictor is checked on: the definition it recorded (so a target
    given to ``build``/``adapt`` as a ``.toml`` path needs no file later), else (an older
    predictor) its target's name re-resolved. ``given`` (``--target``) must be that target
    (same name, and the same definition where one is recorded)."""
    from ..targets import from_record, target_for

    where = f"predictor {path}"
    record = model.info.get("target_definition")
    recorded = from_record(record, where) if record is not None else None
    if recorded is not None and recorded.name != model.target:
        raise OfaError(f"{where}: its recorded target definition is of {recorded.name}, its target {model.target} "
                       "(the file was edited or damaged)")
    return target_for(given, recorded, model.target, where, same_name=True)


def own_dir(out_dir: str | Path, inputs: Sequence[Tuple[str, Optional[str | Path]]]) -> Path:
    """``out_dir`` checked to be a predictor directory (or new), and none of ``inputs``."""
    from ..outputs import PREDICTOR, check_own_dir

    return check_own_dir(out_dir, PREDICTOR, inputs=inputs)


def load_supernet(run_dir: str | Path):
    """The training run's supernet (imports torch)."""
    from ..weights import load_supernet as load

    net, _ = load(run_dir)
    return net


def drift_warnings(drift: dict[str, Any]) -> list[str]:
    """What the user should know about the measurements (``profile.drift.noise_warning``)."""
    from ..profile.drift import noise_warning

    warning = noise_warning(drift)
    return [warning] if warning else []


def measuring_environment(target: Any) -> dict[str, Any]:
    """The measuring machine as a predictor records it."""
    from ..profile.environment import environment as describe

    return describe(threads=target.threads)
