"""The ``model.json`` sidecar of an export directory: file names, hashing, reading, checking.

No torch: the device side reads sidecars to find the calibration data and to check that the
files it was handed are the ones that were exported.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import OfaError
from ..io import read_json, sha256_file
from ..outputs import (  # noqa: F401 - the export package names them from here
    CALIBRATION_FILE,
    INDEX_FILE,
    ONNX_FILE,
    SIDECAR_FILE,
    SIDECAR_FORMAT,
)
from ..schemas import check_sidecar

SIDECAR_VERSION = 1


def file_entry(path: Path) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": size}`` of one file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def library_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where absent), read from package metadata so
    that nothing gets imported; plus ofa-deploy's and Python's."""
    versions: dict[str, str | None] = {"ofa_deploy": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_sidecar(directory: str | Path) -> dict[str, Any]:
    """The parsed ``model.json`` of an export directory; ``OfaError`` if it is missing or not one."""
    directory = Path(directory)
    path = directory / SIDECAR_FILE
    if not directory.is_dir():
        raise OfaError(f"export directory {directory} does not exist")
    if not path.is_file():
        raise OfaError(f"{directory} is not an export directory: no {SIDECAR_FILE} in it")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise OfaError(f"{path} is not an ofa-deploy model sidecar (format {SIDECAR_FORMAT!r})")
    return check_sidecar(data, str(path))


def verify_files(directory: str | Path, sidecar: dict[str, Any] | None = None) -> list[str]:
    """Check every file the sidecar lists against its recorded SHA-256 and size;
    ``OfaError`` naming the first file that is missing or differs. Returns the names
    checked (none for a sidecar without a ``files`` table: an older or hand-made one)."""
    directory = Path(directory)
    sidecar = read_sidecar(directory) if sidecar is None else sidecar
    files = sidecar.get("files") or {}
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise OfaError(f"{path} is listed in {SIDECAR_FILE} but missing; re-export the model")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise OfaError(f"{path} does not match the SHA-256 in {SIDECAR_FILE}; the file was changed or "
                           "damaged, re-export the model")
    return list(files)
