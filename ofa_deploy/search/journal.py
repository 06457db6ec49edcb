"""The journal that makes ``ofa-deploy search`` resumable (host side, no torch here).

A search writes ``DIR`` whole at the end (staged, renamed into place), so before this an
interrupted search (``SIGTERM``, a crash, a killed rank) lost every evaluation it had made.
Each real evaluation is now appended, as soon as it is known, to
``.DIR.search-journal/evaluations.jsonl`` beside ``--out``; the same command run again
reads it and evaluates only what is missing. The search itself is a pure function of the
seed and of the accuracies it is given (``engine.search``), so replaying it with the
journal's accuracies proposes the same subnets in the same rounds and ends with the same
history, picks and front as an uninterrupted search (``tests/test_search_scale.py``).

The journal is recognisably ours: a ``journal.json`` tagged ``ofa-deploy/search-journal``
naming what an accuracy depends on (the checkpoint's SHA-256, the choosing split's name and
a hash of its images and labels, the calibration images' hash and count). A journal whose
identity differs (another run, split or calibration) would feed wrong accuracies, so it is
discarded and the search starts afresh; anything else at that path is refused. The
journal is removed once ``DIR`` is in place. An exclusive ``flock`` on ``journal.json``
keeps two searches from writing one journal.

Lines are written whole and fsynced one by one; a torn last line (a ``SIGKILL`` in the
middle of a write) is ignored when reading.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Optional

from ..errors import OfaError

JOURNAL_FORMAT = "ofa-deploy/search-journal"
_HEADER = "journal.json"
_LINES = "evaluations.jsonl"


def journal_path(out: str | os.PathLike) -> Path:
    """``.NAME.search-journal`` beside ``out`` (no pid in the name: ``outputs_fs`` must not
    take it for a dead writer's leftover and remove it)."""
    out = Path(out)
    return out.with_name(f".{out.name}.search-journal")


class Journal:
    """Open (or create) the journal of the search writing ``out`` with ``identity``; use as
    a context manager, which holds the lock. ``done`` maps subnet text -> accuracy."""

    def __init__(self, out: str | os.PathLike, identity: dict[str, Any]) -> None:
        self.path = journal_path(out)
        self.identity = {"format": JOURNAL_FORMAT, **identity}
        self.done: dict[str, float] = {}
        self.discarded = False
        self._lock: Optional[IO[str]] = None
        self._lines: Optional[IO[str]] = None

    # -- opening ---------------------------------------------------------------------------
    def __enter__(self) -> "Journal":
        self._check_ours()
        try:
            self.path.mkdir(exist_ok=True)
            self._lock = open(self.path / _HEADER, "a+")
        except OSError as exc:
            raise OfaError(f"cannot create the search journal {self.path}: {exc.strerror or exc}") from None
        self._take_lock()
        try:
            found = self._read_header()
            if found != self.identity:
                # another run, split or calibration: its accuracies are not this search's
                self.discarded = found is not None
                self._reset()
            else:
                self.done, whole = _read_lines(self.path / _LINES)
                if (self.path / _LINES).exists():
                    os.truncate(self.path / _LINES, whole)  # drop a torn last line before appending
            self._lines = open(self.path / _LINES, "a")
        except BaseException:
            self.close()  # and with it the lock
            raise
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and not self.done:
            self.remove()  # stopped before its first evaluation: nothing to resume, leave nothing behind
        else:
            self.close()

    def close(self) -> None:
        for f in (self._lines, self._lock):
            if f is not None:
                f.close()
        self._lines = self._lock = None

    def _check_ours(self) -> None:
        if not os.path.lexists(self.path):
            return
        if self.path.is_symlink() or not self.path.is_dir():
            raise OfaError(f"{self.path} (where this search keeps its journal) is not a search journal; move it away")
        names = {p.name for p in self.path.iterdir()}
        header = _read_json(self.path / _HEADER)
        empty_header = (self.path / _HEADER).is_file() and (self.path / _HEADER).stat().st_size == 0
        ours = (header is not None and header.get("format") == JOURNAL_FORMAT) or empty_header or not names
        if not ours or not names <= {_HEADER, _LINES}:
            raise OfaError(f"{self.path} (where this search keeps its journal) holds files that are not a search "
                           "journal's; move it away")

    def _take_lock(self) -> None:
        import fcntl

        assert self._lock is not None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise OfaError(f"another search is writing the same --out (its journal {self.path} is locked); wait for "
                           "it or choose another --out") from None

    def _read_header(self) -> Optional[dict[str, Any]]:
        return _read_json(self.path / _HEADER)

    def _reset(self) -> None:
        (self.path / _LINES).unlink(missing_ok=True)
        # the header is rewritten in place: the lock lives on this very file
        assert self._lock is not None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(json.dumps(self.identity, sort_keys=True) + "\n")
        self._lock.flush()
        os.fsync(self._lock.fileno())
        self.done = {}

    # -- writing ---------------------------------------------------------------------------
    def record(self, subnet: str, accuracy: float) -> None:
        """Append one evaluation, durably (fsync: what is recorded survives a power cut)."""
        assert self._lines is not None
        self.done[subnet] = float(accuracy)
        # one write call per line: a signal handler runs between bytecodes, never inside it
        self._lines.write(json.dumps({"subnet": subnet, "accuracy": float(accuracy)}) + "\n")
        self._lines.flush()
        os.fsync(self._lines.fileno())

    def remove(self) -> None:
        """The search's output is in place: the journal has served."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_lines(path: Path) -> tuple[dict[str, float], int]:
    """(subnet -> accuracy, length in bytes of the whole lines)."""
    done: dict[str, float] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return done, 0
    whole = data.rfind(b"\n") + 1  # after it: a torn last line, the write a kill interrupted
    for i, line in enumerate(data[:whole].split(b"\n")[:-1]):
        try:
            row = json.loads(line)
            done[str(row["subnet"])] = float(row["accuracy"])
        except (ValueError, KeyError, TypeError):
            raise OfaError(f"search journal {path} is damaged at line {i + 1}; remove "
                           f"{path.parent} to start the search afresh") from None
    return done, whole
