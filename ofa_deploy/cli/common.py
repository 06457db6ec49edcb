"""Helpers shared by the CLI commands: JSON output, option types, the space option."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import OfaError
from ..io import json_text
from ..space import SearchSpace, Subnet
from ..validate import LIMITS, MAX_SEED, finite


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (the ``--json`` contract of every command)."""
    sys.stdout.write(json_text(obj, indent=2) + "\n")


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
    """``--run``, or ``--in-channels``, ``--num-classes``, ``--image-size`` and ``--width-mult``,
    for commands that describe a space (``space_from_options`` makes it)."""
    func = click.option("--width-mult", type=limit_float("width_mult"), default=None,
                        help="OFA's width multiplier (1.0 and 1.2 in OFA's published supernets). [default: 1.0]")(func)
    func = click.option("--image-size", type=click.IntRange(8, 4096), default=None,
                        help="Input size N (NxN). [default: 32]")(func)
    func = click.option("--num-classes", type=click.IntRange(2, 100_000), default=None,
                        help="Classifier outputs. [default: 10]")(func)
    func = click.option("--in-channels", type=click.IntRange(1, 1024), default=None,
                        help="Input image channels (1 for MNIST-like data). [default: 3]")(func)
    func = click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
                        help="The space of this run directory (trained or imported) instead of the options "
                             "below.")(func)
    return func


def space_from_options(run_dir: str | None = None, in_channels: int | None = None, num_classes: int | None = None,
                       image_size: int | None = None, width_mult: float | None = None) -> SearchSpace:
    """The space of ``run_dir`` (its config.toml's [space]), or the paper's space with the
    options given; both at once is a usage error."""
    given = {"--in-channels": in_channels, "--num-classes": num_classes, "--image-size": image_size,
             "--width-mult": width_mult}
    if run_dir is not None:
        clash = [flag for flag, value in given.items() if value is not None]
        if clash:
            raise click.UsageError(f"--run describes the run's own space; {', '.join(clash)} cannot be given with it")
        from ..run import read_config, space_from_config

        return space_from_config(read_config(run_dir))
    space = SearchSpace(in_channels=in_channels or 3, num_classes=num_classes or 10,
                        width_mult=1.0 if width_mult is None else width_mult)
    if image_size is not None:
        from ..resolution import space_at

        space = space_at(space, image_size)
    return space


def subnet_summary(space: SearchSpace, subnet: Subnet) -> dict:
    from ..cost import cost

    m, p = cost(space, subnet)
    return {"subnet": subnet.to_dict(), "text": str(subnet), "macs": m, "mflops": round(m / 1e6, 6), "params": p}


def stream_options(func):
    """``--workers`` and ``--bn-variance``: how a command reads an ImageNet-style folder
    streaming (imported runs, ``data.stream``) and which BN variance it recalibrates with."""
    func = click.option("--bn-variance", type=click.Choice(["unbiased", "biased"]), default=None,
                        help="BN recalibration's variance: biased = OFA's set_running_statistics (batch mean and "
                             "biased variance averaged over images), unbiased = PyTorch's cumulative average "
                             "[default: biased for an imported run, else unbiased].")(func)
    return click.option("--workers", type=click.IntRange(0, 64), default=None,
                        help="DataLoader processes reading an ImageNet-style --data-dir (imported runs) "
                             "[default: cores - 1, at most 8].")(func)
