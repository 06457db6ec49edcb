"""Remove the drift between chunks from a ``transfer_campaign.py`` directory, using the
anchor subnets it re-measured in every chunk (``anchors.jsonl``).

Per landscape, statistic and chunk, the drift factor is the geometric mean over anchors of
(anchor's value in that chunk / its median over all chunks), shrunk toward 1 by the
empirical-Bayes weight of ``ofa_deploy.profile.drift`` (``--no-shrink``: as measured, the
estimate before that module existed); every row measured in that chunk is divided by it.
The result goes to ``OUT/<landscape>.jsonl`` in the campaign format (the raw figures kept
as ``raw_latency_ms``, the factor as ``drift``), so
``transfer_curves.py``, ``predictor_cv.py`` and ``measurement_repeatability.py`` read it
unchanged.

    python experiments/predictor-transfer/anchor_correct.py CAMPAIGN OUT [--landscapes cpu,...] [--no-shrink]

Prints one JSON document: per landscape the drift factors of the ``min`` statistic by
chunk, and how much of the anchors' own spread is left after the correction (the
anchors' noise: what the correction adds to every row of a chunk).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from study import DEFAULT_LANDSCAPES, names, read_rows

from ofa_deploy.io import atomic_write_text
from ofa_deploy.profile.drift import chunk_drift


def drift_factors(anchor_rows: list[dict], shrink: bool = True) -> tuple[dict, dict]:
    """({landscape: {statistic: {chunk: factor}}}, {landscape: shrinkage details of ``min``})
    from the rows of ``anchors.jsonl``, by the library's estimator (``profile.drift``);
    ``shrink=False``: the plain estimate (weight 1)."""
    by = defaultdict(lambda: defaultdict(dict))  # (landscape, statistic) -> anchor key -> chunk -> value
    for row in anchor_rows:
        for stat, value in row["latency_ms"].items():
            if value > 0:
                by[(row["landscape"], stat)][row["key"]][row["chunk"]] = float(value)
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
    details: dict[str, dict] = {}
    for (land, stat), anchors in by.items():
        factors, info = chunk_drift(anchors, shrink=shrink)
        out[land][stat] = factors
        if stat == "min":
            details[land] = {k: round(v, 4) for k, v in info.items()}
    return out, details


def anchor_spread(anchor_rows: list[dict], land: str, factors: dict[int, float]) -> dict[str, float]:
    """sd of the anchors' log values across chunks before and after dividing by the factor
    (after: each anchor's own noise, shrunk by the factor it helped estimate)."""
    vals = defaultdict(dict)
    for row in anchor_rows:
        if row["landscape"] == land:
            vals[row["key"]][row["chunk"]] = np.log(row["latency_ms"]["min"])
    before, after = [], []
    for per in vals.values():
        chunks = [c for c in sorted(per) if c in factors]
        x = np.array([per[c] for c in chunks])
        before.append(np.std(x))
        after.append(np.std(x - np.log([factors[c] for c in chunks])))
    return {"sd_before": float(np.mean(before)), "sd_after": float(np.mean(after))}


def _check_own(out: Path, campaign: Path, land: str) -> None:
    """OUT must not be the campaign, and a landscape file already in OUT must be this
    script's output (every row keeps ``raw_latency_ms``): nothing else is overwritten."""
    if out.resolve() == campaign.resolve():
        raise SystemExit(f"OUT {out} is the campaign itself: its measurements would be overwritten")
    path = out / f"{land}.jsonl"
    if not path.exists():
        return
    try:
        first = next((json.loads(x) for x in path.read_text().splitlines() if x.strip()), None)
    except (OSError, json.JSONDecodeError):
        first = None
    if not (isinstance(first, dict) and "raw_latency_ms" in first):
        raise SystemExit(f"{path} exists and is not a drift-corrected file this script wrote; choose another OUT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--landscapes", default=DEFAULT_LANDSCAPES)
    ap.add_argument("--no-shrink", action="store_true",
                    help="the plain estimate: divide by the anchors' mean drift as measured")
    args = ap.parse_args()
    if not (args.campaign / "anchors.jsonl").is_file():
        raise SystemExit(f"{args.campaign} has no anchors.jsonl: measure it with transfer_campaign.py --anchors N")
    lands = names(args.landscapes)
    for land in lands:
        _check_own(args.out, args.campaign, land)
    anchor_rows = read_rows(args.campaign / "anchors.jsonl", "anchors")
    factors, details = drift_factors(anchor_rows, shrink=not args.no_shrink)
    report = {"campaign": str(args.campaign), "landscapes": {}}
    outputs = {}
    for land in lands:  # everything is checked before anything is written
        lines = []
        for row in read_rows(args.campaign / f"{land}.jsonl", f"{land} measurements"):
            try:
                drift = {stat: factors[land][stat][row["chunk"]] for stat in row["latency_ms"]}
            except KeyError:
                raise SystemExit(f"{args.campaign / (land + '.jsonl')}: chunk {row['chunk']} has no anchors in "
                                 "anchors.jsonl") from None
            lines.append(json.dumps({**row, "raw_latency_ms": row["latency_ms"], "drift": drift,
                                     "latency_ms": {s: v / drift[s] for s, v in row["latency_ms"].items()}}))
        outputs[land] = "\n".join(lines) + "\n"
        report["landscapes"][land] = {
            "drift_min_by_chunk": {str(c): round(f, 4) for c, f in sorted(factors[land]["min"].items())},
            "shrinkage": details[land],
            **{k: round(v, 4) for k, v in anchor_spread(anchor_rows, land, factors[land]["min"]).items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    for land, text in outputs.items():
        atomic_write_text(args.out / f"{land}.jsonl", text)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
