"""Subnet specs as users write them: names, text forms, JSON objects and JSON files.

What every command and library entry point that takes a ``--subnet`` or ``SPEC`` uses, so a
spec means the same thing to ``train``, ``eval``, ``export``, ``subnet`` and ``catalog``.
No torch, no click: the device side parses specs too.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import OfaError
from .io import read_json
from .space import SearchSpace, Subnet
from .validate import kind_of, path_text


def load_subnet(spec: str, space: SearchSpace) -> Subnet:
    """A SPEC argument: ``smallest``, ``middle`` or ``largest``, the text form, a JSON object,
    or the path of a JSON file holding one (an object ``{"ks","e","d"}`` or
    ``{"subnet": {...}}``, such as an export sidecar). The three names win over a file of that
    name, as they do in every command that takes ``--subnet``.

    Text forms and JSON objects are recognised by their characters before anything touches
    the filesystem, so a long or odd spec is never tried as a path."""
    spec = spec.strip()
    named = {"smallest": space.smallest, "middle": space.middle, "largest": space.largest}
    if spec in named:
        return named[spec]()
    if spec.startswith("{") or _TEXT_CHARS.fullmatch(spec):
        return Subnet.parse(spec, space)
    try:
        path_text(spec, "subnet spec")
    except OfaError:
        return Subnet.parse(spec, space)  # not a usable path either: say what a spec looks like
    path = Path(spec)
    kind = kind_of(path)
    if kind == "dir":
        raise OfaError(f"subnet file {path} is a directory, not a JSON file")
    if kind == "file":
        data = read_json(path, "subnet file")
        if isinstance(data, dict) and "subnet" in data:
            data = data["subnet"]
        return Subnet.from_dict(data, space)
    if spec.endswith(".json"):
        raise OfaError(f"subnet file {path} does not exist")
    return Subnet.parse(spec, space)


_TEXT_CHARS = re.compile(r"[0-9_-]*")


def resolve_subnet(space: SearchSpace, spec: str | Subnet | None) -> Subnet:
    """``smallest``, ``middle``, ``largest``, a text/JSON spec or a Subnet."""
    if isinstance(spec, Subnet):
        space.check(spec)
        return spec
    if spec is None:
        raise OfaError("--method fixed needs --subnet smallest|middle|largest|SPEC")
    return load_subnet(spec, space)
