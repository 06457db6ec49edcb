"""What ``profile`` is given: an ONNX file, a TensorRT engine, or an export directory
(``model.json`` sidecar beside ``model.onnx`` and/or an engine; its files are checked
against the sidecar's SHA-256 before anything is measured)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import OfaError
from ..io import read_json, sha256_file

SIDECAR = "model.json"
ONNX_NAMES = ("model.onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model: at least one of ``onnx``/``engine``, and the sidecar's
    content where there is one (subnet, MACs, target, hashes, ...)."""

    path: Path
    onnx: Optional[Path]
    engine: Optional[Path]
    sidecar: Optional[dict[str, Any]]

    def file_for(self, backend: str) -> Path:
        """The file ``backend`` runs, or ``OfaError`` saying what is missing."""
        if backend == "tensorrt":
            if self.engine is None:
                raise OfaError(f"{self.path} has no TensorRT engine; build one with `ofa-deploy build-engine` "
                               "on the device, or pass --backend onnxruntime")
            return self.engine
        if backend in ("onnxruntime",):
            if self.onnx is None:
                raise OfaError(f"{self.path} has no ONNX model for the {backend} backend")
            return self.onnx
        if backend == "torch":
            if not self.sidecar:
                raise OfaError(f"the torch backend needs an export directory with {SIDECAR}, not {self.path}")
            return self.path
        raise OfaError(f"unknown backend {backend!r}")


def resolve_model(path: str | Path) -> ModelFiles:
    """Classify ``path`` by what it is; raises ``OfaError`` for anything else."""
    from ..validate import path_text

    path = Path(path_text(str(path), "model path"))
    if not path.exists():
        raise OfaError(f"{path} does not exist")
    if path.is_dir():
        from ..export.sidecar import read_sidecar as read_export_sidecar
        from ..export.sidecar import verify_files

        sidecar = read_export_sidecar(path)
        checked = verify_files(path, sidecar)  # what is measured is what was exported
        onnx = next((path / n for n in ONNX_NAMES if (path / n).is_file()), None)
        engines = sorted(p for p in path.iterdir() if p.suffix in ENGINE_SUFFIXES and p.is_file())
        if onnx is None and not engines:
            raise OfaError(f"export directory {path} has neither model.onnx nor an engine file")
        unchecked = [p.name for p in (onnx, *engines[:1]) if p is not None and p.name not in checked]
        if unchecked:
            print(f"warning: {path / SIDECAR} records no SHA-256 of {' or '.join(unchecked)} (no 'files' entry for "
                  f"it): the file measured was not checked against the export", file=sys.stderr)
        return ModelFiles(path, onnx, engines[0] if engines else None, sidecar)
    if path.suffix == ".onnx":
        return ModelFiles(path, path, None, _sibling_sidecar(path))
    if path.suffix in ENGINE_SUFFIXES:
        return ModelFiles(path, None, path, _sibling_sidecar(path))
    raise OfaError(f"{path} is neither an ONNX model (.onnx), an engine ({', '.join(ENGINE_SUFFIXES)}) "
                   f"nor an export directory")


def read_sidecar(path: Path) -> dict[str, Any]:
    from ..export.sidecar import SIDECAR_FORMAT
    from ..schemas import check_sidecar

    data = read_json(path, "model sidecar")
    if not isinstance(data, dict):
        raise OfaError(f"{path} must hold a JSON object")
    return check_sidecar(data, str(path)) if data.get("format") == SIDECAR_FORMAT else data


def _sibling_sidecar(path: Path) -> Optional[dict[str, Any]]:
    sidecar = path.parent / SIDECAR
    return read_sidecar(sidecar) if sidecar.is_file() else None


def _engine_source(used: Path) -> Optional[str]:
    """The SHA-256 of the ONNX file the engine ``used`` was built from (its ``engine.json``)."""
    sidecar = used.parent / "engine.json"
    if used.suffix not in ENGINE_SUFFIXES or not sidecar.is_file():
        return None
    try:
        data = read_json(sidecar, "engine sidecar")
    except OfaError:
        return None
    value = data.get("onnx_sha256") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def model_identity(files: ModelFiles, used: Path) -> dict[str, Any]:
    """What was measured, so results measured elsewhere can be matched to a catalog entry:
    the file and its SHA-256, the SHA-256 of the ONNX file it is (or, for an engine, was
    built from: ``engine.json``'s record), plus the sidecar's subnet and costs where there
    is one."""
    identity: dict[str, Any] = {
        "path": str(used),
        "format": "engine" if used.suffix in ENGINE_SUFFIXES else "onnx" if used.suffix == ".onnx" else "eager",
        "sha256": sha256_file(used) if used.is_file() else None,
    }
    identity["onnx_sha256"] = identity["sha256"] if identity["format"] == "onnx" else _engine_source(used)
    if files.sidecar:
        for key in ("subnet", "subnet_text", "macs", "mflops", "params", "space", "precision", "accuracy", "bn",
                    "source", "files"):
            if key in files.sidecar:
                identity[key] = files.sidecar[key]
        if isinstance(files.sidecar.get("target"), dict):
            identity["export_target"] = files.sidecar["target"].get("name")
    return identity
