"""Merging latency measured elsewhere: ``profile --json`` results from a device, matched to
catalog subnets by the identity the export sidecar put in them. Reading and checking the
results file is ``profile.results.load_results``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from ..cost import cost
from ..errors import OfaError
from ..profile.results import load_results
from ..space import SearchSpace, Subnet
from .db import Catalog


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
        identity = {k: sidecar[k] for k in ("subnet", "space", "precision", "accuracy", "bn", "source", "macs",
                                            "params", "files") if k in sidecar}
        if "subnet" not in identity:
            raise OfaError(f"{model_json} names no subnet; give the export directory's model.json")
        results = [{**r, "model": {**identity, **(r.get("model") or {})}} for r in results]
    # every result is checked before anything is written; then all go in one transaction
    rows = []
    space_dict = catalog.space_dict()
    for i, r in enumerate(results):
        model = r.get("model") or {}
        space_of = space_dict or model.get("space")
        if space_of is None:
            raise OfaError(f"{path}: result {i} carries no search space and the catalog has none yet; "
                           "profile the export directory (its model.json has it)")
        space = SearchSpace.from_dict(space_of)
        # a model exported at another resolution (elastic resolution) has the catalog's space at its own size
        measured_space = SearchSpace.from_dict(model["space"]) if model.get("space") else space
        if dataclasses.replace(measured_space, image_size=space.image_size) != space:
            raise OfaError(f"{path}: result {i} was measured on a subnet of another search space than the catalog's")
        resolution = measured_space.image_size
        space_dict = space_dict or space.to_dict()
        spec = subnet if subnet is not None else model.get("subnet")
        if spec is None:
            raise OfaError(f"{path}: result {i} does not say which subnet it measured; profile the export "
                           "directory, or give --subnet")
        sub = Subnet.parse(spec, space) if isinstance(spec, str) else Subnet.from_dict(spec, space)
        tgt = target or r.get("target")
        if not tgt:
            raise OfaError(f"{path}: result {i} names no target; give --target")
        _check_model_hash(catalog, path, i, model, str(sub), tgt, str(r.get("precision") or "fp32"), resolution)
        rows.append((space, sub, tgt, model, r, resolution))
    added = duplicates = 0
    with catalog.transaction():
        for space, sub, tgt, model, r, resolution in rows:
            catalog.set_space(space.to_dict())
            m, p = cost(space, sub)
            catalog.add_subnet(str(sub), sub.to_dict(), m, p)
            _import_accuracy(catalog, str(sub), model, resolution)
            if catalog.add_latency(str(sub), r, target=tgt, source=f"imported:{Path(path).name}",
                                   resolution=resolution):
                added += 1
            else:
                duplicates += 1
    return {"results": len(results), "added": added, "duplicates": duplicates,
            "targets": sorted({row[2] for row in rows})}


def import_file(catalog_path: str | Path, path: str | Path, **options: Any) -> dict[str, Any]:
    """``import_results`` into the catalog file ``catalog_path``, created if missing - and
    removed again if the import fails, so a failed first import leaves nothing behind."""
    catalog_path = Path(catalog_path)
    load_results(path)  # a broken results file is refused before any catalog is opened
    existed = os.path.lexists(catalog_path)
    created = [p for p in catalog_path.absolute().parents if not p.exists()]  # deepest first
    try:
        with Catalog(catalog_path, create=True) as cat:
            return import_results(cat, path, **options)
    except BaseException:
        if not existed and _remove_if_empty(catalog_path):
            for parent in created:
                try:
                    parent.rmdir()
                except OSError:
                    break
        raise


def _remove_if_empty(catalog_path: Path) -> bool:
    """Remove a catalog this import created if nothing got into it; True if removed."""
    try:
        with Catalog(catalog_path, create=False) as cat:
            empty = cat.count("subnets") == 0 and cat.space_dict() is None
    except OfaError:
        return False
    if empty:
        for suffix in ("", "-wal", "-shm"):
            Path(str(catalog_path) + suffix).unlink(missing_ok=True)
    return empty


def _check_model_hash(catalog: Catalog, path: str | Path, i: int, model: dict[str, Any], key: str,
                      target: str, precision: str = "fp32", resolution: Optional[int] = None) -> None:
    """The file a result measured must be the one exported for its subnet: the SHA-256 the
    profiler took of it against the export sidecar's, and against the catalog's own ONNX
    artifact of that subnet on that target."""
    measured = model.get("sha256")
    if not isinstance(measured, str):
        return
    used = Path(str(model.get("path") or ""))
    listed = model.get("files")
    files = listed if isinstance(listed, dict) else {}
    entry = files.get(used.name) or (files.get("model.onnx") if model.get("format") == "onnx" else None)
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    where = "the export's model.json"
    if expected is None and model.get("format") == "onnx":
        art = catalog.artifact(key, target, "onnx", precision, resolution)
        expected, where = (art["sha256"], f"the catalog's ONNX of it for {target}") if art else (None, "")
    if expected is not None and expected != measured:
        raise OfaError(f"{path}: result {i} measured {used} (SHA-256 {measured[:12]}...), not the file exported "
                       f"for subnet {key} ({where} says {str(expected)[:12]}...); profile the export directory "
                       "itself")


def _import_accuracy(catalog: Catalog, key: str, model: dict[str, Any], resolution: Optional[int] = None) -> None:
    acc, source = model.get("accuracy"), model.get("source")
    if not isinstance(acc, dict) or "top1" not in acc or not isinstance(source, dict):
        return
    bn = model.get("bn") or {}
    catalog.add_accuracy(
        key, run=str(source.get("run_dir", "")), run_sha256=str(source.get("checkpoint_sha256", "")),
        dataset=str(source.get("dataset", "")), split=str(acc.get("split", "test")),
        recalibrated=bool(bn.get("recalibrated", True)), calib_images=int(bn.get("images", 0) or 0),
        images=int(acc.get("images", 0) or 0), top1=float(acc["top1"]), loss=acc.get("loss"),
        # the accuracy of the exported file's own precision (sidecars before precision existed: fp32)
        precision=str(acc.get("precision") or model.get("precision") or "fp32"), resolution=resolution)
