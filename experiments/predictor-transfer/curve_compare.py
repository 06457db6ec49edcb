"""Compare two sets of transfer learning curves (``transfer_curves.py``'s summaries) pair by
pair: held-out accuracy and 90 % interval coverage of ``adapt`` at each number of measured
subnets, and the means over all pairs.

    python experiments/predictor-transfer/curve_compare.py --before A/summary.json [...] --after B/summary.json [...]

Summaries are matched by position (the same campaign in the same place of both lists) and
pairs by source and target. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from study import COVERAGE_90, calibrated

FIELDS = ("within_10pct", "within_5pct", "spearman", "coverage_90")


def _points(path: Path) -> dict[tuple[str, str, int], dict]:
    data = json.loads(path.read_text())
    return {(pair["source"], pair["target"], point["n"]): point for pair in data["pairs"] for point in pair["adapt"]}


def _means(rows: list[dict], side: str) -> dict:
    values = {f: [r[side][f] for r in rows] for f in FIELDS}
    out = {f: round(float(np.mean(v)), 4) for f, v in values.items()}
    cover = np.array(values["coverage_90"])
    out[f"coverage_in_{round(COVERAGE_90[0] * 100)}_{round(COVERAGE_90[1] * 100)}"] = int(
        sum(calibrated(c) for c in cover)
    )
    out["mean_abs_coverage_miss"] = round(float(np.mean(np.abs(cover - 0.9))), 4)
    out["goals_met"] = int(sum(r[side]["met"] for r in rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, nargs="+", required=True)
    ap.add_argument("--after", type=Path, nargs="+", required=True)
    args = ap.parse_args()
    if len(args.before) != len(args.after):
        ap.error("--before and --after need as many summaries each")
    rows = []
    for before, after in zip(args.before, args.after):
        old, new = _points(before), _points(after)
        for key in sorted(set(old) & set(new)):
            rows.append({"campaign": after.parent.name, "source": key[0], "target": key[1], "n": key[2],
                         "before": {f: old[key][f] for f in (*FIELDS, "met")},
                         "after": {f: new[key][f] for f in (*FIELDS, "met")}})
    by_n = {}
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        by_n[str(n)] = {"pairs": len(sel), "before": _means(sel, "before"), "after": _means(sel, "after"),
                        "after_within_5pct_at_least_before": sum(
                            r["after"]["within_5pct"] >= r["before"]["within_5pct"] for r in sel)}
    print(json.dumps({"means": by_n, "pairs": rows}, indent=1))


if __name__ == "__main__":
    main()
