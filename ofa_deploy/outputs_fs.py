"""Filesystem primitives behind ``ofa_deploy.outputs``: a rename that never replaces,
temporary names that carry the writer's pid, and removing what a killed writer left."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

# Files written under names of an older ofa-deploy (no pid in them) count as leftovers
# only once this old: nothing could still be writing them.
LEGACY_LEFTOVER_AGE_S = 3600.0

_TEMP_NAME = re.compile(r"^\..+\.(?:\d+\.[A-Za-z0-9_]+\.(?:tmp|partial)|\d+\.old|[A-Za-z0-9_]{8}\.(?:tmp|partial))$")


def is_leftover_name(name: str) -> bool:
    """A temporary name of ours (an interrupted write inside the output)."""
    return bool(_TEMP_NAME.match(name))


# -- leftovers ---------------------------------------------------------------------------------

def temp_prefix(name: str) -> str:
    """Prefix of the temporary names this process uses for output ``name``."""
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process (or a pid we cannot judge): leave it
    return True


def remove_leftovers(final: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer of ``final`` left beside it: ``.NAME.PID.*.tmp`` files
    and ``.NAME.PID.*.partial`` / ``.NAME.PID.old`` directories whose process is gone, and
    the pid-less names of older versions once they are an hour old. Returns what went."""
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return []
    name = re.escape(final.name)
    ours = re.compile(rf"^\.{name}\.(\d+)\.(?:[A-Za-z0-9_]+\.(?:tmp|partial)|old)$")
    legacy = re.compile(rf"^\.{name}\.(?:[A-Za-z0-9_]{{8}}\.(?:partial|tmp)|old-\d+)$")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = ours.match(entry.name)
        if match:
            stale = not _pid_alive(int(match.group(1)))
        elif legacy.match(entry.name):
            try:
                stale = time.time() - entry.lstat().st_mtime > LEGACY_LEFTOVER_AGE_S
            except OSError:
                continue
        else:
            continue
        if not stale:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # another writer's cleanup got there first, or it is not ours to remove
    return removed


# -- creating and publishing ---------------------------------------------------------------------

def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(final: Path) -> Path:
    """An empty directory beside ``final`` under this process's temporary name, with the
    permissions a plain ``mkdir`` would give (mkdtemp's are 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def _renameat2_noreplace(src: Path, dst: Path) -> Optional[bool]:
    """True once renamed; None if the platform or filesystem has no no-replace rename;
    ``FileExistsError`` if ``dst`` exists."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux"):
        fn = getattr(libc, "renameat2", None)
        if fn is None:
            return None
        at_fdcwd, flags = -100, 1  # RENAME_NOREPLACE
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags)
    elif sys.platform == "darwin":
        fn = getattr(libc, "renamex_np", None)
        if fn is None:
            return None
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(os.fsencode(src), os.fsencode(dst), 0x4)  # RENAME_EXCL
    else:
        return None
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(dst))
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return None
    raise OSError(err, os.strerror(err), str(dst))


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; ``FileExistsError`` if anything is at ``dst`` - atomically
    where the system allows it, else checked immediately before (a plain rename also
    fails onto a non-empty directory)."""
    if _renameat2_noreplace(src, dst):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
