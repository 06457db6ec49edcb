"""Issue 16's goals next to what the truth's own noise allows, per measured pair.

A held-out subnet's "truth" is one measurement; where a campaign was measured twice,
``measurement_repeatability.py`` estimated that measurement's noise and the best any
predictor could score against it (``ceiling_10pct``, ``ceiling_5pct``, ``spearman_ceiling``).
This puts those ceilings beside the adapted predictor's scores from ``transfer_curves.py``
after ``--n`` measured subnets, and says which goals no predictor could have met there.

    python experiments/predictor-transfer/goal_ceiling.py --n 20 CURVES.json:REPEATABILITY.json[:LABEL] ... > out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from study import GOALS

CEILING = {"within_10pct": "ceiling_10pct", "within_5pct": "ceiling_5pct", "spearman": "spearman_ceiling"}


def pairs(curves_path: Path, repeat_path: Path, label: str, n: int, source: str) -> list[dict]:
    curves = json.loads(curves_path.read_text())["curves"]
    repeat = json.loads(repeat_path.read_text())["pairs"]
    (noise,) = repeat.values()  # one pair of campaigns per file
    out = []
    for c in curves:
        if c.get("source_label", "committed") != source or c["target"] not in noise:
            continue
        point = next(p for p in c["points"] if p["n"] == n)["adapt"]
        ceiling = noise[c["target"]][c["statistic"]]
        row = {"campaign": label, "source": c["source_target"], "target": c["target"], "n": n,
               "noise_sd_pct": ceiling["noise_sd_pct"], "coverage_90": round(point["coverage_90"], 3)}
        for goal, level in GOALS.items():
            row[goal] = {"reached": round(point[goal], 4), "ceiling": round(ceiling[CEILING[goal]], 4),
                         "goal": level, "attainable": ceiling[CEILING[goal]] >= level}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="CURVES.json:REPEATABILITY.json[:LABEL]")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--source", default="committed", help="which source's curves (transfer_curves' source_label)")
    args = ap.parse_args()
    rows = []
    for item in args.inputs:
        curves, repeat, *label = item.split(":")
        rows += pairs(Path(curves), Path(repeat), label[0] if label else Path(curves).parent.name, args.n, args.source)
    summary = {goal: {"attainable": sum(r[goal]["attainable"] for r in rows),
                      "met": sum(r[goal]["reached"] >= r[goal]["goal"] for r in rows),
                      "mean_reached_over_ceiling": round(sum(r[goal]["reached"] / r[goal]["ceiling"] for r in rows)
                                                         / max(len(rows), 1), 4)} for goal in GOALS}
    print(json.dumps({"n": args.n, "pairs": len(rows), "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
