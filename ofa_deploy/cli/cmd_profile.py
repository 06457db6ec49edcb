"""``ofa-deploy profile MODEL``: measured latency of an ONNX model, engine or export directory."""

from __future__ import annotations

from pathlib import Path

import click

from ..validate import check_writable
from .common import emit_json, limit_float, limit_int


@click.command("profile")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", default=None,
              help="Target name or profile .toml [default: the target MODEL was exported for (its model.json's "
                   "recorded definition), else cpu].")
@click.option("--batch", type=click.IntRange(1, 65536), default=None, help="Batch size [default: the target's first].")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "torch"]), default=None,
              help="Override the target's backend (torch: eager comparison, needs an export directory).")
@click.option("--threads", type=limit_int("threads"), default=None,
              help="Intra-op threads, 0 = library default [default: the target's].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where the onnxruntime or torch backend runs [default: the target's].")
@click.option("--cuda-graph", is_flag=True,
              help="Replay a captured CUDA graph per call (torch on CUDA, onnxruntime's CUDA provider): no "
                   "per-kernel launch overhead.")
@click.option("--warmup-s", type=limit_float("warmup_s"), default=None, help="Warm-up seconds.")
@click.option("--min-iterations", type=limit_int("min_iterations"), default=None, help="Minimum timed iterations.")
@click.option("--min-time-s", type=limit_float("min_time_s"), default=None, help="Minimum timed seconds.")
@click.option("--cov-threshold", type=limit_float("cov_threshold", lo_open=True), default=None,
              help="CoV (std/mean, fraction) above which a measurement is repeated and then flagged.")
@click.option("--max-retries", type=limit_int("max_retries"), default=None, help="Repeats of an unstable measurement.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the JSON result to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(model, target, batch, backend, threads, warmup_s, min_iterations, min_time_s, cov_threshold,
            max_retries, out, as_json, device=None, cuda_graph=False) -> None:
    """Measure the latency of MODEL (model.onnx, an engine, or an export directory).

    Warm-up by time, then timed runs until both the minimum iterations and the minimum time
    are reached; a CoV above the threshold is re-measured and, if it persists, flagged
    "unstable". On a GPU the device compute time and the host latency are reported apart.
    """
    from rich.console import Console

    from ..io import atomic_write_json
    from ..profile import Protocol, profile_model
    from ..targets import load_target

    tgt = load_target(target) if target is not None else _default_target(model)
    if out:  # before measuring: never over the model or a file that is not a profile result
        from ..outputs import PROFILE_RESULT, check_file_output

        check_file_output(out, PROFILE_RESULT, inputs=[("model", model)] + (
            [("--target profile", target)] if target and target.endswith(".toml") else []))
        check_writable(Path(out), "--out")
    protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s,
                                    cov_threshold=cov_threshold, max_retries=max_retries)
    console = Console(stderr=True)

    def on_attempt(i: int, cov: float) -> None:
        if cov > protocol.cov_threshold:
            console.print(f"[yellow]attempt {i + 1}: CoV {cov:.1%} above {protocol.cov_threshold:.1%}[/yellow]")

    with console.status(f"measuring {model} on {tgt.name}", spinner="dots"):
        result = profile_model(model, tgt, batch=batch, backend=backend, threads=threads, protocol=protocol,
                               on_attempt=on_attempt, device=device, cuda_graph=cuda_graph)
    if out:
        atomic_write_json(out, result)
    if result["unstable"]:
        console.print(f"[red]unstable: CoV {result['cov']:.1%} > {protocol.cov_threshold:.1%} after "
                      f"{len(result['attempts'])} attempts; the numbers are flagged, not to be trusted[/red]")
    if result["backend_mismatch"]:
        console.print(f"[yellow]not a {result['target']} measurement: {result['backend_mismatch']}; the result "
                      "says so, and `catalog import` refuses it without --allow-backend-mismatch[/yellow]")
    elif result["fallback"]:
        console.print(f"[yellow]{result['fallback']}[/yellow]")
    if as_json:
        emit_json(result)
        return
    _print_human(result)


def _default_target(model: str):
    """The target an export recorded in its ``model.json`` (beside ``model.onnx`` or an
    engine, or in the export directory) - its whole definition, as ``build-engine`` uses
    it - or ``cpu`` for a model without one."""
    from ..profile.model import SIDECAR, read_sidecar
    from ..targets import load_target, recorded_target

    path = Path(model)
    try:
        sidecar = path / SIDECAR if path.is_dir() else path.parent / SIDECAR
        found = sidecar.is_file()
    except OSError:  # an unusable path (too long, ...): profiling it says what is wrong with it
        return load_target("cpu")
    record = read_sidecar(sidecar).get("target") if found else None
    if not record:
        return load_target("cpu")
    return recorded_target(None, record, f"export {sidecar}")


def _print_human(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    lat = r["latency_ms"]
    table = Table(title=f"{r['model']['path']}  ({r['target']}, {r['backend']}"
                        f"{'/' + r['provider'] if r['provider'] else ''}, batch {r['batch']})")
    for col in ("", "min", "p50", "p90", "p99", "mean", "std"):
        table.add_column(col, justify="right")
    rows = [(r["latency_kind"], lat)]
    if r["device_latency_ms"] is not None:
        rows.append(("host", r["host_latency_ms"]))
    for label, s in rows:
        table.add_row(f"{label} (ms)", *(f"{s[k]:.4f}" for k in ("min", "p50", "p90", "p99", "mean", "std")))
    console = Console()
    console.print(table)
    env = r["environment"]
    console.print(f"n={r['n']}  CoV={r['cov']:.2%}{'  UNSTABLE' if r['unstable'] else ''}  "
                  f"throughput={r['throughput_per_s']:.1f}/s  threads={r['threads']}  "
                  f"cpu={env['cpu']['model']}  host={env['hostname']}")
