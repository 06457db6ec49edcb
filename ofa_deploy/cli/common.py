"""Helpers shared by the CLI commands: JSON output, subnet specs, the space option."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import OfaError
from ..io import read_json
from ..space import SearchSpace, Subnet


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (the ``--json`` contract of every command)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def load_subnet(spec: str, space: SearchSpace) -> Subnet:
    """A SPEC argument: the text form, a JSON object, or the path of a JSON file holding one
    (an object ``{"ks","e","d"}`` or ``{"subnet": {...}}``, such as an export sidecar)."""
    spec = spec.strip()
    if spec.endswith(".json") or (not spec.startswith("{") and Path(spec).is_file()):
        path = Path(spec)
        if not path.is_file():
            raise OfaError(f"subnet file {path} does not exist")
        data = read_json(path, "subnet file")
        if isinstance(data, dict) and "subnet" in data:
            data = data["subnet"]
        return Subnet.from_dict(data, space)
    return Subnet.parse(spec, space)


def space_options(func):
    """``--in-channels`` and ``--num-classes`` for commands that work on a bare space."""
    func = click.option("--num-classes", type=click.IntRange(min=2), default=10, show_default=True,
                        help="Classifier outputs.")(func)
    func = click.option("--in-channels", type=click.IntRange(min=1), default=3, show_default=True,
                        help="Input image channels (1 for MNIST-like data).")(func)
    return func


def subnet_summary(space: SearchSpace, subnet: Subnet) -> dict:
    from ..cost import cost

    m, p = cost(space, subnet)
    return {"subnet": subnet.to_dict(), "text": str(subnet), "macs": m, "mflops": round(m / 1e6, 6), "params": p}
