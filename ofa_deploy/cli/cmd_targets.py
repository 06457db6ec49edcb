"""``ofa-deploy targets [NAME]``: the deployment target profiles and what they say."""

from __future__ import annotations

import click

from .common import emit_json


@click.command("targets")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(name, as_json) -> None:
    """List the target profiles, or show one (NAME, alias or path of a .toml) in full."""
    from ..targets import list_targets, load_target, profile_dirs

    if name is not None:
        target = load_target(name)
        if as_json:
            emit_json(target.to_dict())
            return
        for key, value in target.to_dict().items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    click.echo(f"{key}.{sub}: {v}")
            else:
                click.echo(f"{key}: {value}")
        return
    targets = list_targets()
    if as_json:
        emit_json({"profile_dirs": [str(d) for d in profile_dirs()], "targets": [t.to_dict() for t in targets]})
        return
    rows = [("name", "backend", "fallback", "precision", "batch", "threads", "DLA", "on device", "aliases")]
    for t in targets:
        rows.append((t.name, t.backend, t.fallback_backend or "-", t.precision, ",".join(map(str, t.batch_sizes)),
                     str(t.threads) if t.threads else "auto", "-" if t.dla_core is None else str(t.dla_core),
                     "yes" if t.build_on_device else "no", ",".join(t.aliases) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo("(`ofa-deploy targets NAME` shows one in full)")
