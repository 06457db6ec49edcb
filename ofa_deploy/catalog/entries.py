"""Catalog entries for one target (subnet + accuracy + measured latency + ONNX), the
accuracy-vs-latency Pareto front, and budgeted selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..errors import OfaError
from .db import Catalog

STATS = ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")


class NothingFits(OfaError):
    """No entry meets the budget; ``fastest`` is the entry with the lowest p90 (or ``None``)."""

    def __init__(self, message: str, fastest: Optional[dict[str, Any]]) -> None:
        super().__init__(message)
        self.fastest = fastest


def entries(catalog: Catalog, target: str, *, batch: int = 1, precision: Optional[str] = None,
            dataset: Optional[str] = None, include_unstable: bool = True,
            resolution: Optional[int] = None) -> list[dict[str, Any]]:
    """One entry per subnet, input resolution and precision measured on ``target`` at
    ``batch`` (only ``precision`` / ``resolution`` if given), sorted by p90 latency; an
    entry's accuracy, ONNX and MACs are those at its resolution.

    An entry's latency is its newest stable measurement (an unstable one only if nothing
    else exists - and then the entry says ``"unstable": true``), made the way the target
    runs: a measurement on another backend or device (imported with
    ``--allow-backend-mismatch``) only if nothing else exists, and then the entry's
    ``"backend_mismatch"`` says why (it is ``None`` otherwise). Its accuracy is the
    newest reported accuracy of the model at that precision - one measured on another
    split than the one that chose it (``accuracy_info``: ``split`` and ``chosen_on``) -
    else the newest BN-recalibrated test accuracy (any split or calibration if none; for
    fp16/int8 without an accuracy of their own, the fp32 one, and
    ``accuracy_precision`` says so), on ``dataset`` if given. ``onnx`` is the artifact
    exported for this target at that precision, else one whose hash the measurement names,
    else ``None``.
    """
    by_model: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in catalog.latency_rows(target, batch, precision, resolution):
        by_model.setdefault((row["subnet"], row["precision"], row["resolution"]), []).append(row)
    chosen = {}
    for model, rows in by_model.items():
        rows = [r for r in rows if not r["backend_mismatch"]] or rows
        stable = [r for r in rows if not r["unstable"]]
        chosen[model] = max(stable or rows, key=lambda r: (r["date"], r["id"]))
    out = []
    for (key, _, _), lat in chosen.items():
        if lat["unstable"] and not include_unstable:
            continue
        try:
            out.append(_entry(catalog, key, lat, target, dataset))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # hand-edited or damaged columns
            raise OfaError(f"catalog {catalog.path} is damaged: the stats or spec of {key} do not read back "
                           f"({type(exc).__name__}: {str(exc)[:80]})") from None
    out.sort(key=lambda e: (e["latency_ms"]["p90"], e["key"], e["precision"], e["resolution"]))
    return out


def _entry(catalog: Catalog, key: str, lat: dict[str, Any], target: str, dataset: Optional[str]) -> dict[str, Any]:
    sub = catalog.subnet(key)
    if sub is None:  # pragma: no cover - foreign keys forbid it
        raise OfaError(f"catalog {catalog.path} is inconsistent: latency for unknown subnet {key}")
    res = lat["resolution"]
    rows = [r for r in catalog.accuracy_rows(key) if r["resolution"] == res]
    acc = (_best_accuracy([r for r in rows if r["precision"] == lat["precision"]], dataset)
           or _best_accuracy([r for r in rows if r["precision"] == "fp32"], dataset))
    art = catalog.artifact(key, target, "onnx", lat["precision"], res)
    if art is None and lat["artifact_sha256"]:
        row = catalog.conn.execute("SELECT * FROM artifacts WHERE subnet = ? AND kind = 'onnx' AND sha256 = ?",
                                   (key, lat["artifact_sha256"])).fetchone()
        art = dict(row) if row else None
    stats = json.loads(lat["stats"])
    return {
        "key": key,
        "text": sub["text"],
        "subnet": json.loads(sub["spec"]),
        "resolution": res,
        **_macs_at(catalog, sub, res),
        "params": sub["params"],
        "accuracy": acc["top1"] if acc else None,
        "accuracy_precision": acc["precision"] if acc else None,
        "accuracy_info": {k: acc[k] for k in ("dataset", "split", "chosen_on", "recalibrated", "calib_images",
                                               "images", "run")}
        if acc else None,
        "target": target,
        "latency_ms": {k: stats["latency_ms"].get(k) for k in STATS},
        "latency_kind": lat["latency_kind"],
        "n": lat["n"],
        "cov": lat["cov"],
        "unstable": bool(lat["unstable"]),
        "backend": lat["backend"],
        "backend_mismatch": lat["backend_mismatch"],
        "precision": lat["precision"],
        "batch": lat["batch"],
        "host": lat["host"],
        "source": lat["source"],
        "measured_at": lat["date"],
        "onnx": art["path"] if art else None,
        "onnx_sha256": art["sha256"] if art else None,
        # top-1 drop against fp32 in points (fp32: 0; None: not recorded) and the int8 bound
        "drop_points": 0.0 if lat["precision"] == "fp32" else (art.get("drop_points") if art else None),
        "max_drop": art.get("max_drop") if art else None,
        "reverted": art.get("reverted") if art else None,
        "preprocessing": _preprocessing(art),
    }


def _preprocessing(art: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The preprocessing record of the export an ONNX artifact belongs to (its ``model.json``
    beside it), or ``None`` where there is none (an older export, a moved file)."""
    if art is None:
        return None
    sidecar = Path(art["path"]).parent / "model.json"
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    record = data.get("preprocessing") if isinstance(data, dict) else None
    if not isinstance(record, dict):
        return None
    from ..schemas import check_preprocessing

    try:
        return check_preprocessing(record, str(sidecar))
    except OfaError:
        return None


def _macs_at(catalog: Catalog, sub: dict[str, Any], resolution: int) -> dict[str, Any]:
    """MACs of the stored subnet at ``resolution`` (the stored count at the catalog's own size)."""
    if resolution == catalog.default_resolution():
        return {"macs": sub["macs"], "mflops": sub["macs"] / 1e6}
    from ..cost import macs
    from ..resolution import space_at
    from ..space import SearchSpace, Subnet

    space = space_at(SearchSpace.from_dict(catalog.space_dict() or {}), resolution)
    count = macs(space, Subnet.from_dict(json.loads(sub["spec"]), space))
    return {"macs": count, "mflops": count / 1e6}


def _best_accuracy(rows: list[dict[str, Any]], dataset: Optional[str]) -> Optional[dict[str, Any]]:
    if dataset is not None:
        rows = [r for r in rows if r["dataset"] == dataset]
    if not rows:
        return None
    return max(rows, key=lambda r: (r["chosen_on"] is not None and r["chosen_on"] != r["split"],
                                    r["split"].startswith("test"), bool(r["recalibrated"]), r["date"], r["id"]))


def pareto(items: list[dict[str, Any]], *, latency: str = "p90") -> list[dict[str, Any]]:
    """Entries no other entry beats on both accuracy (higher) and ``latency`` (lower),
    fastest first. Entries without accuracy are left out."""
    ranked = sorted((e for e in items if e["accuracy"] is not None),
                    key=lambda e: (e["latency_ms"][latency], -e["accuracy"]))
    front, best = [], float("-inf")
    for e in ranked:
        if e["accuracy"] > best:
            front.append(e)
            best = e["accuracy"]
    return front


REMEASURE_HINT = ("re-measure them on a quiet machine: profile each flagged export directory again with a longer "
                  "--min-time-s and `catalog import` the result (`catalog build --remeasure-unstable` does it for "
                  "a catalog build's own finalists)")


def unstable_note(items: list[dict[str, Any]], *, catalog: Any = None, target: Optional[str] = None) -> Optional[str]:
    """``"N of M entries have unstable latency ...; <what to do>"``, or ``None`` when none has:
    what quickstart, ``report.md`` and ``catalog select`` say. With ``catalog`` and
    ``target`` the commands are spelled out for the first flagged entry."""
    flagged = [e for e in items if e["unstable"]]
    if not flagged:
        return None
    what = (f"{len(flagged)} of {len(items)} entries have unstable latency (CoV above the target's threshold after "
            "its retries: another process was competing for the machine, or the timed runs were too short); "
            "their numbers are not to be trusted")
    first = flagged[0]
    if catalog is None or target is None or not first.get("onnx"):
        return f"{what}. To fix: {REMEASURE_HINT}"
    directory = Path(first["onnx"]).parent
    return (f"{what}. To fix, on a quiet machine re-measure each with a longer run and import it, e.g. "
            f"`ofa-deploy profile {directory} --target {target} --min-time-s 10 --out remeasured.json && "
            f"ofa-deploy catalog import remeasured.json --catalog {catalog}` (a catalog build's own finalists: "
            "`catalog build ... --remeasure-unstable`)")


def unusable_reasons(items: list[dict[str, Any]], allow_unstable: bool) -> str:
    """Why none of ``items`` can be selected, each reason with what to do about it."""
    reasons = []
    no_file = sum(1 for e in items if not (e["onnx"] and Path(e["onnx"]).is_file()))
    if no_file:
        reasons.append(f"{no_file} have no ONNX file here (for results measured on a device, `catalog import "
                       "RESULTS --model-json EXPORT/model.json` with the export directory that was measured)")
    no_accuracy = sum(1 for e in items if e["accuracy"] is None)
    if no_accuracy:
        reasons.append(f"{no_accuracy} have no accuracy (import with the export's --model-json, or build the "
                       "catalog from the run)")
    unstable = sum(1 for e in items if e["unstable"])
    if unstable and not allow_unstable:
        reasons.append(f"{unstable} have unstable latency ({REMEASURE_HINT}; or pass --allow-unstable)")
    return f"of {len(items)} entries, " + ("; ".join(reasons) if reasons else "none qualifies")


def select(items: list[dict[str, Any]], *, max_latency_ms: Optional[float] = None,
           max_mflops: Optional[float] = None, min_accuracy: Optional[float] = None,
           allow_unstable: bool = False, max_drop: Optional[float] = None) -> dict[str, Any]:
    """The most accurate entry with an ONNX file whose measured p90 is within
    ``max_latency_ms`` and/or whose MFLOPs are within ``max_mflops`` (and accuracy at least
    ``min_accuracy``); ties go to the faster. Entries of every precision in ``items``
    compete (``entries(..., precision=None)``): the answer to "the most accurate model
    under 2 ms on this device, any precision". Entries whose latency is flagged unstable
    take part only with ``allow_unstable`` (and still say so). ``NothingFits`` names the
    fastest entry. An entry's ``budget_latency_ms``, where set (``catalog select
    --confidence``: the larger of the measured p90 and the predictor's upper bound), is
    held to ``max_latency_ms`` instead of its measured p90. ``max_drop``: only entries
    whose recorded top-1 drop against fp32 (``drop_points``) is at most that many points."""
    if max_latency_ms is None and max_mflops is None:
        raise OfaError("give a budget: --max-latency-ms or --max-mflops")
    if max_drop is not None:
        kept = [e for e in items if e.get("drop_points") is not None and e["drop_points"] <= max_drop]
        if not kept:
            unknown = sum(1 for e in items if e.get("drop_points") is None)
            raise NothingFits(f"no entry's recorded accuracy drop is within {max_drop:g} points (of {len(items)} "
                              f"entries, {unknown} record no drop)", None)
        items = kept
    usable = [e for e in items if e["accuracy"] is not None and (allow_unstable or not e["unstable"])
              and e["onnx"] and Path(e["onnx"]).is_file()]
    if not usable:
        raise NothingFits(f"the catalog has no usable entry (accuracy, stable latency, ONNX file) for this target: "
                          f"{unusable_reasons(items, allow_unstable)}", None)
    fits = [e for e in usable
            if (max_latency_ms is None or e.get("budget_latency_ms", e["latency_ms"]["p90"]) <= max_latency_ms)
            and (max_mflops is None or e["mflops"] <= max_mflops)
            and (min_accuracy is None or e["accuracy"] >= min_accuracy)]
    if fits:
        return max(fits, key=lambda e: (e["accuracy"], -e["latency_ms"]["p90"]))
    fastest = min(usable, key=lambda e: (e["latency_ms"]["p90"], -e["accuracy"]))
    budget = " and ".join(b for b in (
        f"p90 <= {max_latency_ms:g} ms" if max_latency_ms is not None else "",
        f"<= {max_mflops:g} MFLOPs" if max_mflops is not None else "",
        f"accuracy >= {min_accuracy:g}" if min_accuracy is not None else "") if b)
    raise NothingFits(
        f"nothing meets that budget ({budget}); the fastest is {fastest['text']} with p90 "
        f"{fastest['latency_ms']['p90']:.4f} ms, {fastest['mflops']:.2f} MFLOPs, accuracy {fastest['accuracy']:.4f}",
        fastest)
