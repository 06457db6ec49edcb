"""``ofa-deploy catalog build|import|list|show|pareto|select|plot|html``: per-device model catalogs."""

from __future__ import annotations

from pathlib import Path

import click

from .common import MAX_COUNT, SEED, emit_json, limit_float, limit_int

CATALOG_OPTION = click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path),
                              default=Path("catalog.db"), show_default=True, help="Catalog database file.")


class NoSelection(click.ClickException):
    """A budget nothing meets: a negative answer (exit 1), not bad input."""

    exit_code = 1


@click.group("catalog")
def command() -> None:
    """Build, fill and query per-device catalogs (accuracy, MFLOPs, measured latency, ONNX)."""


def _open(path: Path, create: bool = False):
    from ..catalog import Catalog

    return Catalog(path, create=create, readonly=not create)


def _target_name(target: str) -> str:
    """A known target's canonical name (aliases such as ``jetson`` resolve); any other
    name as given - catalogs may hold results for targets without a profile here."""
    from ..errors import OfaError
    from ..targets import load_target

    try:
        return load_target(target).name
    except OfaError:
        return target


def _resolve_target(catalog_path: Path, target: str | None) -> str:
    """``--target`` as given (aliases resolved), or, without it, the catalog's only target."""
    from ..errors import OfaError

    if target is not None:
        return _target_name(target)
    with _open(catalog_path) as cat:
        known = cat.targets()
    if len(known) == 1:
        return known[0]
    if not known:
        raise OfaError(f"catalog {catalog_path} has no measurements yet, so no target to default to "
                       "(measure with `ofa-deploy catalog build` or `catalog import`)")
    raise OfaError(f"catalog {catalog_path} holds {len(known)} targets ({', '.join(known)}); choose one with --target")


def _entries(catalog_path: Path, target: str, batch: int, precision: str | None = None):
    from ..catalog import entries

    target = _target_name(target)
    with _open(catalog_path) as cat:
        items = entries(cat, target, batch=batch, precision=precision)
        known = cat.targets()
        measured = cat.precisions(target) if precision else []
    if not items:
        hint = f"targets in it: {', '.join(known)}" if known else "it has no measurements yet"
        if precision and target in known:
            hint = f"precisions measured there: {', '.join(measured) or 'none'}"
        from ..errors import OfaError

        at = f" at batch {batch}" + (f" in {precision}" if precision else "")
        raise OfaError(f"catalog {catalog_path} has no entries for target {target}{at} ({hint})")
    return items


def _target_options(func):
    func = click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
                        help="Only models of this precision [default: every precision].")(func)
    func = click.option("--batch", type=click.IntRange(1, 65536), default=1, show_default=True,
                        help="Batch size of the latency measurements.")(func)
    func = click.option("--target", default=None,
                        help="Target name [default: the catalog's target, when it holds only one].")(func)
    return func


def _row(e: dict) -> str:
    acc = f"{e['accuracy']:.4f}" if e["accuracy"] is not None else "  -   "
    if e["accuracy"] is not None and e.get("accuracy_precision") not in (None, e["precision"]):
        acc += f" ({e['accuracy_precision']})"  # an older catalog: no accuracy of this precision's own
    flag = ("  UNSTABLE" if e["unstable"] else "") + ("  BACKEND MISMATCH" if e.get("backend_mismatch") else "")
    res = e.get("resolution")
    if e["precision"] != "fp32" and e.get("drop_points") is not None:
        acc += f" (drop {e['drop_points']:+.2f}" + (f", bound {e['max_drop']:g}, {e['reverted']} float"
                                                    if e.get("max_drop") is not None else "") + ")"
    return (
        f"{e['text']:<60} {e['precision']:<4} {f'{res}px' if res else '-':>5} {e['mflops']:6.2f} MFLOPs  acc {acc}  "
        f"p50 {e['latency_ms']['p50']:.4f}  p90 {e['latency_ms']['p90']:.4f} ms{flag}"
    )


@command.command("build")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True, help="Target name or profile .toml (measured on this machine).")
@CATALOG_OPTION
@click.option("--n", "count", type=click.IntRange(2, MAX_COUNT), default=40, show_default=True,
              help="Candidate subnets to evaluate.")
@click.option("--finalists", type=click.IntRange(1, MAX_COUNT), default=8, show_default=True,
              help="Pareto finalists to export and measure.")
@click.option("--budget-ms", "budgets", type=limit_float("latency_ms", lo_open=True), multiple=True,
              help="Latency budget to add a finalist for (repeatable; needs --predictor).")
@click.option("--predictor", "predictor_path", type=click.Path(path_type=Path), default=None,
              help="Latency predictor of the target [default: rank candidates by MACs].")
@click.option("--confidence", type=float, default=None,
              help="Rank and hold --budget-ms to the predictor's upper bound of p90 at this confidence (e.g. 0.9).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the candidate draw.")
@click.option("--calib-images", type=click.IntRange(1, MAX_COUNT), default=2000, show_default=True,
              help="Training images for BN recalibration.")
@click.option("--test-images", type=click.IntRange(1, MAX_COUNT), default=None,
              help="Evaluate accuracy on a seeded subset of this many test images [default: all].")
@click.option("--data-dir", type=click.Path(path_type=str), default=None,
              help="Dataset folder [default: the run's]; for an imported run an ImageNet-style DIR/train/<class>/*, "
                   "DIR/val/<class>/*, read streaming (chosen on a seeded half of val/, reported on the other).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="DataLoader processes reading an ImageNet-style --data-dir (imported runs) "
                   "[default: cores - 1, at most 8].")
@click.option("--torch-threads", type=click.IntRange(1, 1024), default=None,
              help="Threads for evaluating accuracy [default: torch's]; 1 on a busy shared machine.")
@click.option("--no-measure", is_flag=True,
              help="Export the finalists for TARGET but do not profile them here (profile on the device, then "
                   "`catalog import`).")
@click.option("--remeasure-unstable", is_flag=True,
              help="Measure again finalists whose stored latency is flagged unstable.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Precision of the finalists' ONNX (int8: calibrated on training images; its own accuracy is "
                   "measured) [default: the target's precision].")
@click.option("--calibration-images", type=click.IntRange(1, MAX_COUNT), default=512, show_default=True,
              help="int8: training images that calibrate the activation ranges.")
@click.option("--max-drop", type=limit_float("max_drop"), default=None,
              help="int8: quantize each finalist under this top-1 drop bound in points (as `export --max-drop`).")
@click.option("--resolution", "resolutions", type=click.IntRange(8, 4096), multiple=True,
              help="Input size to catalogue (repeatable), one the run was trained at; entries are (subnet, "
                   "resolution) pairs on one Pareto front [default: every trained resolution].")
@click.option("--from-search", "from_search", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An `ofa-deploy search` --out directory of this run: export and measure its picks for TARGET "
                   "(chosen on its split) instead of drawing --n candidates.")
@click.option("--warmup-s", type=limit_float("warmup_s"), default=None, help="Override the target's warm-up.")
@click.option("--min-iterations", type=limit_int("min_iterations"), default=None, help="Override minimum iterations.")
@click.option("--min-time-s", type=limit_float("min_time_s"), default=None, help="Override minimum seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def build(ctx, run_dir, target, catalog_path, count, finalists, budgets, predictor_path, seed, calib_images,
          test_images, data_dir, torch_threads, no_measure, remeasure_unstable, precision, calibration_images, warmup_s,
          min_iterations, min_time_s, as_json, confidence=None, resolutions=(), max_drop=None,
          from_search=None, workers=None) -> None:
    """Search RUN_DIR's subnets for the accuracy/latency Pareto front on TARGET, export and
    measure the finalists, and store everything. Rerunning does no work twice."""
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import OfaError
    from ..profile import Protocol
    from ..search.build import build_catalog
    from ..targets import load_target

    if from_search is not None:
        flags = {"count": "--n", "finalists": "--finalists", "budgets": "--budget-ms", "seed": "--seed"}
        given = [flag for name, flag in flags.items()
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise OfaError(f"{', '.join(given)}: the search chose the candidates (and its seed drew its split); "
                           "leave out with --from-search")
    if budgets and predictor_path is None:
        raise OfaError("--budget-ms needs --predictor (budgets are matched against predicted latency)")
    tgt = load_target(target)
    precision = tgt.resolve_precision(precision)
    protocol = Protocol.from_target(tgt, warmup_s=warmup_s, min_iterations=min_iterations, min_time_s=min_time_s)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("catalog", total=count)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        summary = build_catalog(run_dir, tgt, catalog_path, n=count, finalists=finalists, budgets_ms=budgets,
                                predictor=predictor_path, seed=seed, calib_n=calib_images, test_images=test_images,
                                data_dir=data_dir, remeasure_unstable=remeasure_unstable, measure=not no_measure,
                                protocol=protocol, progress=progress, precision=precision,
                                calibration_images=calibration_images, confidence=confidence,
                                resolutions=resolutions or None, max_drop=max_drop, from_search=from_search,
                                workers=workers)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{summary['catalog']}: {summary['candidates']} candidates ({summary['evaluated']} evaluated now), "
               f"{len(summary['finalists'])} finalists ({summary['exported']} exported, {summary['measured']} "
               f"measured now), ranked by {summary['proxy']}")
    click.echo(f"{summary['splits']} ({summary['chosen_on']} -> {summary['reported_on']})")
    if "to_measure" in summary:
        click.echo("profile these on the device (`ofa-deploy build-engine DIR` where needed, then "
                   "`ofa-deploy profile DIR --json`) and `ofa-deploy catalog import` the results:")
        for path in summary["to_measure"]:
            click.echo(f"  {path}")


@command.command("import")
@click.argument("results", type=click.Path(path_type=Path))
@CATALOG_OPTION
@click.option("--target", default=None, help="Target the results belong to [default: the one each names].")
@click.option("--model-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The export's model.json, for results that do not say which subnet they measured.")
@click.option("--subnet", "spec", default=None, help="Subnet the results measured, if they do not say.")
@click.option("--allow-backend-mismatch", is_flag=True,
              help="Store results measured another way than their target runs (e.g. ONNX Runtime on a CPU for a "
                   "TensorRT target), flagged wherever they show [default: refuse them].")
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
def import_(results, catalog_path, target, model_json, spec, as_json, allow_backend_mismatch=False) -> None:
    """Merge latency measured elsewhere (``profile --json`` output, one object or a list).

    Each result's measured ONNX file (checked by SHA-256) becomes the entry's model file on
    the target: the one beside --model-json, else one the catalog already holds."""
    from ..catalog.importer import import_file

    counts = import_file(catalog_path, results, target=target, subnet=spec, model_json=model_json,
                         allow_backend_mismatch=allow_backend_mismatch)
    if as_json:
        emit_json(counts)
        return
    click.echo(f"{counts['added']} of {counts['results']} results added to {catalog_path} "
               f"({counts['duplicates']} already there); targets: {', '.join(counts['targets'])}")
    if counts["mismatched"]:
        click.echo(f"warning: {counts['mismatched']} results were not measured the way their target runs; stored "
                   "flagged (BACKEND MISMATCH)", err=True)
    if counts["unlinked"]:
        click.echo(f"note: {counts['unlinked']} results name no ONNX file here, so `catalog select` cannot hand "
                   "them out; import them with --model-json EXPORT/model.json of the export directory that was "
                   "measured", err=True)



@command.command("list")
@CATALOG_OPTION
@_target_options
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
def list_(catalog_path, target, batch, precision, as_json) -> None:
    """Every entry (subnet x precision) measured on TARGET, fastest (p90) first."""
    target = _resolve_target(catalog_path, target)
    items = _entries(catalog_path, target, batch, precision)
    if as_json:
        emit_json(items)
        return
    for e in items:
        click.echo(_row(e))



@command.command("show")
@click.argument("spec")
@CATALOG_OPTION
@_target_options
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
def show(spec, catalog_path, target, batch, precision, as_json) -> None:
    """One entry (SPEC: subnet text, JSON or file; the most accurate precision of it unless
    --precision), with its ONNX hash checked."""
    import json

    from ..catalog import Catalog, entries
    from ..errors import OfaError
    from ..io import sha256_file
    from ..space import SearchSpace
    from ..specs import load_subnet

    with Catalog(catalog_path, readonly=True) as cat:
        space_dict = cat.space_dict()
        if space_dict is None:
            raise OfaError(f"catalog {catalog_path} is empty")
        key = str(load_subnet(spec, SearchSpace.from_dict(space_dict)))
        target = _resolve_target(catalog_path, target)
        found = [e for e in entries(cat, target, batch=batch, precision=precision) if e["key"] == key]
        if not found:
            raise OfaError(f"{key} has no entry for target {target}" + (f" in {precision}" if precision else "")
                           + f" in {catalog_path}")
        entry = max(found, key=lambda e: (e["accuracy"] is not None, e["accuracy"] or 0.0))
        row = cat.find_latency(key, target, batch=batch, precision=entry["precision"],
                               resolution=entry["resolution"])
        entry["environment"] = json.loads(row["environment"]) if row else None
        entry["accuracy_history"] = cat.accuracy_rows(key)
    path = entry["onnx"]
    entry["onnx_verified"] = bool(path and Path(path).is_file() and sha256_file(path) == entry["onnx_sha256"])
    if as_json:
        emit_json(entry)
        return
    click.echo(_row(entry))
    info = entry.get("accuracy_info") or {}
    if info:
        chose = f", chosen on {info['chosen_on']}" if info.get("chosen_on") else ", choosing split not recorded"
        click.echo(f"accuracy: {info['split']} split ({info['images']} images{chose})")
    click.echo(f"onnx: {path} ({'hash verified' if entry['onnx_verified'] else 'MISSING OR CHANGED'})")
    click.echo(f"measured {entry['measured_at']} on {entry['host']} ({entry['backend']}, {entry['precision']}, "
               f"{entry['resolution']}x{entry['resolution']} input, "
               f"batch {entry['batch']}, n={entry['n']}, CoV {entry['cov']:.2%}, {entry['source']})")


@command.command("pareto")
@CATALOG_OPTION
@_target_options
@click.option("--json", "as_json", is_flag=True, help="Print the front as a JSON list.")
def pareto_(catalog_path, target, batch, precision, as_json) -> None:
    """Entries on the accuracy vs measured p90 latency Pareto front (every precision
    competing unless --precision), fastest first."""
    target = _resolve_target(catalog_path, target)
    from ..catalog import pareto

    front = pareto(_entries(catalog_path, target, batch, precision))
    if as_json:
        emit_json(front)
        return
    for e in front:
        click.echo(_row(e))



@command.command("select")
@CATALOG_OPTION
@_target_options
@click.option("--max-latency-ms", type=limit_float("latency_ms", lo_open=True), default=None,
              help="Budget on measured p90 latency.")
@click.option("--max-mflops", type=limit_float("mflops", lo_open=True), default=None, help="Budget on MFLOPs.")
@click.option("--min-accuracy", type=limit_float("accuracy"), default=None, help="Accuracy floor (0-1).")
@click.option("--max-drop", type=limit_float("max_drop"), default=None,
              help="Only entries whose recorded top-1 drop against fp32 is within this many points (fp32 entries "
                   "drop 0; fp16/int8 entries with no recorded drop are left out).")
@click.option("--allow-unstable", is_flag=True, help="Also consider entries whose latency is flagged unstable.")
@click.option("--predictor", "predictor_path", type=click.Path(path_type=Path), default=None,
              help="Latency predictor of the target, for --confidence.")
@click.option("--confidence", type=float, default=None,
              help="Hold --max-latency-ms to the larger of the measured p90 and the predictor's upper bound at this "
                   "confidence (e.g. 0.9; needs --predictor).")
@click.option("--json", "as_json", is_flag=True, help="Print the chosen entry as JSON.")
def select_(catalog_path, target, batch, precision, max_latency_ms, max_mflops, min_accuracy, allow_unstable,
            predictor_path, confidence, as_json, max_drop=None) -> None:
    """The most accurate entry within the budget, any precision unless --precision; exit 1
    naming the fastest if none fits."""
    from ..catalog import NothingFits, select
    from ..errors import OfaError

    if max_latency_ms is None and max_mflops is None:
        raise OfaError("give a budget: --max-latency-ms or --max-mflops")
    target = _resolve_target(catalog_path, target)
    items = _entries(catalog_path, target, batch, precision)
    if confidence is not None or predictor_path is not None:
        from ..catalog.budgets import bound_entries

        bound_entries(items, predictor_path, confidence, target)
    from ..catalog.entries import unstable_note

    note = unstable_note(items, catalog=catalog_path, target=_target_name(target))
    unstable = {"unstable_entries": sum(1 for e in items if e["unstable"]), "unstable_note": note}
    try:
        entry = select(items, max_latency_ms=max_latency_ms, max_mflops=max_mflops, min_accuracy=min_accuracy,
                       allow_unstable=allow_unstable, max_drop=max_drop)
    except NothingFits as exc:
        if as_json:
            emit_json({"selected": None, "reason": str(exc), "fastest": exc.fastest, **unstable})
        elif note and allow_unstable is False and "unstable" not in str(exc):
            click.echo(f"note: {note}", err=True)
        raise NoSelection(str(exc)) from None
    if as_json:
        emit_json({**entry, **unstable})
        return
    click.echo(_row(entry))
    click.echo(f"onnx: {entry['onnx']} ({entry['precision']})")
    pre = entry.get("preprocessing")
    if pre:
        click.echo(f"preprocessing: {pre['size']}x{pre['size']} {pre['color']} ({pre['resize']}); "
                   f"input = (pixel / {pre['scale']:g} - mean) / std, mean {pre['mean']}, std {pre['std']}; "
                   f"{len(pre['classes'])} classes: {', '.join(pre['classes'][:10])}"
                   f"{', ...' if len(pre['classes']) > 10 else ''} (all of it: model.json \"preprocessing\")")
    else:
        click.echo("preprocessing: not recorded (an export older than the record; re-export it)", err=True)
    if entry["unstable"]:
        click.echo("warning: this entry's latency was flagged unstable", err=True)
    if entry.get("backend_mismatch"):
        click.echo(f"warning: this entry's latency is not a {entry['target']} measurement: "
                   f"{entry['backend_mismatch']}", err=True)
    if note:
        click.echo(f"note: {note}", err=True)


@command.command("plot")
@CATALOG_OPTION
@_target_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file [default: catalog-<target>.png beside the catalog].")
def plot(catalog_path, target, batch, precision, out) -> None:
    """PNG of accuracy vs measured p90 latency and vs MFLOPs, Pareto front highlighted."""
    target = _resolve_target(catalog_path, target)
    from ..catalog.plot import plot_catalog
    from ..outputs import PNG, check_file_output

    out = out or catalog_path.resolve().parent / f"catalog-{target}.png"
    check_file_output(out, PNG, inputs=[("catalog", catalog_path)])
    path = plot_catalog(_entries(catalog_path, target, batch, precision), out, target=target)
    click.echo(str(path))


@command.command("html")
@CATALOG_OPTION
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for index.html (created if missing), or an .html file to write.")
@click.option("--target", "targets", multiple=True,
              help="Show only this target (repeatable) [default: every target in the catalog].")
@click.option("--batch", type=click.IntRange(1, 65536), default=1, show_default=True,
              help="Batch size of the latency measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def html(catalog_path, out, targets, batch, as_json) -> None:
    """One self-contained HTML page (no network needed to view it): Pareto plots per target,
    a budget slider with device/precision filters showing the selected model per device, a
    sortable table of every entry and rank flips between targets. Reads the catalog only."""
    from ..catalog.html import write_catalog_html

    page = write_catalog_html(catalog_path, out, batch=batch, targets=[_target_name(t) for t in targets] or None)
    if as_json:
        emit_json({"page": str(page), "bytes": page.stat().st_size})
        return
    click.echo(str(page))
