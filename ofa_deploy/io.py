"""Atomic file writing, hashing and size-capped reading of JSON and TOML: a crash or a full disk
never leaves a half-written file, and a hostile input file is refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from .errors import OfaError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib

MAX_TOML_BYTES = 1 << 20
"""Run configurations and target profiles are a few KiB; a larger file is not one."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``. On any failure the temporary file is removed and ``path`` is untouched."""
    from .outputs_fs import remove_leftovers, temp_prefix, umask

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)  # what a killed writer of this file left
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OfaError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OfaError(f"could not write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """The parsed JSON in ``path``; ``OfaError`` naming ``what`` (e.g. "results file") if it
    cannot be read, is not JSON, is larger than ``validate.MAX_JSON_BYTES`` or nested deeper
    than ``validate.MAX_JSON_DEPTH``."""
    from .validate import MAX_JSON_BYTES, loads_json, path_text

    label = f"{what} {path}".strip()
    path_text(os.fspath(path), label)
    try:
        size = Path(path).stat().st_size
        if Path(path).is_dir():
            raise OfaError(f"{label} is a directory, not a JSON file")
        if size > MAX_JSON_BYTES:
            raise OfaError(f"{label} is {size:,} bytes; the limit for a JSON file is {MAX_JSON_BYTES:,}")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OfaError(f"{label} does not exist") from None
    except UnicodeDecodeError as exc:
        raise OfaError(f"{label} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise OfaError(f"cannot read {label}: {exc.strerror or exc}") from None
    return loads_json(text, label)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_toml(path: Path, label: str, kind: str) -> dict[str, Any]:
    """The TOML document in ``path`` (a file: the caller has checked), or ``OfaError`` in one
    line naming ``label`` when it is larger than ``MAX_TOML_BYTES``, unreadable, not TOML or
    nested too deeply to be a ``kind``."""
    try:
        if path.stat().st_size > MAX_TOML_BYTES:
            raise OfaError(f"{label} is larger than 1 MiB; it is not a {kind}")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OfaError(f"{label} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise OfaError(f"cannot read {label}: {exc.strerror or exc}") from None
    except RecursionError:
        raise OfaError(f"{label} is nested too deeply to be a {kind}") from None
