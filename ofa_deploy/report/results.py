"""The per-run facts a report shows, read without torch: the newest evaluation
(``ofa_deploy.evals``), the run's ``config.toml`` (labels), ``summary.json`` (wall time) and
``histogram.json`` (what training sampled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import run
from ..errors import OfaError
from ..evals import read_eval
from ..io import read_json
from ..schemas import check_summary

SUMMARY = "summary.json"

METHOD_LABELS = {"rss": "RSS", "ps": "OFA-PS", "sandwich": "sandwich", "max-then-min": "max then min",
                 "min-then-max": "min then max", "alternating": "alternating"}


@dataclass
class RunFacts:
    """What a report shows of one run. ``eval``/``histogram``/``wall_time_s`` are None when
    the run has no such file (a report shows what exists)."""

    run_dir: Path
    name: str
    dataset: str
    method: str
    epochs: int | None
    label: str
    wall_time_s: float | None
    histogram: dict | None
    eval: dict | None
    config: dict


def method_label(config: dict) -> str:
    """The schedule in words: ``RSS``, ``RSS per-batch 2``, ``OFA-PS``, ``fixed middle``..."""
    train = config.get("train", {})
    method = train.get("method") or config.get("run", {}).get("method", "?")
    label = METHOD_LABELS.get(method, method)
    if method == "rss" and train.get("per_batch"):
        label += f" per-batch {train['per_batch']}"
    if method == "fixed":
        label = f"fixed {train.get('subnet', '?')}"
    if train.get("balance") not in (None, "none"):
        label += f" ({train['balance']}-balanced)"
    return label


def load_run(run_dir: str | Path, eval_name: str | None = None, *, need_eval: bool = False) -> RunFacts:
    """The facts of one run directory. ``eval_name`` picks ``eval/<name>.json`` (default: the
    newest population evaluation); ``need_eval`` turns a missing one into an ``OfaError``."""
    run_dir = Path(run_dir)
    config = run.read_config(run_dir)
    run_table, data = config.get("run", {}), config.get("data", {})
    summary = check_summary(read_json(run_dir / SUMMARY), str(run_dir / SUMMARY)) \
        if (run_dir / SUMMARY).exists() else None
    histogram = _read_json(run_dir / run.HISTOGRAM)
    try:
        evaluation = read_eval(run_dir, eval_name)
    except OfaError:
        if need_eval or eval_name is not None:
            raise
        evaluation = None
    epochs = config.get("train", {}).get("epochs")
    return RunFacts(
        run_dir=run_dir,
        name=run_table.get("name", run_dir.name),
        dataset=data.get("dataset", "?"),
        method=config.get("train", {}).get("method") or run_table.get("method", "?"),
        epochs=epochs,
        label=f"{method_label(config)}, {epochs} ep" if epochs is not None else method_label(config),
        wall_time_s=summary.get("train_wall_time_s") if summary else None,
        histogram=histogram,
        eval=evaluation,
        config=config,
    )


def unique_labels(runs: list[RunFacts]) -> None:
    """Append the run name to labels two runs share, so legends never merge runs."""
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label = f"{r.label} [{r.name}]"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None
