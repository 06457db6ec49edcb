"""``ofa-deploy space``: what the search space holds."""

from __future__ import annotations

import click

from ..cost import cost
from .common import emit_json, space_from_options, space_options


@click.command("space")
@space_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json: bool, **options) -> None:
    """Summarise the search space (the paper's, one given by the options, or a run's with
    --run): population size, smallest/middle/largest subnets."""
    space = space_from_options(**options)
    rows = {}
    for name in ("smallest", "middle", "largest"):
        subnet = getattr(space, name)()
        m, p = cost(space, subnet)
        rows[name] = {"subnet": subnet.to_dict(), "text": str(subnet), "macs": m, "params": p}
    summary = {
        "population_size": space.population_size,
        "population_size_text": f"{space.population_size:.3e}",
        "space": space.to_dict(),
        **rows,
    }
    if as_json:
        emit_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"Search space: {space.num_stages} stages x {space.max_depth} blocks, kernel {list(space.kernel_choices)}, "
        f"expand {list(space.expand_choices)}, depth {list(space.depth_choices)}, "
        f"input {space.in_channels}x{space.image_size}x{space.image_size}, {space.num_classes} classes, "
        f"width x{float(space.width_mult)}"
    )
    widths = [space.stage_width(s) for s in range(space.num_stages)]
    console.print(f"Widths: stem {space.stem_channels}, stages {widths}, final expand {space.final_expand_channels}, "
                  f"feature mix {space.feature_mix_channels}")
    console.print(f"Population: {space.population_size:,} subnets ({space.population_size:.2e})")
    table = Table("subnet", "MFLOPs (MACs)", "params")
    table.add_column("text form", overflow="fold")
    for name, row in rows.items():
        table.add_row(name, f"{row['macs'] / 1e6:.3f}", f"{row['params']:,}", row["text"])
    console.print(table)
