"""Helpers shared by the CLI commands: JSON output, option types, the space option."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import OfaError
from ..space import SearchSpace, Subnet
from ..validate import LIMITS, MAX_SEED, finite


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (the ``--json`` contract of every command)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def echo_warnings(summary: dict) -> None:
    """A library summary's ``warnings``, one ``warning:`` line each on stderr (also with
    ``--json``: they are in the document, and a person reading the terminal sees them)."""
    for warning in summary.get("warnings", ()):
        click.echo(f"warning: {warning}", err=True)


class FiniteFloat(click.ParamType):
    """A float option that refuses NaN, infinities and values outside [lo, hi]."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return finite(value, "value", lo=self.lo, hi=self.hi, lo_open=self.lo_open, hi_open=self.hi_open)
        except OfaError as exc:
            self.fail(str(exc).replace("value ", "", 1), param, ctx)

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        lo = "" if self.lo is None else f"{self.lo:g}{'<' if self.lo_open else '<='}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='}{self.hi:g}"
        return f"FLOAT {lo}x{hi}" if lo or hi else "FLOAT"

    def __repr__(self) -> str:
        return f"FiniteFloat({self.lo}, {self.hi})"


def limit_float(name: str, *, lo_open: bool = False) -> FiniteFloat:
    """The click type of a float option bounded by ``validate.LIMITS[name]``."""
    lo, hi = LIMITS[name]
    return FiniteFloat(lo, hi, lo_open=lo_open)


def limit_int(name: str, lo: int | None = None) -> click.IntRange:
    """The click type of a count bounded by ``validate.LIMITS[name]`` (``lo`` overrides the floor)."""
    low, hi = LIMITS[name]
    return click.IntRange(low if lo is None else lo, hi)


SEED = click.IntRange(0, MAX_SEED)
"""Seeds: 64-bit unsigned, what numpy and torch take."""

MAX_COUNT = 10_000_000
"""Upper bound of image, subnet and epoch counts: more than any real use, less than a typo's days of work."""


def space_options(func):
    """``--in-channels`` and ``--num-classes`` for commands that work on a bare space."""
    func = click.option("--num-classes", type=click.IntRange(2, 100_000), default=10, show_default=True,
                        help="Classifier outputs.")(func)
    func = click.option("--in-channels", type=click.IntRange(1, 1024), default=3, show_default=True,
                        help="Input image channels (1 for MNIST-like data).")(func)
    return func


def subnet_summary(space: SearchSpace, subnet: Subnet) -> dict:
    from ..cost import cost

    m, p = cost(space, subnet)
    return {"subnet": subnet.to_dict(), "text": str(subnet), "macs": m, "mflops": round(m / 1e6, 6), "params": p}
