"""``ofa-deploy export RUN``: one subnet (or one per MFLOPs bucket) -> ONNX + sidecar for a target."""

from __future__ import annotations

import hashlib
import importlib.util
import random
from pathlib import Path

import click

from ..buckets import paper_buckets, paper_scale, sample_in_bucket
from ..specs import load_subnet
from .common import MAX_COUNT, SEED, emit_json, limit_float


@click.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--subnet", "spec", default=None, help="Subnet SPEC: text form, JSON object, or JSON file.")
@click.option("--mflops", type=limit_float("mflops", lo_open=True), default=None, help="A random subnet within --tolerance of this many MFLOPs.")
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
              show_default=True, help="int8: how activation ranges are calibrated (ONNX Runtime's calibrators).")
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
              help="Dataset directory [default: the run's].")
@click.option("--resolution", type=click.IntRange(8, 4096), default=None,
              help="Input size R, one the run was trained at (--resolutions): the ONNX takes (batch, C, R, R), BN "
                   "is recalibrated and accuracy measured on images resized to R, MACs are counted at R "
                   "[default: the run's image size].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(run_dir, spec, mflops, smallest, largest, all_buckets, seed, tolerance, target_name, out, overwrite,
            checkpoint, recalibrate, bn_images, precision, calibration_method, calibration_images, parity_images, measure_accuracy, exporter,
            data_dir, as_json, resolution=None) -> None:
    """Export a subnet of the supernet trained in RUN for a deployment target.

    Extracts the static subnet, recalibrates its BN statistics, writes model.onnx and the
    model.json sidecar (subnet, MFLOPs, accuracy, parity, versions, SHA-256s), plus
    calibration.npy for TensorRT targets; then prints the command that builds the engine
    on the device. The output directory appears only once complete.
    """
    from rich.console import Console

    from ..errors import OfaError
    from ..export.sidecar import INDEX_FILE
    from ..run import read_config, space_from_config
    from ..targets import load_target

    chosen = [name for name, on in (("--subnet", spec is not None), ("--mflops", mflops is not None),
                                    ("--smallest", smallest), ("--largest", largest),
                                    ("--all-buckets", all_buckets)) if on]
    if len(chosen) != 1:
        raise click.UsageError("choose exactly one of --subnet, --mflops, --smallest, --largest, --all-buckets"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None:
        raise OfaError("export needs torch and onnx on this machine: pip install 'ofa-deploy[torch]'")
    target = load_target(target_name)
    from ..export.precision import check_precision

    precision = check_precision(precision or target.precision, target.allowed_precisions, target=target.name)
    config = read_config(run_dir)
    from ..evaluate.resolution import run_resolution
    from ..resolution import space_at

    default_space = space_from_config(config)
    resolution = run_resolution(config, resolution)  # one the run was trained at, checked before any work
    space = space_at(default_space, resolution)  # --mflops and the buckets count MACs at this size
    rng = random.Random(seed)
    if all_buckets:
        width = tolerance * paper_scale(space) if tolerance == 0.5 else tolerance  # 0.5: the default
        picks = [(f"bucket-{int(round(b)):02d}", b, sample_in_bucket(space, b, width, rng))
                 for b in paper_buckets(space)]
    elif spec is not None:
        picks = [(None, None, load_subnet(spec, space))]
    elif mflops is not None:
        picks = [(None, mflops, sample_in_bucket(space, mflops, tolerance, rng))]
    else:
        picks = [(None, None, space.smallest() if smallest else space.largest())]
    if out is None:
        leaf = f"buckets-seed{seed}" if all_buckets else _subnet_id(space, picks[0][2])
        leaf += "" if precision == target.precision else f"-{precision}"
        leaf += "" if resolution == default_space.image_size else f"-r{resolution}"
        out = run_dir / "exports" / target.name / leaf
    from ..outputs import EXPORT, check_not_input, check_replaceable

    inputs = [("run directory", run_dir), ("--data-dir", data_dir)]
    check_not_input(out, inputs)  # before any work; checked again when the export is renamed into place
    check_replaceable(out, EXPORT, overwrite=overwrite)
    console = Console(stderr=True)

    with console.status("loading the supernet and data", spinner="dots") as status:
        from ..export import export_subnet
        from ..export.images import export_images
        from ..export.staging import staged_directory
        from ..io import atomic_write_json
        from ..run import load_supernet

        from ..evaluate.resolution import images_at, supernet_at

        supernet, _ = load_supernet(run_dir, checkpoint)
        supernet = supernet_at(supernet, resolution)
        data = export_images(config, data_dir=data_dir, seed=seed, parity_images=parity_images,
                             train_images=max(bn_images, calibration_images), accuracy=measure_accuracy)
        data.train, data.parity = images_at(data.train, resolution), images_at(data.parity, resolution)
        data.eval = (images_at(data.eval[0], resolution), data.eval[1]) if data.eval is not None else None
        if data.in_channels != space.in_channels or data.num_classes != space.num_classes:
            raise OfaError(f"dataset {data.name} has {data.in_channels} channels and {data.num_classes} classes, "
                           f"the run's network {space.in_channels} and {space.num_classes}")

        def export_one(subnet, where: Path, label: str) -> dict:
            return export_subnet(
                supernet, subnet, target, where, calib_images=data.train, parity_images=data.parity,
                recalibrate=recalibrate, run_dir=run_dir, exporter=exporter,
                eval_data=data.eval, normalization=data.normalization, bn_images=bn_images,
                calibration_count=calibration_images, seed=seed, overwrite=overwrite and not all_buckets,
                precision=precision, calibration_method=calibration_method,
                progress=lambda message: status.update(f"{label}: {message}"),
            )

        if all_buckets:
            results = []
            with staged_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
                for i, (name, bucket, subnet) in enumerate(picks):
                    results.append((name, bucket, export_one(subnet, tmp / name, f"[{i + 1}/{len(picks)}] {name}")))
                atomic_write_json(tmp / INDEX_FILE, {
                    "target": target.name, "seed": seed, "tolerance": tolerance,
                    "exports": [_row(name, bucket, sc) for name, bucket, sc in results],
                })
        else:
            results = [(None, picks[0][1], export_one(picks[0][2], out, str(picks[0][2])))]

    device_command = _device_command(out, target, target_name)
    if as_json:
        emit_json({
            "out": str(out),
            "target": target.name,
            "exports": [{**_row(name, bucket, sc), "sidecar": sc} for name, bucket, sc in results],
            "device_command": device_command,
        })
        return
    for name, bucket, sc in results:
        where = out / name if name else out
        acc = sc["accuracy"] or {}
        par, vs32 = sc["parity"], sc["precision_parity"]
        drop = acc.get("drop_points")
        click.echo(f"{where}  {sc['subnet_text']}  {sc['mflops']:.2f} MFLOPs  {sc['params']:,} params  {sc['precision']}"
                   + (f"  top-1 {acc['top1']:.2%}" if acc.get("top1") is not None else "")
                   + (f" (fp32 {acc['fp32_top1']:.2%}, drop {drop:+.2f} points)"
                      if drop is not None and sc["precision"] != "fp32" else "")
                   + f"  parity max|diff| {par['max_abs_diff']:.1e} top-1 agree {par['top1_agreement']:.1%}"
                   + (f"  vs fp32 max|diff| {vs32['max_abs_diff']:.1e} top-1 agree {vs32['top1_agreement']:.1%}"
                      if sc["precision"] != "fp32" else "")
                   + f"  ({sc['onnx']['exporter']}, opset {sc['onnx']['opset']})")
    if device_command:
        where = "on the device" if target.build_on_device else "on a machine with TensorRT and the target GPU"
        click.echo(f"next, {where}: {device_command}")


def _subnet_id(space, subnet) -> str:
    """``07.01mflops-<10 hex>``: sorts by cost, unique per architecture."""
    from ..cost import macs

    return f"{macs(space, subnet) / 1e6:05.2f}mflops-{hashlib.sha1(str(subnet).encode()).hexdigest()[:10]}"


def _row(name, bucket, sidecar: dict) -> dict:
    return {"name": name, "bucket_mflops": bucket, "subnet": sidecar["subnet_text"], "mflops": sidecar["mflops"],
            "params": sidecar["params"], "precision": sidecar["precision"],
            "accuracy": (sidecar.get("accuracy") or {}).get("top1"),
            "accuracy_drop_points": (sidecar.get("accuracy") or {}).get("drop_points"),
            "max_abs_diff": sidecar["parity"]["max_abs_diff"], "top1_agreement": sidecar["parity"]["top1_agreement"],
            "vs_fp32": sidecar["precision_parity"]}


def _device_command(out: Path, target, target_name: str) -> str | None:
    if target.backend != "tensorrt":
        return None
    return f"ofa-deploy build-engine {out} --target {target_name}"
