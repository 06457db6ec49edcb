"""Export a trained run: choose the subnet(s), name the output, load the data, export.

``export_run`` is what ``ofa-deploy export RUN`` does, as a library call: one subnet (a spec,
the smallest, the largest, or one drawn in an MFLOPs bucket) or one per paper bucket
(``all_buckets``: ``OUT/bucket-NN/`` each, plus ``index.json``), exported for a target with
``export_subnet``. Nothing is written until the run, the target, the precision and the output
path have been checked; the output appears only once complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..buckets import paper_buckets, paper_scale, sample_in_bucket
from ..cost import macs
from ..errors import OfaError
from ..space import SearchSpace, Subnet
from ..specs import load_subnet
from ..targets import Target, load_target
from .bound import check_max_drop
from .sidecar import INDEX_FILE

DEFAULT_TOLERANCE = 0.5


@dataclass
class RunExport:
    """What ``export_run`` made: ``out`` and one (bucket name or None, bucket MFLOPs or None,
    sidecar) per exported subnet; ``device_command`` builds the engine where one is needed."""

    out: Path
    target: Target
    exports: list[tuple[str | None, float | None, dict[str, Any]]]
    device_command: str | None

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per export (what ``index.json`` and ``--json`` list)."""
        return [export_row(name, bucket, sidecar) for name, bucket, sidecar in self.exports]


def export_run(
    run_dir: str | Path,
    *,
    subnet: str | Subnet | None = None,
    mflops: float | None = None,
    smallest: bool = False,
    largest: bool = False,
    all_buckets: bool = False,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    target: str = "cpu",
    out: str | Path | None = None,
    overwrite: bool = False,
    checkpoint: str = "auto",
    recalibrate: bool = True,
    bn_images: int = 2000,
    precision: str | None = None,
    calibration_method: str = "percentile",
    calibration_images: int = 512,
    parity_images: int = 512,
    measure_accuracy: bool = True,
    exporter: str = "auto",
    data_dir: str | Path | None = None,
    resolution: int | None = None,
    progress: Callable[[str], None] | None = None,
    max_drop: float | None = None,
    workers: int | None = None,
    bn_variance: str | None = None,
) -> RunExport:
    """Export a subnet of the supernet trained in ``run_dir`` for ``target`` (a name or a
    profile .toml path); exactly one of ``subnet`` (a spec or a ``Subnet``), ``mflops``,
    ``smallest``, ``largest``, ``all_buckets`` chooses what. ``out`` defaults to
    ``RUN/exports/TARGET/<MFLOPs>mflops-<hash>`` (``buckets-seedS`` for all buckets; suffixed
    by the precision when it is not the target's default and by ``-rR`` at another
    resolution). The other arguments are ``ofa-deploy export``'s options.

    An imported run given an ImageNet-style ``data_dir`` (or one the import recorded) is
    exported from it streaming (``data.stream``, ``workers`` loader processes): BN
    recalibrated on seeded ``train/`` images, int8 calibrated on ``calibration_images`` of
    those, accuracy measured over ``val/`` batch by batch."""
    problem = choice_problem(subnet, mflops, smallest, largest, all_buckets)
    if problem:
        raise OfaError(problem)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None:
        raise OfaError("export needs torch and onnx on this machine: pip install 'ofa-deploy[torch]'")
    from ..evaluate.resolution import run_resolution
    from ..outputs import EXPORT, check_not_input, check_replaceable
    from ..resolution import space_at
    from ..run import IMAGENET_FOLDER, NO_DATASET, read_config, space_from_config

    run_dir = Path(run_dir)
    target_name = target
    tgt = load_target(target)
    precision = tgt.resolve_precision(precision)
    max_drop = check_max_drop(max_drop, precision, calibration_images)
    if max_drop is not None and not measure_accuracy:
        raise OfaError("--max-drop measures the int8 drop on labelled held-out images and reports the test drop; "
                       "it cannot be used with --no-accuracy")
    config = read_config(run_dir)
    default_space = space_from_config(config)
    from ..data.stream import stream_dir

    folder = stream_dir(config, data_dir)  # an imported run measured on an ImageNet-style folder
    no_data = (config.get("data") or {}).get("dataset") in (NO_DATASET, IMAGENET_FOLDER) and folder is None
    if no_data and recalibrate:
        raise OfaError(f"{run_dir} has no data set (an imported supernet): pass --no-recalibrate to keep its BN "
                       "statistics as imported, or --data-dir DIR (an ImageNet-style DIR/train/, DIR/val/) to "
                       "recalibrate on your images")
    if no_data and precision == "int8":
        raise OfaError(f"int8 needs calibration images and {run_dir} has no data set (an imported supernet); "
                       "give --data-dir DIR (an ImageNet-style DIR/train/, DIR/val/)")
    if folder is not None and max_drop is not None:
        raise OfaError("--max-drop is not available for an ImageNet-style folder yet (it holds its validation "
                       "images in memory); export int8 without it")
    resolution = run_resolution(config, resolution)  # one the run was trained at, checked before any work
    space = space_at(default_space, resolution)  # --mflops and the buckets count MACs at this size
    picks = _choose(space, subnet, mflops, smallest, all_buckets, seed, tolerance)
    if out is None:
        leaf = f"buckets-seed{seed}" if all_buckets else subnet_id(space, picks[0][2])
        leaf += "" if precision == tgt.precision else f"-{precision}"
        leaf += "" if resolution == default_space.image_size else f"-r{resolution}"
        out = run_dir / "exports" / tgt.name / leaf
    out = Path(out)
    inputs = [("run directory", run_dir), ("--data-dir", data_dir)]
    check_not_input(out, inputs)  # before any work; checked again when the export is renamed into place
    check_replaceable(out, EXPORT, overwrite=overwrite)

    from ..evaluate.resolution import images_at, supernet_at
    from ..io import atomic_write_json
    from ..weights import load_supernet
    from .images import export_images, random_images, stream_images
    from .pipeline import export_subnet
    from .staging import staged_directory

    say = progress or (lambda message: None)
    say("loading the supernet and data")
    supernet, _ = load_supernet(run_dir, checkpoint)
    supernet = supernet_at(supernet, resolution)
    if no_data:  # parity on seeded random inputs, BN as imported, no accuracy
        data = random_images(config, space, seed=seed, parity_images=parity_images)
    elif folder is not None:  # streamed: only the images drawn are read, val/ batch by batch
        data = stream_images(config, folder, seed=seed, parity_images=parity_images,
                             train_images=max(bn_images, calibration_images), accuracy=measure_accuracy,
                             workers=workers)
    else:
        data = export_images(config, data_dir=data_dir, seed=seed, parity_images=parity_images,
                             train_images=max(bn_images, calibration_images), accuracy=measure_accuracy,
                             validation=max_drop is not None)
    data.train = images_at(data.train, resolution) if data.train is not None else None
    data.parity = images_at(data.parity, resolution)
    data.eval = (images_at(data.eval[0], resolution), data.eval[1]) if data.eval is not None else None
    if data.validation is not None:
        data.validation = (images_at(data.validation[0], resolution), data.validation[1])
    if data.in_channels != space.in_channels or data.num_classes != space.num_classes:
        raise OfaError(f"dataset {data.name} has {data.in_channels} channels and {data.num_classes} classes, "
                       f"the run's network {space.in_channels} and {space.num_classes}")

    from types import SimpleNamespace

    from ..data.preprocessing import preprocessing_record

    norm = data.normalization
    preprocessing = preprocessing_record(config, resolution=resolution, data=SimpleNamespace(
        in_channels=data.in_channels, mean=norm["mean"], std=norm["std"], classes=norm.get("classes")))

    def export_one(chosen: Subnet, where: Path, label: str) -> dict[str, Any]:
        return export_subnet(
            supernet, chosen, tgt, where, calib_images=data.train, parity_images=data.parity,
            recalibrate=recalibrate, run_dir=run_dir, exporter=exporter,
            eval_data=data.eval, normalization=data.normalization, preprocessing=preprocessing, bn_images=bn_images,
            calibration_count=calibration_images, seed=seed, overwrite=overwrite and not all_buckets,
            parity_source=data.parity_source,
            precision=precision, calibration_method=calibration_method,
            progress=lambda message: say(f"{label}: {message}"), max_drop=max_drop,
            validation=data.validation, validation_source=data.validation_source, bn_variance=bn_variance,
        )

    if all_buckets:
        results = []
        with staged_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
            for i, (name, bucket, chosen) in enumerate(picks):
                results.append((name, bucket, export_one(chosen, tmp / name, f"[{i + 1}/{len(picks)}] {name}")))
            atomic_write_json(tmp / INDEX_FILE, {
                "target": tgt.name, "seed": seed, "tolerance": tolerance,
                "exports": [export_row(name, bucket, sc) for name, bucket, sc in results],
            })
    else:
        results = [(None, picks[0][1], export_one(picks[0][2], out, str(picks[0][2])))]
    return RunExport(out=out, target=tgt, exports=results, device_command=device_command(out, tgt, target_name))


def choice_problem(subnet: object, mflops: float | None, smallest: bool, largest: bool,
                   all_buckets: bool) -> str | None:
    """Why these choices do not name exactly one thing to export (None when they do)."""
    chosen = [name for name, on in (("--subnet", subnet is not None), ("--mflops", mflops is not None),
                                    ("--smallest", smallest), ("--largest", largest),
                                    ("--all-buckets", all_buckets)) if on]
    if len(chosen) == 1:
        return None
    return ("choose exactly one of --subnet, --mflops, --smallest, --largest, --all-buckets"
            + (f" (got {', '.join(chosen)})" if chosen else ""))


def _choose(space: SearchSpace, spec: str | Subnet | None, mflops: float | None, smallest: bool,
            all_buckets: bool, seed: int, tolerance: float) -> list[tuple[str | None, float | None, Subnet]]:
    """(bucket name, bucket MFLOPs, subnet) of each subnet to export, drawn by ``seed``."""
    rng = random.Random(seed)
    if all_buckets:
        width = tolerance * paper_scale(space) if tolerance == DEFAULT_TOLERANCE else tolerance
        return [(f"bucket-{int(round(b)):02d}", b, sample_in_bucket(space, b, width, rng))
                for b in paper_buckets(space)]
    if spec is not None:
        if isinstance(spec, Subnet):
            space.check(spec)
            return [(None, None, spec)]
        return [(None, None, load_subnet(spec, space))]
    if mflops is not None:
        return [(None, mflops, sample_in_bucket(space, mflops, tolerance, rng))]
    return [(None, None, space.smallest() if smallest else space.largest())]


def subnet_id(space: SearchSpace, subnet: Subnet) -> str:
    """``07.01mflops-<10 hex>``: sorts by cost, unique per architecture."""
    return f"{macs(space, subnet) / 1e6:05.2f}mflops-{hashlib.sha1(str(subnet).encode()).hexdigest()[:10]}"


def export_row(name: str | None, bucket: float | None, sidecar: dict[str, Any]) -> dict[str, Any]:
    """The summary of one export that ``index.json`` and ``export --json`` list."""
    return {"name": name, "bucket_mflops": bucket, "subnet": sidecar["subnet_text"], "mflops": sidecar["mflops"],
            "params": sidecar["params"], "precision": sidecar["precision"],
            "accuracy": (sidecar.get("accuracy") or {}).get("top1"),
            "accuracy_drop_points": (sidecar.get("accuracy") or {}).get("drop_points"),
            "max_drop_points": (sidecar.get("bound") or {}).get("max_drop_points"),
            "reverted_nodes": (sidecar.get("bound") or {}).get("reverted_count"),
            "max_abs_diff": sidecar["parity"]["max_abs_diff"], "top1_agreement": sidecar["parity"]["top1_agreement"],
            "vs_fp32": sidecar["precision_parity"]}


def device_command(out: Path, target: Target, target_name: str) -> str | None:
    """The command that builds the TensorRT engine of ``out`` (None for other backends);
    a target given as a ``.toml`` path is not named (the device may not have the file:
    ``build-engine`` uses the definition the export records)."""
    if target.backend != "tensorrt":
        return None
    from ..targets import is_path

    return f"ofa-deploy build-engine {out}" + ("" if is_path(target_name) else f" --target {target_name}")
