"""``ofa-deploy import-ofa CHECKPOINT --out RUN``: an OFA MobileNetV3 supernet checkpoint ->
a run directory (the work is ``ofa_deploy.ofa_import``)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from .common import emit_json, limit_float


def _int_list(ctx, param, value):
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not parts or not all(re.fullmatch(r"[1-9]", p, re.ASCII) for p in parts):
        raise click.BadParameter("expected comma-separated whole numbers from 1 to 9, e.g. 3,4,6")
    return [int(p) for p in parts]


@click.command("import-ofa")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The run directory to create.")
@click.option("--image-size", type=click.IntRange(8, 4096), default=224, show_default=True,
              help="Input size N the run is evaluated and exported at (OFA's supernets run at 128 to 224).")
@click.option("--width-mult", type=limit_float("width_mult"), default=None,
              help="Check the checkpoint has this width multiplier (1.0 or 1.2 for OFA's published supernets) "
                   "[default: inferred from the tensors].")
@click.option("--expand-choices", callback=_int_list, default=None,
              help="Expand ratios of the space; the largest must be the checkpoint's [default: OFA's 3,4,6 up to "
                   "the largest the tensors hold].")
@click.option("--depth-choices", callback=_int_list, default=None,
              help="Depths per stage; the largest must be the checkpoint's [default: OFA's 2,3,4 up to the "
                   "largest the tensors hold].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="An ImageNet-style folder (DIR/train/<class>/*, DIR/val/<class>/*) to record as the run's data: "
                   "eval, export and catalog build then stream it without --data-dir.")
@click.option("--name", default=None, help="Run name [default: the --out folder's name].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an earlier import-ofa run directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as JSON.")
def command(checkpoint, out, image_size, width_mult, expand_choices, depth_choices, name, overwrite,
            as_json, data_dir=None) -> None:
    """Import an OFA-format MobileNetV3 supernet checkpoint (MIT's ofa package: a bare state
    dict or one under 'state_dict', 'module.' prefixes and OFA's older key names accepted)
    into a run directory that eval, export, catalog build, profile, report and analyze take.

    The file is loaded with torch.load(weights_only=True): a pickle that needs code is
    refused. Every tensor is mapped strictly (every key used, every shape checked); width
    multiplier, classes, input channels and kernel choices come from the tensors. The run
    has no data set unless --data-dir records one: export it with --no-recalibrate (BN
    statistics as imported, parity on seeded random inputs), or give --data-dir, an
    ImageNet-style folder read streaming (here or to eval, export, catalog build).
    """
    from ..ofa_import import import_checkpoint

    made, prov = import_checkpoint(checkpoint, out, image_size=image_size, width_mult=width_mult,
                                   expand_choices=expand_choices, depth_choices=depth_choices, name=name,
                                   overwrite=overwrite, data_dir=data_dir)
    if as_json:
        emit_json({"out": str(made), **prov})
        return
    how = prov["how"]
    click.echo(f"{made}: OFA MobileNetV3 supernet, width {float(prov['width_mult'])}, {prov['num_classes']} classes, "
               f"{prov['in_channels']}x{prov['resolution']}x{prov['resolution']} input, {prov['tensors']} tensors "
               f"mapped (sha256 {prov['sha256'][:12]}...)")
    click.echo(f"  expand: {how['expand_choices']}; depth: {how['depth_choices']}")
    click.echo(f"next: ofa-deploy space --run {made}; ofa-deploy export {made} --largest --target cpu "
               "--no-recalibrate")
