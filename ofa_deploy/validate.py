"""Typed limits for what a user types or a file says, checked once at the edge.

Every number that reaches the library passes through here (the CLI's click types in
``cli/common.py`` call these functions; TOML and JSON readers call them on each key), so a
NaN, an infinity, a seed beyond 64 bits, a count that would run for days or a JSON file
nested ten thousand deep becomes one ``OfaError`` naming the culprit instead of a
traceback, a hang or a silently wrong result. No torch; runs on Python 3.8.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

from .errors import OfaError

MAX_SEED = 2**64 - 1
"""Seeds are 64-bit unsigned: numpy's and torch's generators take nothing larger."""

MAX_JSON_BYTES = 256 * 2**20
MAX_JSON_DEPTH = 64
"""Our own files nest at most ~6 deep; 64 leaves room and stays far below Python's recursion limit."""

MAX_INLINE_SPEC_CHARS = 64 * 1024
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 255

# Upper bounds: generous for any real use, small enough that nothing runs for days.
LIMITS = {
    "lr": (0.0, 10.0),
    "scale": (0.0, 100.0),
    "warmup_s": (0.0, 600.0),
    "min_time_s": (0.0, 3600.0),
    "cov_threshold": (0.0, 100.0),  # above 1 read as percent
    "min_iterations": (2, 10_000_000),
    "max_retries": (0, 100),
    "threads": (0, 1024),
    "per_batch": (0, 64),
    "mflops": (0.0, 100_000.0),
    "tolerance": (0.0, 100_000.0),
    "latency_ms": (0.0, 1e7),
    "kd_ratio": (0.0, 100.0),
    "accuracy": (0.0, 1.0),
    "width_mult": (0.1, 4.0),
    "max_drop": (0.0, 100.0),  # accuracy points an int8 model may lose against fp32
}


def finite(value: Any, what: str, *, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float within [lo, hi] (open ends where asked); ``OfaError``
    naming ``what`` otherwise. Booleans are not numbers here."""
    if isinstance(value, bool):
        raise OfaError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OfaError(f"{what} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise OfaError(f"{what} must be a number, got {_short(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise OfaError(f"{what} must be a finite number, got {_short(value)}") from None
    if not math.isfinite(x):
        raise OfaError(f"{what} must be a finite number, got {x}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise OfaError(f"{what} must be {'>' if lo_open else '>='} {lo:g}, got {x:g}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise OfaError(f"{what} must be {'<' if hi_open else '<='} {hi:g}, got {x:g}")
    return x


def integer(value: Any, what: str, *, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """``value`` as an int within [lo, hi]. Floats with an integral value are accepted
    (TOML and JSON writers produce ``2.0``); ``1e11`` counts as the integer it is, and is
    then refused by ``hi``."""
    if isinstance(value, bool):
        raise OfaError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII) or len(text) > 40:
            raise OfaError(f"{what} must be an integer, got {_short(value)}")
        value = int(text)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():  # novermin: float.is_integer (int has it from 3.12)
            raise OfaError(f"{what} must be an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise OfaError(f"{what} must be an integer, got {_short(value)}")
    if lo is not None and value < lo:
        raise OfaError(f"{what} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise OfaError(f"{what} must be <= {hi:,}, got {_short(value)}")
    return value


def seed(value: Any, what: str = "seed") -> int:
    """A seed: an integer in [0, 2**64 - 1]."""
    return integer(value, what, lo=0, hi=MAX_SEED)


def limited(name: str, value: Any, what: str, **kw: Any) -> Any:
    """``value`` checked against ``LIMITS[name]`` (int limits give an int)."""
    lo, hi = LIMITS[name]
    if isinstance(lo, int) and isinstance(hi, int):
        return integer(value, what, lo=lo, hi=hi)
    return finite(value, what, lo=lo, hi=hi, **kw)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


# -- JSON ---------------------------------------------------------------------------------
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR_RE = re.compile(r"\[\]|\{\}")


def json_depth(text: str, limit: int = 1 << 30) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text`` (strings skipped), without parsing -
    so a hostile file is refused before the recursive parser sees it. Counts at most
    ``limit + 1``. Each pass deletes the innermost empty pairs at C speed; unbalanced text
    stops early (the parser then reports it)."""
    brackets = _NOT_BRACKET_RE.sub("", _STRING_RE.sub('""', text))
    depth = 0
    while brackets and depth <= limit:
        shorter = _EMPTY_PAIR_RE.sub("", brackets)
        if len(shorter) == len(brackets):
            break
        brackets = shorter
        depth += 1
    return depth


def loads_json(text: str, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with size and depth limits; ``OfaError`` naming ``what``. NaN and
    Infinity parse (Python writes them, e.g. an undefined Spearman rho); the schemas refuse
    them wherever a number must be finite."""
    if len(text) > MAX_JSON_BYTES:
        raise OfaError(f"{what} is {len(text):,} characters long; the limit is {MAX_JSON_BYTES:,}")
    if text.count("[") + text.count("{") > max_depth and json_depth(text, max_depth) > max_depth:
        raise OfaError(f"{what} is nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OfaError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise OfaError(f"{what} is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise OfaError(f"{what} is not valid JSON: {exc}") from None


# -- paths --------------------------------------------------------------------------------
def path_text(text: str, what: str) -> str:
    """Refuse a path no filesystem takes (NUL, too long, a component over 255 bytes)
    before any filesystem call, so the OS never reports it as a traceback."""
    if "\x00" in text:
        raise OfaError(f"{what} contains a NUL character")
    if len(text) > MAX_PATH_CHARS:
        raise OfaError(f"{what} is {len(text):,} characters long; a path may have at most {MAX_PATH_CHARS}")
    for part in text.replace(os.sep, "/").split("/"):
        if len(os.fsencode(part)) > MAX_NAME_CHARS:
            raise OfaError(f"{what} has a name of {len(part)} characters ({part[:20]}...); "
                           f"a file name may have at most {MAX_NAME_CHARS} bytes")
    return text


def check_writable(path: Path, what: str) -> None:
    """Refuse before any work when ``path`` (a file or folder to be created, parents too)
    could not be written: the nearest existing ancestor must be a writable folder. Saves
    a long measurement that would fail at its last step."""
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OfaError(f"{what} {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OfaError(f"{what} {path}: cannot write in {ancestor} (permission denied)")


def kind_of(path: Path) -> str:
    """``"file"``, ``"dir"``, ``"missing"`` or ``"other"`` for ``path``, never raising
    (a permission error or a too-long name counts as ``"missing"``/``"other"``)."""
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        return "other" if path.exists() else "missing"
    except (OSError, ValueError):
        return "missing"
