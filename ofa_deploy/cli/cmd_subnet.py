"""``ofa-deploy subnet sample|show``: draw subnets and look at one."""

from __future__ import annotations

import random

import click

from ..buckets import sample_in_bucket
from ..specs import load_subnet
from .common import SEED, emit_json, limit_float, space_from_options, space_options, subnet_summary


@click.group("subnet")
def command() -> None:
    """Sample subnets or show one's cost."""


@command.command("sample")
@click.option(
    "--mflops",
    type=limit_float("mflops", lo_open=True),
    default=None,
    help="Only subnets within this many MFLOPs (MACs / 1e6).",
)
@click.option("--tolerance", type=limit_float("tolerance"), default=0.5, show_default=True,
              help="Half-width of the MFLOPs bucket.")
@click.option("--n", "count", type=click.IntRange(1, 100_000), default=1, show_default=True, help="How many subnets.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Same seed, same subnets.")
@space_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sample(mflops, tolerance, count, seed, as_json, **options) -> None:
    """Draw subnets uniformly (the paper's sampling), optionally inside a MFLOPs bucket
    (MACs at the space's input size)."""
    space = space_from_options(**options)
    rng = random.Random(seed)
    subnets = [
        space.sample(rng) if mflops is None else sample_in_bucket(space, mflops, tolerance, rng)
        for _ in range(count)
    ]
    rows = [subnet_summary(space, s) for s in subnets]
    if as_json:
        emit_json({"seed": seed, "mflops": mflops, "tolerance": tolerance, "subnets": rows})
        return
    for row in rows:
        click.echo(f"{row['text']}  {row['mflops']:.3f} MFLOPs  {row['params']:,} params")


@command.command("show")
@click.argument("spec")
@space_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(spec, as_json, **options) -> None:
    """MACs, params and canonical forms of SPEC (text form, JSON object, or JSON file) in the
    paper's space, one given by the options, or a run's (--run)."""
    space = space_from_options(**options)
    row = subnet_summary(space, load_subnet(spec, space))
    if as_json:
        emit_json(row)
        return
    click.echo(f"text:   {row['text']}")
    click.echo(f"ks:     {row['subnet']['ks']}")
    click.echo(f"e:      {row['subnet']['e']}")
    click.echo(f"d:      {row['subnet']['d']}")
    click.echo(f"MFLOPs: {row['mflops']:.6f} ({row['macs']:,} MACs)")
    click.echo(f"params: {row['params']:,}")
