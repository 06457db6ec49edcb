"""``ofa-deploy build-engine DIR``: the TensorRT engine of an export directory, built on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from .common import emit_json

_CACHE_WORDS = {"reused": "reused", "created": "created", "replaced-corrupt": "was corrupt, replaced",
                "ignored-mismatch": "is another device's, not used"}


@click.command("build-engine")
@click.argument("export_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--target", "target_name", default=None,
              help="Target name or profile .toml [default: the target DIR was exported for].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where model.engine and engine.json go [default: DIR].")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file [default: one per GPU and TensorRT version under ~/.cache/ofa-deploy].")
@click.option("--no-timing-cache", is_flag=True, help="Build without a timing cache.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True,
              help="CUDA device (GPU) index to build on.")
@click.option("--verbose", is_flag=True, help="Print TensorRT's log.")
@click.option("--json", "as_json", is_flag=True, help="Print the engine sidecar(s) as JSON.")
def command(export_dir, target_name, out_dir, timing_cache, no_timing_cache, device, verbose, as_json) -> None:
    """Build model.engine (+ engine.json) from DIR (an `ofa-deploy export` directory, or an
    --all-buckets export: every bucket, sharing one timing cache), in the precision DIR's
    ONNX carries (model.json "precision").

    Needs TensorRT 8.5-11.x and pycuda; Jetson targets must be built on the Jetson itself.
    """
    from rich.console import Console

    from ..errors import OfaError
    from ..export.tensorrt import build_engines

    if out_dir is not None and (export_dir / "index.json").is_file():
        raise OfaError("--out cannot be used with an --all-buckets export (each bucket keeps its engine)")
    console = Console(stderr=True)
    with console.status(f"building the engine of {export_dir}", spinner="dots") as status:
        sidecars = build_engines(
            export_dir, target_name, out_dir=out_dir, timing_cache=timing_cache,
            use_timing_cache=False if no_timing_cache else None, device=device, verbose=verbose,
            progress=lambda message: status.update(f"{export_dir}: {message}"),
        )
    if as_json:
        emit_json(sidecars if len(sidecars) > 1 else sidecars[0])
        return
    for sc in sidecars:
        cache = sc["timing_cache"]
        reuse = "" if cache is None else f" (timing cache {_CACHE_WORDS[cache['status']]})"
        click.echo(f"{sc['subnet_text']}: {sc['precision']} engine for {sc['gpu_name']} "
                   f"(sm {sc['compute_capability']}, TensorRT {sc['tensorrt_version']}) "
                   f"built in {sc['build_seconds']:.1f} s{reuse}")
