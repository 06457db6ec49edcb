"""Merging latency measured elsewhere: ``profile --json`` results from a device, matched to
catalog subnets by the identity the export sidecar put in them. Reading and checking the
results file is ``profile.results.load_results``.

The round trip: export for the device at home, copy the export directory over, build the
engine and ``profile --json --out r.json`` there, bring ``r.json`` back and ``catalog import
r.json --model-json EXPORT/model.json``. Each result names the SHA-256 of the ONNX file it
measured (the file itself, or the one its engine was built from); the import checks it
against the export's ``model.json`` and the file at home, and records that file as the
entry's ONNX, so ``catalog select`` answers with it and its preprocessing. Without
``--model-json`` an ONNX file the catalog already knows with that SHA-256 (``catalog build
--no-measure`` exported it) is used. A result measured another way than its target runs (a
CPU fallback for a TensorRT target) is refused unless ``allow_backend_mismatch``, and then
stored flagged."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from ..cost import cost
from ..errors import OfaError
from ..io import sha256_file
from ..profile.results import load_results
from ..space import SearchSpace, Subnet
from .db import Catalog


def import_results(catalog: Catalog, path: str | Path, *, target: Optional[str] = None,
                   subnet: Optional[str] = None, model_json: Optional[str | Path] = None,
                   allow_backend_mismatch: bool = False) -> dict[str, Any]:
    """Add every result in ``path`` to ``catalog``; returns counts.

    Each result names its subnet through ``model.subnet`` (present when an export
    directory was profiled). For results that do not (a bare engine or ONNX file was
    profiled), ``model_json`` - the export's ``model.json`` - supplies the identity
    (subnet, space, accuracy, source), or ``subnet`` (text/JSON) names the subnet. The
    target is the result's unless ``target`` is given; the search space is the
    catalog's, else the result's ``model.space``. Accuracy recorded in the export sidecar
    comes along. Importing the same results twice adds nothing.

    Each result's measured ONNX file (SHA-256) becomes the entry's ONNX on that target:
    the one beside ``model_json`` (checked against it), else one the catalog holds with
    that hash; ``"linked"`` / ``"unlinked"`` count the results that got one or not. A
    result whose backend or device is not its target's (``profile.profiler.backend_mismatch``)
    is refused unless ``allow_backend_mismatch``; then it is stored flagged
    (``"mismatched"`` counts those).
    """
    results = load_results(path)
    home: Optional[tuple[Path, dict[str, Any]]] = None
    if model_json is not None:
        from ..profile.model import read_sidecar

        sidecar = read_sidecar(Path(model_json)) if Path(model_json).is_file() else None
        if sidecar is None:
            raise OfaError(f"{model_json} does not exist")
        home = (Path(model_json).parent, sidecar)
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
        precision = str(r.get("precision") or "fp32")
        _check_model_hash(catalog, path, i, model, str(sub), tgt, precision, resolution)
        mismatch = _mismatch(r, tgt)
        if mismatch and not allow_backend_mismatch:
            raise OfaError(f"{path}: result {i} is not a {tgt} measurement: {mismatch}; measure on the device with "
                           "its backend (build the engine there first), or pass --allow-backend-mismatch to store "
                           "it flagged")
        onnx = _measured_onnx(catalog, path, i, model, str(sub), home)
        rows.append((space, sub, tgt, model, r, resolution, precision, mismatch, onnx))
    added = duplicates = linked = 0
    with catalog.transaction():
        for space, sub, tgt, model, r, resolution, precision, mismatch, onnx in rows:
            catalog.set_space(space.to_dict())
            m, p = cost(space, sub)
            catalog.add_subnet(str(sub), sub.to_dict(), m, p)
            _import_accuracy(catalog, str(sub), model, resolution)
            if onnx is not None:
                beside = _sidecar_beside(onnx[0])
                catalog.add_artifact(str(sub), tgt, "onnx", onnx[0], onnx[1], precision, resolution, beside)
                if beside is not None:
                    catalog.add_artifact(str(sub), tgt, "sidecar", onnx[0].parent / "model.json",
                                         sha256_file(onnx[0].parent / "model.json"), precision, resolution, beside)
                linked += 1
            if catalog.add_latency(str(sub), r, target=tgt, source=f"imported:{Path(path).name}",
                                   resolution=resolution, backend_mismatch=mismatch):
                added += 1
            else:
                duplicates += 1
    return {"results": len(results), "added": added, "duplicates": duplicates,
            "targets": sorted({row[2] for row in rows}), "linked": linked, "unlinked": len(rows) - linked,
            "mismatched": sum(1 for row in rows if row[7])}


def _mismatch(result: dict[str, Any], target: str) -> Optional[str]:
    """Why ``result`` is not a measurement of ``target``: what the profiler recorded, else
    (older results, or a result relabelled to another target) its backend and provider
    against the target's profile where this machine knows the target."""
    from ..profile.profiler import backend_mismatch
    from ..targets import load_target

    try:
        tgt = load_target(target)
    except OfaError:
        tgt = None
    if tgt is not None:
        found = backend_mismatch(tgt, result.get("backend"), result.get("provider"), result.get("fallback"))
        if found:
            return found
    recorded = result.get("backend_mismatch")
    if isinstance(recorded, str) and recorded and (tgt is None or result.get("target") in (None, tgt.name)):
        return recorded
    return None


def _measured_onnx(catalog: Catalog, path: str | Path, i: int, model: dict[str, Any], key: str,
                   home: Optional[tuple[Path, dict[str, Any]]]) -> Optional[tuple[Path, str]]:
    """(the ONNX file here that result ``i`` measured, its SHA-256), or None where there is none.

    The result names the measured ONNX's SHA-256 (``model.onnx_sha256``; for results from
    before that field, the measured file itself when it was an ONNX, or the ONNX the device's
    ``model.json`` listed beside an engine). With ``home`` (the export directory given by
    ``--model-json``) its ``model.onnx`` must be that file: listed with that hash and intact."""
    files: dict[str, Any] = model["files"] if isinstance(model.get("files"), dict) else {}
    listed: dict[str, Any] = files["model.onnx"] if isinstance(files.get("model.onnx"), dict) else {}
    measured = model.get("onnx_sha256") or (model.get("sha256") if model.get("format") == "onnx" else None) \
        or (listed.get("sha256") if model.get("format") == "engine" else None)
    if home is not None:
        directory, sidecar = home
        entry = (sidecar.get("files") or {}).get("model.onnx")
        if not isinstance(entry, dict):
            return None  # a bare identity (subnet, space): nothing here to hand out
        if measured is not None and entry.get("sha256") != measured:
            raise OfaError(f"{path}: result {i} measured an ONNX file with SHA-256 {str(measured)[:12]}..., but "
                           f"{directory / 'model.json'} lists model.onnx as {str(entry.get('sha256'))[:12]}...: "
                           "that is another export; give the model.json of the export directory that was measured")
        from ..export.sidecar import verify_files

        verify_files(directory, sidecar)  # the file here is the one listed (and so the one measured)
        return (directory / "model.onnx").resolve(), str(entry["sha256"])
    if not isinstance(measured, str):
        return None
    row = catalog.conn.execute("SELECT path FROM artifacts WHERE subnet = ? AND kind = 'onnx' AND sha256 = ? "
                               "ORDER BY created DESC", (key, measured)).fetchone()
    if row is None or not Path(row[0]).is_file() or sha256_file(row[0]) != measured:
        return None
    return Path(row[0]), measured


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
        precision=str(acc.get("precision") or model.get("precision") or "fp32"), resolution=resolution,
        chosen_on=str(acc["chosen_on"]) if acc.get("chosen_on") else None)


def _sidecar_beside(onnx: Path) -> Optional[dict[str, Any]]:
    """The ``model.json`` beside an imported ONNX file (None where there is none or it does
    not read: the entry then has no recorded drop)."""
    path = Path(onnx).parent / "model.json"
    if not path.is_file():
        return None
    from ..profile.model import read_sidecar

    try:
        return read_sidecar(path)
    except OfaError:
        return None
