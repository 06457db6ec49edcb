"""What the predictor-transfer study's scripts share: the landscapes a campaign measures,
issue 16's goals, and reading a campaign directory (``transfer_campaign.py``'s output, or a
directory of the same format written by ``anchor_correct.py`` or
``measurement_repeatability.py --write-mean``: one ``<landscape>.jsonl`` per landscape).

The scripts beside this file import it as ``study`` (Python puts a script's own folder on
``sys.path``): run them as ``python experiments/predictor-transfer/SCRIPT.py ...`` from the
repository root.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# The CPU landscapes of a default campaign (transfer_campaign.py: one machine, five ways of
# running the same subnet).
LANDSCAPES = ("cpu", "cpu-2t", "cpu-b8", "cpu-int8", "torch")
DEFAULT_LANDSCAPES = ",".join(LANDSCAPES)

# Issue 16's goals for a predictor adapted on 20 measured subnets, scored on held-out ones:
# share within +-10 %, share within +-5 %, Spearman rank correlation (each at least this) ...
GOALS = {"within_10pct": 0.95, "within_5pct": 0.75, "spearman": 0.98}
# ... and 90 % intervals that cover between 85 % and 95 % of the held-out subnets.
COVERAGE_90 = (0.85, 0.95)


def goals_met(scores: dict) -> dict[str, bool]:
    """Per accuracy goal of ``GOALS``: whether ``scores`` (a ``learning_curve`` point) reaches it."""
    return {goal: scores[goal] >= level for goal, level in GOALS.items()}


def calibrated(coverage_90: float) -> bool:
    lo, hi = COVERAGE_90
    return lo <= coverage_90 <= hi


def names(text: str) -> list[str]:
    """A comma-separated ``--landscapes``/``--targets`` value as a list (empty items dropped)."""
    return [x for x in text.split(",") if x]


def landscape_file(campaign: Path, landscape: str) -> Path:
    return Path(campaign) / f"{landscape}.jsonl"


def load(campaign: Path, landscape: str, space):
    """One landscape of a campaign as a ``LatencyDataset``."""
    from ofa_deploy.profile.collect import LatencyDataset

    return LatencyDataset(landscape_file(campaign, landscape), space)


def splits(campaign: Path, landscape: str, space, statistic: str) -> tuple[list, list, list, list]:
    """(pool subnets, their latencies, held-out subnets, their latencies) of one landscape."""
    data = load(campaign, landscape, space)
    pool, pool_ms = data.split("pool", statistic)
    held, held_ms = data.split("holdout", statistic)
    return pool, pool_ms, held, held_ms


def read_rows(path: Path, what: str | None = None) -> list[dict]:
    """The JSON rows of a campaign file. With ``what`` (words for the file in a message), every
    row must have an integer chunk and positive finite latencies, and anything else, or an
    unreadable file, ends the script with one line naming the file and line."""
    if what is None:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SystemExit(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row.get("chunk"), int) and all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in row["latency_ms"].values())
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise SystemExit(f"{path} line {lineno} is not a measured row (JSON with an integer chunk and positive "
                             "finite latency_ms)")
        rows.append(row)
    return rows


def rows_by_key(path: Path) -> dict[str, dict]:
    """The rows of a campaign file by subnet key (a later row of a key replaces an earlier one)."""
    return {row["key"]: row for row in read_rows(path)}
