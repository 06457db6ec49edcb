"""One subnet of a supernet -> an export directory (ONNX, sidecar, calibration data).

``export_subnet`` is the library call behind ``ofa-deploy export``, the catalog build and
the quickstart. The directory is built beside ``out_dir`` and renamed into place only when
everything (export, checker, parity, hashes) succeeded.
"""

from __future__ import annotations

import datetime as _dt
import functools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..cost import cost
from ..data.preprocessing import ONNX_METADATA_KEY as PREPROCESSING_METADATA_KEY
from ..data.stream import as_tensor
from ..errors import OfaError
from ..evaluate.bn import calibration_images, default_variance, measurement_layout, recalibrate_bn
from ..io import atomic_write, atomic_write_json, json_text, sha256_file
from ..space import Subnet
from ..targets import Target, load_target
from .bound import check_max_drop
from .calibration_search import calibrated_within_bound
from .precision import (
    DEFAULT_CALIBRATION_METHOD,
    PRECISION_METADATA_KEY,
    compare_logits,
    convert_precision,
    stamp_precision,
)
from .sidecar import (
    CALIBRATION_FILE,
    ONNX_FILE,
    SIDECAR_FILE,
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    file_entry,
    library_versions,
)
from .staging import staged_directory
from .to_onnx import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx, ort_session, run_onnx

FP32_WORK_FILE = ".fp32.onnx"  # the fp32 graph a conversion starts from; removed before the rename

DEFAULT_BN_IMAGES = 2000
DEFAULT_CALIBRATION_IMAGES = 512


def export_subnet(
    supernet: nn.Module,
    subnet: Subnet,
    target: Target | str,
    out_dir: str | Path,
    *,
    calib_images: torch.Tensor | None,
    parity_images: torch.Tensor | None,
    recalibrate: bool = True,
    run_dir: str | Path | None = None,
    accuracy: float | dict[str, Any] | None = None,
    exporter: str = "auto",
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    normalization: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    bn_images: int = DEFAULT_BN_IMAGES,
    calibration_count: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    overwrite: bool = False,
    strict_parity: bool = True,
    progress: Callable[[str], None] | None = None,
    precision: str | None = None,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
    recalibrated_net: nn.Module | None = None,
    parity_source: str | None = None,
    max_drop: float | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    validation_source: dict[str, Any] | None = None,
    bn_variance: str | None = None,
) -> dict[str, Any]:
    """Export ``subnet`` of ``supernet`` for ``target`` into the new directory ``out_dir``.

    ``calib_images``: normalised training images (N, C, 32, 32); ``bn_images`` of them
    (drawn by ``seed``) recompute the subnet's BN statistics when ``recalibrate``, and for
    TensorRT / int8 targets ``calibration_count`` of them are saved as ``calibration.npy``.
    With ``recalibrate=False`` the ONNX computes exactly what the supernet computes with
    ``subnet`` active. ``parity_images`` (real images, e.g. from the test split; the
    calibration images when None; ``parity_source`` says what they are) are run through ONNX
    Runtime and PyTorch; a max logit
    difference above tolerance raises ``OfaError`` unless ``strict_parity`` is off.
    ``eval_data`` = (images, labels) measures the exported network's top-1 accuracy;
    ``accuracy`` records one measured elsewhere instead. ``recalibrated_net``: the static
    ``subnet`` already extracted and, when ``recalibrate``, recalibrated exactly so
    (``evaluate.bn.recalibrated_subnet``), e.g. the copy whose accuracy the caller just measured: the
    export then skips both steps. ``normalization`` (dataset name,
    mean, std) and the source ``run_dir`` go into the sidecar.

    ``preprocessing``: what a device must do to an image for this network (the record of
    ``ofa_deploy.data.preprocessing``); default: built from ``run_dir``'s config at the
    network's input size. It goes into the sidecar (``"preprocessing"``) and the ONNX
    metadata (``ofa_deploy.preprocessing``); without it and without ``run_dir`` (a bare
    library call on a supernet of no run) both say ``null``.

    ``precision`` (default: the target's ``precision``; one of its ``precisions``) is what
    ``model.onnx`` carries: fp32, fp16 or int8 (``export.precision``; int8 ranges are
    calibrated with ``calibration_method`` on the ``calibration_count`` training images
    that ``calibration.npy`` holds). The PyTorch parity check is made on the fp32 graph;
    the converted file is compared with it (``precision_parity``) and, with ``eval_data``,
    its own ONNX Runtime accuracy is measured beside the fp32 one.

    ``max_drop`` (int8 only; ``export.bound``): the quantized nodes most sensitive on
    ``validation`` = (images, labels) are left in float until the int8 file's top-1 there is
    within ``max_drop`` points of the fp32 file's (``OfaError``, nothing written, when only
    reverting every node would do); ``validation_source`` says which images those are
    (``"bound"`` in the sidecar). ``eval_data`` must then be images kept apart from them.

    ``calib_images`` and ``eval_data``'s images may be streams (``data.stream``: an imported
    run's ImageNet-style folder), read batch by batch; ``bn_variance`` (``evaluate.bn``;
    default: the run's, ``unbiased`` without a run) is recorded under ``"bn"``.

    Returns the sidecar, also written as ``out_dir/model.json``.
    """
    target = load_target(target) if isinstance(target, str) else target
    precision = target.resolve_precision(precision)
    # calibration.npy: int8 ranges, and for TensorRT targets the images a device-side build may use
    # (left out when there are none: a run without data exports fp32/fp16 only)
    needs_calibration = precision == "int8" or (target.backend == "tensorrt" and calib_images is not None)
    space = supernet.space
    space.check(subnet)
    say = progress or (lambda message: None)
    if precision == "int8" and calibration_count < 1:
        raise OfaError("--calibration-images: int8 quantization needs at least one calibration image")
    max_drop = check_max_drop(max_drop, precision, calibration_count)
    if max_drop is not None and validation is None:
        raise OfaError("--max-drop needs labelled validation images to measure the drop on")
    if recalibrate and calib_images is None:
        raise OfaError("BN recalibration needs training images (calib_images), or pass recalibrate=False")
    if needs_calibration and calib_images is None:
        raise OfaError(f"target {target.name} needs calibration images (calib_images) to write {CALIBRATION_FILE}")
    parity_images = as_tensor(parity_images)  # a stream's few parity images are held in memory
    if parity_images is None:
        if calib_images is None:
            raise OfaError("the parity check needs real images (parity_images)")
        parity_images, parity_source = as_tensor(calib_images[:256]), "calibration"
    elif parity_source is None:
        parity_source = "given"
    expected_shape = (space.in_channels, space.image_size, space.image_size)
    for name, images in (("calib_images", calib_images), ("parity_images", parity_images)):
        if images is not None and tuple(images.shape[1:]) != expected_shape:
            raise OfaError(f"{name} have shape {tuple(images.shape[1:])} per image, the network expects "
                           f"{expected_shape} (wrong dataset for this run?)")

    preprocessing = _preprocessing(preprocessing, run_dir, space)
    if normalization is None and preprocessing is not None:
        from ..data.preprocessing import normalization_of

        normalization = normalization_of(preprocessing)

    if bn_variance is None:
        from ..run import read_config

        bn_variance = default_variance(read_config(run_dir) if run_dir is not None else None)
    if recalibrated_net is None:
        say(f"extracting {subnet}")
        net = supernet.extract(subnet)
        if recalibrate:
            say("recalibrating BN statistics")
            net = recalibrate_bn(net, measurement_layout(calibration_images(calib_images.to(_device(net)), bn_images,
                                                                            seed), net),
                                variance=bn_variance)
    else:
        net = recalibrated_net
    net = net.eval().to("cpu")

    if isinstance(accuracy, (int, float)):
        accuracy = {"top1": float(accuracy)}
    torch_accuracy = None
    if eval_data is not None:
        from ..evaluate.metrics import evaluate_accuracy

        say("evaluating accuracy")
        images, labels = eval_data
        top1, loss = evaluate_accuracy(net, images.to("cpu"), labels.to("cpu"))
        torch_accuracy = {"top1": top1, "loss": loss}
    elif accuracy is not None:
        accuracy = {**accuracy, "precision": accuracy.get("precision", "fp32")}

    macs, params = cost(space, subnet)
    batch = target.batch
    with staged_directory(out_dir, overwrite=overwrite, inputs=[("run directory", run_dir)]) as tmp:
        say(f"exporting ONNX (opset {target.opset})")
        fp32_path = tmp / (ONNX_FILE if precision == "fp32" else FP32_WORK_FILE)
        onnx_info = export_onnx(
            net, fp32_path, input_shape=expected_shape, opset=target.opset,
            dynamic_batch=target.dynamic_batch, batch=batch, exporter=exporter,
            metadata={"ofa_deploy.subnet": str(subnet), "ofa_deploy.num_classes": space.num_classes,
                      PRECISION_METADATA_KEY: "fp32",
                      **({"ofa_deploy.normalization": json_text(normalization)} if normalization else {}),
                      **({PREPROCESSING_METADATA_KEY: json_text(preprocessing)} if preprocessing else {})},
        )
        static_batch = None if target.dynamic_batch else batch
        say("checking ONNX Runtime against PyTorch")
        parity = check_parity(fp32_path, net, parity_images, batch=static_batch)
        parity["source"] = parity_source
        parity["precision"] = "fp32"
        if strict_parity and not parity["passed"]:
            raise OfaError(f"ONNX Runtime disagrees with PyTorch: max logit difference {parity['max_abs_diff']:.3g} "
                           f"exceeds {parity['tolerance']:.3g}; the export is not trustworthy")
        calibration = array = None

        def calibration_array(count: int) -> np.ndarray:
            # the same seeded draw for every count: a smaller set is a prefix of a larger one
            chosen = as_tensor(calibration_images(calib_images, count, seed + 1))
            return np.ascontiguousarray(chosen.detach().to("cpu", torch.float32).numpy())

        if needs_calibration:
            array = calibration_array(calibration_count)
        conversion = None
        if precision != "fp32":
            say(f"converting to {precision}" + (f" ({calibration_method} calibration)" if precision == "int8" else ""))
            if max_drop is None:
                conversion = convert_precision(fp32_path, tmp / ONNX_FILE, precision, calibration=array,
                                               method=calibration_method, static_batch=static_batch,
                                               for_tensorrt=target.backend == "tensorrt")
            else:
                assert validation is not None and calib_images is not None
                vx, vy = (t.detach().to("cpu").numpy() for t in validation)
                conversion, array = calibrated_within_bound(
                    fp32_path, tmp / ONNX_FILE, calibration_array, calibration_method, calibration_count,
                    len(calib_images), vx, vy, max_drop, static_batch=static_batch,
                    for_tensorrt=target.backend == "tensorrt", progress=say)
                conversion["bound"]["validation"]["source"] = validation_source
                stamp_precision(tmp / ONNX_FILE, precision, fp32_path)
        if array is not None:  # after the conversion: a bound's calibration search may choose more images
            atomic_write(tmp / CALIBRATION_FILE, lambda f: np.save(f, array))
            calibration = {"file": CALIBRATION_FILE, "images": int(array.shape[0]), "seed": seed + 1,
                           "dtype": "float32", "shape": list(array.shape), "split": "train"}
        say("checking the model against fp32")
        precision_parity, accuracy = _precision_checks(
            tmp / ONNX_FILE, fp32_path, precision, parity, parity_images, eval_data, static_batch,
            accuracy, torch_accuracy)
        if fp32_path.name == FP32_WORK_FILE:
            fp32_path.unlink()
        bound = _bound_record(conversion, accuracy, validation_source)
        files = {name: file_entry(tmp / name) for name in (ONNX_FILE, CALIBRATION_FILE) if (tmp / name).is_file()}
        sidecar = {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "subnet": subnet.to_dict(),
            "subnet_text": str(subnet),
            "macs": macs,
            "mflops": round(macs / 1e6, 6),
            "params": params,
            "space": space.to_dict(),
            "resolution": space.image_size,  # the input size it was exported (and BN-recalibrated) at
            "num_classes": space.num_classes,
            "precision": precision,
            "accuracy": accuracy,
            "bn": {"recalibrated": recalibrate, "images": min(bn_images, len(calib_images)) if recalibrate else 0,
                   "seed": seed if recalibrate else None, "variance": bn_variance if recalibrate else None},
            "input": {"name": INPUT_NAME, "shape": ["batch" if target.dynamic_batch else batch, *expected_shape],
                      "layout": target.input_layout, "dtype": "float32", "normalization": normalization},
            "preprocessing": preprocessing,
            "output": {"name": OUTPUT_NAME, "shape": ["batch" if target.dynamic_batch else batch, space.num_classes],
                       "dtype": "float32"},
            "onnx": {"file": ONNX_FILE, **onnx_info, "requested_exporter": exporter,
                     "dynamic_batch": target.dynamic_batch},
            "parity": parity,
            "precision_parity": precision_parity,
            "conversion": conversion,
            "bound": bound,
            "calibration": calibration,
            "target": target.record(),  # the whole definition: build-engine uses it without --target
            "source": run_source(run_dir) if run_dir is not None else None,
            "versions": library_versions("torch", "onnx", "onnxruntime", "onnxconverter-common"),
            "files": files,
        }
        atomic_write_json(tmp / SIDECAR_FILE, sidecar)
    return sidecar


def _preprocessing(record: dict[str, Any] | None, run_dir: str | Path | None, space: Any) -> dict[str, Any] | None:
    """The checked preprocessing record of an export of ``space``'s network: ``record``, else
    one built from ``run_dir``'s config at the network's input size, else None."""
    from ..schemas import check_preprocessing

    if record is None and run_dir is not None:
        from ..data.preprocessing import preprocessing_record
        from ..run import read_config

        record = preprocessing_record(read_config(run_dir), resolution=space.image_size)
    if record is None:
        return None
    check_preprocessing(record, "the preprocessing record")
    if (record["size"], record["channels"], len(record["classes"])) != (space.image_size, space.in_channels,
                                                                         space.num_classes):
        raise OfaError(f"the preprocessing record ({record['size']}x{record['size']}, {record['channels']} channels, "
                       f"{len(record['classes'])} classes) does not fit the network ({space.image_size}x"
                       f"{space.image_size}, {space.in_channels} channels, {space.num_classes} classes)")
    return record


def _precision_checks(path: Path, fp32_path: Path, precision: str, parity: dict[str, Any],
                      parity_images: torch.Tensor, eval_data: tuple[Any, torch.Tensor] | None,
                      static_batch: int | None, accuracy: dict[str, Any] | None,
                      torch_accuracy: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Parity of ``path`` against the fp32 graph (for fp32: the PyTorch check itself) and,
    with ``eval_data``, the ONNX Runtime accuracy of both files on it."""
    images = parity_images.detach().to("cpu", torch.float32).numpy()
    if precision == "fp32":
        precision_parity = {key: parity[key] for key in ("images", "top1_agreement", "max_abs_diff",
                                                         "mean_abs_diff")}
        precision_parity.update(reference="pytorch", metric="max_abs_diff")
    else:
        reference = run_onnx(ort_session(fp32_path), images, batch=static_batch)
        got = run_onnx(ort_session(path), images, batch=static_batch)
        precision_parity = compare_logits(reference, got)
        precision_parity.update(reference="fp32 onnx", provider="CPUExecutionProvider",
                                metric="top1_agreement" if precision == "int8" else "max_abs_diff")
    precision_parity["value"] = precision_parity[precision_parity["metric"]]
    if eval_data is None:
        return precision_parity, accuracy
    sessions = {"this": ort_session(path), "fp32": ort_session(fp32_path) if precision != "fp32" else None}
    correct = {"this": 0, "fp32": 0}
    loss_sum, n = 0.0, 0
    for x, labels in _labelled_chunks(eval_data):  # a stream (val/ folder) one batch at a time
        for name, session in sessions.items():
            if session is None:
                continue
            logits = run_onnx(session, x, batch=static_batch)
            correct[name] += int((logits.argmax(1) == labels).sum())
            if name == "this":
                shifted = logits.astype(np.float64) - logits.max(1, keepdims=True)
                loss_sum += float(np.sum(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(len(labels)), labels]))
        n += int(labels.shape[0])
    if sessions["fp32"] is None:
        correct["fp32"] = correct["this"]
    top1_of = {name: correct[name] / max(1, n) for name in correct}
    images = eval_data[0]
    return precision_parity, {
        "top1": top1_of["this"], "loss": loss_sum / max(1, n), "images": n, "framework": "onnxruntime",
        "provider": "CPUExecutionProvider", "precision": precision, "fp32_top1": top1_of["fp32"],
        "drop_points": round(100 * (top1_of["fp32"] - top1_of["this"]), 4),
        "torch_top1": torch_accuracy["top1"] if torch_accuracy else None,
        **({"streamed": images.describe()} if not isinstance(images, torch.Tensor) else {}),
    }


def _labelled_chunks(eval_data: tuple[Any, torch.Tensor]):
    """(float32 images, int labels) numpy chunks: a tensor pair whole, a stream per batch."""
    images, labels = eval_data
    if isinstance(images, torch.Tensor):
        yield images.detach().to("cpu", torch.float32).numpy(), labels.detach().to("cpu").numpy()
        return
    for x, y in images.to("cpu").batches():
        yield x.numpy(), y.numpy()


def _bound_record(conversion: dict[str, Any] | None, accuracy: dict[str, Any] | None,
                  source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sidecar's ``"bound"`` (None without ``--max-drop``): what ``bounded_int8`` did,
    plus the test drop measured once on the final file (``accuracy``, images kept apart
    from the validation ones)."""
    if not conversion or "bound" not in conversion:
        return None
    bound = conversion.pop("bound")
    test = None
    if accuracy and accuracy.get("drop_points") is not None:
        test = {"split": (source or {}).get("accuracy_split", "test"), "images": accuracy.get("images"),
                "fp32_top1": accuracy.get("fp32_top1"), "top1": accuracy.get("top1"),
                "drop_points": accuracy["drop_points"]}
    return {**bound, "test": test}


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def run_source(run_dir: str | Path) -> dict[str, Any]:
    """Where a model came from: the run directory, its name/method/dataset and the
    checkpoint's file name and SHA-256."""
    from ..run import checkpoint_path, read_config

    run_dir = Path(run_dir).resolve()
    config = read_config(run_dir)
    ckpt = checkpoint_path(run_dir)
    stat = ckpt.stat()
    return {
        "run_dir": str(run_dir),
        "name": config.get("run", {}).get("name"),
        "method": config.get("run", {}).get("method"),
        "dataset": config.get("data", {}).get("dataset"),
        **{k: v for k, v in config.get("data", {}).items() if k in ("data_dir", "data_hash")},  # reloads the data
        "checkpoint": ckpt.name,
        "checkpoint_sha256": _cached_sha256(str(ckpt), stat.st_mtime_ns, stat.st_size),
    }


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    # --all-buckets and catalog builds export many subnets of one checkpoint: hash it once
    return sha256_file(path)

