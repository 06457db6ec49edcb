"""Merging latency measured elsewhere: ``profile --json`` results from a device, matched to
catalog subnets by the identity the export sidecar put in them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..cost import cost
from ..errors import OfaError
from ..io import read_json
from ..space import SearchSpace, Subnet
from .db import Catalog

REQUIRED = ("latency_ms", "n", "cov")


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """A results file: one ``profile --json`` object, a list of them, or ``{"results": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise OfaError(f"results file {path} does not exist")
    data = read_json(path, "results file")
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        data = data["results"]
    results = data if isinstance(data, list) else [data]
    for i, r in enumerate(results):
        if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
            raise OfaError(f"{path}: result {i} is not a profile result (needs {', '.join(REQUIRED)})")
        lat = r["latency_ms"]
        if not isinstance(lat, dict) or any(not isinstance(lat.get(k), (int, float)) for k in
                                            ("min", "mean", "std", "p50", "p90", "p99")):
            raise OfaError(f"{path}: result {i} has no latency statistics min/mean/std/p50/p90/p99")
    return results


def import_results(catalog: Catalog, path: str | Path, *, target: Optional[str] = None,
                   subnet: Optional[str] = None, model_json: Optional[str | Path] = None) -> dict[str, Any]:
    """Add every result in ``path`` to ``catalog``; returns counts.

    Each result names its subnet through ``model.subnet`` (present when an export
    directory was profiled). For results that do not (a bare engine or ONNX file was
    profiled), ``model_json`` - the export's ``model.json`` - supplies the identity
    (subnet, space, accuracy, source), or ``subnet`` (text/JSON) names the subnet. The
    target is the result's unless ``target`` is given; the search space is the
    catalog's, else the result's ``model.space``. Accuracy recorded in the export sidecar
    comes along. Importing the same results twice adds nothing.
    """
    results = load_results(path)
    if model_json is not None:
        from ..profile.model import read_sidecar

        sidecar = read_sidecar(Path(model_json)) if Path(model_json).is_file() else None
        if sidecar is None:
            raise OfaError(f"{model_json} does not exist")
        identity = {k: sidecar[k] for k in ("subnet", "space", "accuracy", "bn", "source", "macs", "params")
                    if k in sidecar}
        if "subnet" not in identity:
            raise OfaError(f"{model_json} names no subnet; give the export directory's model.json")
        results = [{**r, "model": {**identity, **(r.get("model") or {})}} for r in results]
    added = duplicates = 0
    targets: set[str] = set()
    for i, r in enumerate(results):
        model = r.get("model") or {}
        space_dict = catalog.space_dict() or model.get("space")
        if space_dict is None:
            raise OfaError(f"{path}: result {i} carries no search space and the catalog has none yet; "
                           "profile the export directory (its model.json has it)")
        space = SearchSpace.from_dict(space_dict)
        if model.get("space") and SearchSpace.from_dict(model["space"]) != space:
            raise OfaError(f"{path}: result {i} was measured on a subnet of another search space than the catalog's")
        spec = subnet if subnet is not None else model.get("subnet")
        if spec is None:
            raise OfaError(f"{path}: result {i} does not say which subnet it measured; profile the export "
                           "directory, or give --subnet")
        sub = Subnet.parse(spec, space) if isinstance(spec, str) else Subnet.from_dict(spec, space)
        tgt = target or r.get("target")
        if not tgt:
            raise OfaError(f"{path}: result {i} names no target; give --target")
        catalog.set_space(space.to_dict())
        m, p = cost(space, sub)
        catalog.add_subnet(str(sub), sub.to_dict(), m, p)
        _import_accuracy(catalog, str(sub), model)
        if catalog.add_latency(str(sub), r, target=tgt, source=f"imported:{Path(path).name}"):
            added += 1
        else:
            duplicates += 1
        targets.add(tgt)
    return {"results": len(results), "added": added, "duplicates": duplicates, "targets": sorted(targets)}


def _import_accuracy(catalog: Catalog, key: str, model: dict[str, Any]) -> None:
    acc, source = model.get("accuracy"), model.get("source")
    if not isinstance(acc, dict) or "top1" not in acc or not isinstance(source, dict):
        return
    bn = model.get("bn") or {}
    catalog.add_accuracy(
        key, run=str(source.get("run_dir", "")), run_sha256=str(source.get("checkpoint_sha256", "")),
        dataset=str(source.get("dataset", "")), split=str(acc.get("split", "test")),
        recalibrated=bool(bn.get("recalibrated", True)), calib_images=int(bn.get("images", 0) or 0),
        images=int(acc.get("images", 0) or 0), top1=float(acc["top1"]), loss=acc.get("loss"))
