"""A run's evaluation result files, read and written without torch.

``eval/<name>.json`` (written by ``ofa_deploy.evaluate.runs``) holds ``params``, ``subnets``
and ``buckets``; ``eval/<name>.csv`` holds the same per-subnet numbers as rows. Evaluation
writes them; reports and analyses read them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .errors import OfaError
from .io import atomic_write_json, atomic_write_text, read_json
from .schemas import check_eval

EVAL_DIR = "eval"
CSV_COLUMNS = ("bucket", "text", "macs", "mflops", "params", "accuracy", "loss")


def csv_text(result: dict) -> str:
    """One row per subnet, columns ``CSV_COLUMNS`` (the same numbers as the JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in result["subnets"]:
        writer.writerow([r[c] for c in CSV_COLUMNS])
    return out.getvalue()


def write_eval(run_dir: str | Path, name: str, result: dict) -> tuple[Path, Path]:
    """Write ``eval/<name>.csv`` then ``eval/<name>.json``, each atomically."""
    folder = Path(run_dir) / EVAL_DIR
    csv_path = atomic_write_text(folder / f"{name}.csv", csv_text(result))
    return atomic_write_json(folder / f"{name}.json", result), csv_path


def list_evals(run_dir: str | Path) -> list[Path]:
    """The run's population evaluations (not single-subnet ones), newest first."""
    folder = Path(run_dir) / EVAL_DIR
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            data = read_json(path)
        except OfaError:
            continue  # not ours or damaged: never the newest evaluation
        if isinstance(data, dict) and data.get("buckets") and (data.get("params") or {}).get("subnet") is None:
            found.append(path)
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def read_eval(run_dir: str | Path, name: str | None = None) -> dict:
    """``eval/<name>.json`` of a run, or with no name its newest population evaluation."""
    run_dir = Path(run_dir)
    if name is None:
        found = list_evals(run_dir)
        if not found:
            raise OfaError(f"{run_dir} has no population evaluation; run `ofa-deploy eval {run_dir}` first")
        path = found[0]
    else:
        path = run_dir / EVAL_DIR / f"{name}.json"
        if not path.is_file():
            raise OfaError(f"{run_dir} has no evaluation named {name!r} ({path} is missing)")
    data = read_json(path)
    if not isinstance(data, dict) or "subnets" not in data or "buckets" not in data:
        raise OfaError(f"{path} is not an evaluation result")
    return check_eval(data, str(path))
