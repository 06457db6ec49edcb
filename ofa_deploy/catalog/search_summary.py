"""What a catalog keeps of the search behind its ``--from-search`` entries (no torch).

``catalog build --from-search DIR`` stores, per target, a compact summary of ``DIR``'s
history in the catalog's ``meta`` table (key ``search:TARGET``), so that ``catalog html``
can show where the entries came from - every evaluated subnet's cost and choosing accuracy,
the front, the pick per budget, the predictor's held-out quality per round - without the
search directory, which need not travel with the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUMMARY_FORMAT = "ofa-deploy/search-summary/1"
META_PREFIX = "search:"


def _number(x: Any) -> Any:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def search_summary(history: dict[str, Any], target: str, search_dir: str | Path) -> dict[str, Any]:
    """The summary of ``history`` (a search's history.json) for one of its targets."""
    obj = (history.get("objectives") or {}).get(target) or {}
    evaluated = history.get("evaluated") or []
    costs = obj.get("costs") or []
    execution = history.get("execution") or {}

    def point(row: dict[str, Any]) -> dict[str, Any]:
        return {"subnet": row.get("subnet"), "accuracy": _number(row.get("accuracy")), "cost": _number(row.get("cost"))}

    return {
        "format": SUMMARY_FORMAT,
        "search_dir": str(Path(search_dir).resolve()),
        "target": target,
        "unit": obj.get("unit"),
        "chosen_on": history.get("chosen_on"),
        "chosen_on_images": history.get("chosen_on_images"),
        "evaluations": history.get("evaluations"),
        "model": history.get("model"),
        "seed": history.get("seed"),
        "seconds": _number(history.get("seconds")),
        "ranks": execution.get("ranks", 1),
        "budgets": [_number(b) for b in obj.get("budgets") or []],
        # every evaluated subnet of the search: its cost for this target and its choosing accuracy
        "evaluated": [{"subnet": e.get("subnet"), "accuracy": _number(e.get("accuracy")), "cost": _number(c),
                       "round": e.get("round")} for e, c in zip(evaluated, costs)],
        "front": [point(f) for f in obj.get("front") or []],
        "picks": [{**point(p), "budget": _number(p.get("budget"))} for p in obj.get("picks") or []],
        "rounds": [{"round": r.get("round"), "evaluated": r.get("evaluated"),
                    "heldout_spearman": _number(r.get("heldout_spearman"))} for r in history.get("rounds") or []],
    }


def stored_summaries(cat: Any, targets: list[str]) -> list[dict[str, Any]]:
    """The search summaries a catalog holds for ``targets`` (in that order); a record that
    is not one (damaged, another format) is left out rather than failing the page."""
    import json

    out = []
    for target in targets:
        text = cat.get_meta(META_PREFIX + target)
        try:
            summary = json.loads(text) if text else None
        except (ValueError, RecursionError):
            summary = None
        if isinstance(summary, dict) and summary.get("format") == SUMMARY_FORMAT:
            out.append(summary)
    return out
