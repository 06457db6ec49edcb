"""Output directories that appear only complete: built beside their final path, renamed at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OfaError


@contextmanager
def staged_directory(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; when the block ends normally it
    is renamed to ``final`` (replacing an existing one only with ``overwrite``), and on any
    error it is removed (with the parent directories it had to create), so ``final`` is
    either absent, the old directory, or complete."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise OfaError(f"{final} already exists; choose another --out or pass --overwrite")
    if final.exists() and not final.is_dir():
        raise OfaError(f"{final} exists and is not a directory")
    created = [p for p in reversed(final.absolute().parents) if not p.exists()]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise OfaError(f"cannot create {final}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # the parents this call made, deepest first
            try:
                parent.rmdir()
            except OSError:
                break
        raise
