"""Atomic file writing, hashing and size-capped reading of JSON and TOML: a crash or a full disk
never leaves a half-written file, and a hostile input file is refused in one line."""

from __future__ import annotations

import hashlib
import json
import math
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


class _Recorder:
    """The temporary file as ``write`` sees it: every call goes to the file, and an
    ``OSError`` of a write is remembered - libraries turn it into their own errors
    (``torch.save``: "unexpected pos"; numpy: "requested and written"), which would hide
    that the disk was full. With ``digest`` it also hashes what was written, in order."""

    def __init__(self, f: IO[bytes], path: Path, digest: bool) -> None:
        self._f = f
        self.path = path  # the file this becomes (tests/test_write_faults.py aims faults by it)
        self.error: OSError | None = None
        self.hash = hashlib.sha256() if digest else None
        self.sequential = True

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        if self.hash is not None:
            self.hash.update(memoryview(data)[:n] if n is not None else data)
        return n

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def seek(self, *args: Any) -> int:
        self.sequential = False  # the bytes written in order are then not the file's
        return self._f.seek(*args)

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to fsync a directory; the rename itself is done
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, verify: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``. On any failure the temporary file is removed and ``path`` is untouched (the
    previous version stays until the new one is complete); a full disk, an I/O error or a
    read-only file system is ``OfaError("could not write PATH: CAUSE")``, whatever library
    wrote the bytes. ``verify`` (checkpoints): before the rename, the file is read back and
    its SHA-256 compared with that of the bytes written."""
    from .outputs_fs import remove_leftovers, temp_prefix, umask

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)  # what a killed writer of this file left
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OfaError(f"could not write {path}: {exc.strerror or exc}") from None
    recorder = None
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            recorder = _Recorder(f, path, verify)
            write(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        if verify and recorder.hash is not None and recorder.sequential and \
                sha256_file(tmp) != recorder.hash.hexdigest():
            raise OfaError(f"could not write {path}: the file read back differs from what was written; the "
                           f"previous {path.name} is kept")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        stopped = _signal_in(exc)
        if stopped is not None and stopped is not exc:
            # Ctrl-C or SIGTERM cut the write: the writer's complaint about being cut short
            # (torch.save's zip writer: "unexpected pos") is not what happened
            raise stopped from None
        if isinstance(exc, OSError):
            raise OfaError(f"could not write {path}: {exc.strerror or exc}") from None
        if recorder is not None and recorder.error is not None and isinstance(exc, Exception) \
                and not isinstance(exc, OfaError):
            raise OfaError(f"could not write {path}: {recorder.error.strerror or recorder.error}") from None
        raise
    return path


def _signal_in(exc: BaseException) -> BaseException | None:
    """The ``KeyboardInterrupt`` or ``Terminated`` that ``exc`` is, or was raised while
    handling (its ``__context__`` chain), if any."""
    from .errors import Terminated

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(value: Any) -> Any:
    """``value`` with every NaN and infinity (at any depth) as ``None``; numpy scalars
    (``np.float32``, ``np.int64``, ...) become the Python numbers they hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return finite_json(value.item())  # numpy is not imported here: the device side may lack it
    return value


def json_text(obj: Any, **dumps_kwargs: Any) -> str:
    """``json.dumps(obj, **dumps_kwargs)`` that always produces valid JSON: a non-finite
    float is written as ``null``. Python's default (``allow_nan=True``) writes ``NaN`` and
    ``Infinity``, which are not JSON - strict parsers (``jq``, JavaScript's ``JSON.parse``,
    this project's own ``validate.loads_json``) refuse the whole file. ``null`` is the one
    JSON value that says "no number here", which is what a NaN loss or an infinite
    latency means to a reader; a string such as ``"NaN"`` would put a string where readers
    expect a number. Every JSON writer in ofa_deploy goes through this (for finite input
    the text is exactly ``json.dumps``'s, so existing content hashes are unchanged)."""
    return json.dumps(finite_json(obj), allow_nan=False, **dumps_kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj, indent=2, sort_keys=False) + "\n")


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
