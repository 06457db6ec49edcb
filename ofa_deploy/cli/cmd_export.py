"""``ofa-deploy export RUN``: one subnet (or one per MFLOPs bucket) -> ONNX + sidecar for a target.

The work is ``export.workflow.export_run``; this module holds the options and the printing."""

from __future__ import annotations

from pathlib import Path

import click

from .common import MAX_COUNT, SEED, emit_json, limit_float, stream_options


@click.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--subnet", "spec", default=None,
              help="Subnet: smallest, middle, largest, or a SPEC (text form, JSON object, JSON file).")
@click.option(
    "--mflops",
    type=limit_float("mflops", lo_open=True),
    default=None,
    help="A random subnet within --tolerance of this many MFLOPs.",
)
@click.option("--smallest", is_flag=True, help="The smallest subnet (k3 e3 d2 everywhere).")
@click.option("--largest", is_flag=True, help="The largest subnet (k7 e6 d4 everywhere).")
@click.option("--all-buckets", is_flag=True,
              help="One random subnet per paper MFLOPs bucket, in OUT/bucket-NN/ (at another image size than 32: "
                   "the buckets, and a default --tolerance, where they sit in that size's MFLOPs range).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the subnet draw and image choice.")
@click.option("--tolerance", type=limit_float("tolerance"), default=0.5, show_default=True,
              help="Half-width of the MFLOPs bucket.")
@click.option("--target", "target_name", default="cpu", show_default=True, help="Target name or profile .toml.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (must not exist) [default: RUN/exports/TARGET/SUBNET-ID].")
@click.option("--overwrite", is_flag=True,
              help="Replace --out if it is an earlier ofa-deploy export holding nothing else (only once the new "
                   "export succeeded).")
@click.option("--checkpoint", type=click.Choice(["auto", "final", "last"]), default="auto", show_default=True,
              help="Which checkpoint of RUN.")
@click.option("--recalibrate/--no-recalibrate", default=True, show_default=True,
              help="Recompute BN statistics on training images (off: the ONNX computes exactly what the "
                   "supernet computes with the subnet active).")
@click.option("--bn-images", type=click.IntRange(1, MAX_COUNT), default=2000, show_default=True,
              help="Training images for BN recalibration.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="What model.onnx carries: fp32, fp16 tensors, or int8 Q/DQ calibrated on training images "
                   "[default: the target's precision].")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile",
              show_default=True, help="int8: how activation ranges are calibrated (ONNX Runtime's calibrators; "
                                      "its entropy, as quantize_static builds it, gives minmax's ranges).")
@click.option("--max-drop", type=limit_float("max_drop"), default=None,
              help="int8: keep the top-1 drop against fp32 within this many points on a validation split (the "
                   "run's held-out one, else a seeded half of the test split, the accuracy then being reported on "
                   "the other half): the calibration method and image count are chosen there (within the bound, "
                   "one standard error to spare first: the logits closest to fp32's; else the smallest drop), then "
                   "the most sensitive quantized layers reverted to float (fp16 for TensorRT targets) until it "
                   "holds; fails, writing nothing, if only reverting all of them would.")
@click.option("--calibration-images", type=click.IntRange(1, MAX_COUNT), default=512, show_default=True,
              help="Training images (seeded) that calibrate int8 ranges, saved as calibration.npy "
                   "(TensorRT / int8).")
@click.option("--parity-images", type=click.IntRange(1, MAX_COUNT), default=512, show_default=True,
              help="Test images for the ONNX Runtime vs PyTorch check.")
@click.option("--accuracy/--no-accuracy", "measure_accuracy", default=True, show_default=True,
              help="Measure the exported network's top-1 accuracy on the test split.")
@click.option("--exporter", type=click.Choice(["auto", "torchscript", "dynamo"]), default="auto", show_default=True,
              help="torch.onnx exporter (auto: the TorchScript tracer, dynamo as fallback).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Dataset directory [default: the run's]; for an imported run an ImageNet-style DIR/train/<class>/*, "
                   "DIR/val/<class>/*, read streaming.")
@click.option("--resolution", type=click.IntRange(8, 4096), default=None,
              help="Input size R, one the run was trained at (--resolutions): the ONNX takes (batch, C, R, R), BN "
                   "is recalibrated and accuracy measured on images resized to R, MACs are counted at R "
                   "[default: the run's image size].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@stream_options
def command(
    run_dir,
    spec,
    mflops,
    smallest,
    largest,
    all_buckets,
    seed,
    tolerance,
    target_name,
    out,
    overwrite,
    checkpoint,
    recalibrate,
    bn_images,
    precision,
    calibration_method,
    max_drop,
    calibration_images,
    parity_images,
    measure_accuracy,
    exporter,
    data_dir,
    as_json,
    resolution=None,
    workers=None,
    bn_variance=None,
) -> None:
    """Export a subnet of the supernet trained in RUN for a deployment target.

    Extracts the static subnet, recalibrates its BN statistics, writes model.onnx and the
    model.json sidecar (subnet, MFLOPs, accuracy, parity, versions, SHA-256s), plus
    calibration.npy for TensorRT targets; then prints the command that builds the engine
    on the device. The output directory appears only once complete.
    """
    from rich.console import Console

    from ..export.workflow import choice_problem, export_run

    problem = choice_problem(spec, mflops, smallest, largest, all_buckets)
    if problem:
        raise click.UsageError(problem)
    with Console(stderr=True).status("checking the run and the target", spinner="dots") as status:
        made = export_run(
            run_dir, subnet=spec, mflops=mflops, smallest=smallest, largest=largest, all_buckets=all_buckets,
            seed=seed, tolerance=tolerance, target=target_name, out=out, overwrite=overwrite, checkpoint=checkpoint,
            recalibrate=recalibrate, bn_images=bn_images, precision=precision,
            calibration_method=calibration_method, calibration_images=calibration_images,
            parity_images=parity_images, measure_accuracy=measure_accuracy, exporter=exporter, data_dir=data_dir,
            resolution=resolution, progress=status.update, max_drop=max_drop, workers=workers,
            bn_variance=bn_variance,
        )
    out, target = made.out, made.target
    if as_json:
        emit_json({
            "out": str(out),
            "target": target.name,
            "exports": [{**row, "sidecar": sc} for row, (_, _, sc) in zip(made.rows(), made.exports)],
            "device_command": made.device_command,
        })
        return
    for name, _, sc in made.exports:
        where = out / name if name else out
        acc = sc["accuracy"] or {}
        par, vs32 = sc["parity"], sc["precision_parity"]
        drop = acc.get("drop_points")
        bound = sc.get("bound")
        click.echo(
            f"{where}  {sc['subnet_text']}  {sc['mflops']:.2f} MFLOPs  {sc['params']:,} params  {sc['precision']}"
            + (f"  top-1 {acc['top1']:.2%}" if acc.get("top1") is not None else "")
            + (
                f" (fp32 {acc['fp32_top1']:.2%}, drop {drop:+.2f} points)"
                if drop is not None and sc["precision"] != "fp32"
                else ""
            )
            + (
                f"  bound {bound['max_drop_points']:g} points: {bound['reverted_count']} of "
                f"{bound['quantized_nodes']} quantized nodes in float, validation drop "
                f"{bound['validation']['drop_points']:+.2f} ({bound['validation']['images']} images)"
                if bound
                else ""
            )
            + f"  parity max|diff| {par['max_abs_diff']:.1e} top-1 agree {par['top1_agreement']:.1%}"
            + (
                f"  vs fp32 max|diff| {vs32['max_abs_diff']:.1e} top-1 agree {vs32['top1_agreement']:.1%}"
                if sc["precision"] != "fp32"
                else ""
            )
            + f"  ({sc['onnx']['exporter']}, opset {sc['onnx']['opset']})"
        )
    if made.device_command:
        where = "on the device" if target.build_on_device else "on a machine with TensorRT and the target GPU"
        click.echo(f"next, {where}: {made.device_command}")

