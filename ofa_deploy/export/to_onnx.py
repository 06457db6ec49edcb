"""A static PyTorch network -> a checked ONNX file, and its parity with PyTorch.

Exporter choice. ``torch.onnx.export`` has two exporters: the TorchScript tracer
(``dynamo=False``) and the ``torch.export``-based one (``dynamo=True``, the default since
torch 2.9). For these networks (plain convolutions, BN, h-swish, SE, no control flow) both
produce the same function (identical parity), but ``benchmarks/bench_export.py`` measured
the tracer at 0.48 s per subnet against 10.5 s for dynamo (mean of 5 subnets, 3.9-15.1
MFLOPs, one run on a shared 2-core CPU, torch 2.14.1): 22x, which decides catalog build
time. And the tracer writes the requested opset, while dynamo works at opset 18 and here
fails to convert down to 17 (onnx's version converter rejects a Reduce node's axes input),
so its files stay at opset 18, which TensorRT 8.5 (JetPack 5, Xavier) may not parse. So
``exporter="auto"`` uses the tracer and falls back to dynamo only where the tracer fails
or is gone (it is deprecated upstream); ``"torchscript"`` and ``"dynamo"`` force one. The
sidecar records the exporter used and the opset actually in the file.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import OfaError

EXPORTERS = ("auto", "torchscript", "dynamo")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    net: nn.Module,
    path: str | Path,
    *,
    input_shape: tuple[int, int, int],
    opset: int,
    dynamic_batch: bool,
    batch: int = 1,
    exporter: str = "auto",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``net`` (eval mode; (N, C, H, W) float32 -> (N, classes)) to ``path`` as ONNX
    with input ``"input"`` and output ``"logits"``; batch dimension symbolic when
    ``dynamic_batch``, else fixed at ``batch``. The file passes ``onnx.checker`` (full
    check, with shape inference). ``metadata`` is stored in the model's metadata_props.

    Returns ``{"exporter": used, "opset": opset in the file, "requested_opset": opset,
    "seconds": export time}``; the dynamo exporter may keep opset 18 when it cannot convert
    down, and the file's real opset is what is reported.
    """
    if exporter not in EXPORTERS:
        raise OfaError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    path = Path(path)
    net = net.eval()
    # a batch of 2 keeps the tracer/export from specialising a dynamic batch dimension to 1
    example = torch.zeros((2 if dynamic_batch else batch, *input_shape))
    order = ("torchscript", "dynamo") if exporter == "auto" else (exporter,)
    errors: list[str] = []
    for name in order:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
                warnings.simplefilter("ignore")
                _EXPORT[name](net, example, path, opset=opset, dynamic_batch=dynamic_batch)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported or falls back
            errors.append(f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            path.unlink(missing_ok=True)
            continue
        seconds = time.perf_counter() - start
        model = onnx.load(str(path))
        if metadata:
            onnx.helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
            onnx.save(model, str(path))
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise OfaError(f"the {name} exporter wrote an invalid ONNX model: {str(exc).splitlines()[0]}") from None
        opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
        return {"exporter": name, "opset": int(opset_used), "requested_opset": opset, "seconds": round(seconds, 4)}
    raise OfaError(f"ONNX export failed ({'; '.join(errors)})")


@contextmanager
def _quiet_exporter_logs():
    """The dynamo exporter logs warnings and whole tracebacks (e.g. a failed opset
    down-conversion it recovers from) that would bury the CLI's output; the outcome is
    checked and recorded instead."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)


def _export_dynamo(net: nn.Module, example: torch.Tensor, path: Path, *, opset: int, dynamic_batch: bool) -> None:
    shapes = ({"x": {0: torch.export.Dim("batch", min=1, max=4096)}},) if dynamic_batch else None
    program = torch.onnx.export(net, (example,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=shapes[0] if shapes else None,
                                verbose=False)
    program.save(str(path))


_EXPORT = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def ort_session(path: str | Path, *, threads: int = 1):
    """An ONNX Runtime CPU session on ``path`` (parity is always checked on the host CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OfaError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None


def run_onnx(session, images: np.ndarray, *, batch: int | None = None, chunk: int = 128) -> np.ndarray:
    """Logits (N, classes) of ``images`` (N, C, H, W) float32 through ``session``; a model with a
    fixed batch ``batch`` gets exactly that many images per call (the last call padded)."""
    name = session.get_inputs()[0].name
    step = batch or chunk
    outputs = []
    for start in range(0, images.shape[0], step):
        x = images[start : start + step]
        n = x.shape[0]
        if batch and n < batch:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        outputs.append(session.run(None, {name: np.ascontiguousarray(x)})[0][:n])
    return np.concatenate(outputs)


@torch.no_grad()
def check_parity(
    onnx_path: str | Path,
    reference: nn.Module,
    images: torch.Tensor,
    *,
    batch: int | None = None,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """ONNX Runtime (CPU) against ``reference`` (eval mode) on ``images`` (N, C, H, W).

    Returns max and mean absolute logit difference, the largest reference logit magnitude,
    top-1 agreement (fraction of images whose argmax is the same), the tolerance
    ``atol * max(1, max |reference logit|)`` (fp32 rounding grows with the logits'
    magnitude) and whether the max difference is within it.
    """
    if images.shape[0] == 0:
        raise OfaError("parity needs at least one image")
    reference = reference.eval()
    x = images.detach().to("cpu", torch.float32)
    expected = torch.cat([reference(x[i : i + 256]) for i in range(0, x.shape[0], 256)]).numpy()
    got = run_onnx(ort_session(onnx_path), x.numpy(), batch=batch)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = float(np.abs(expected).max())
    tolerance = atol * max(1.0, scale)
    return {
        "images": int(x.shape[0]),
        "provider": "CPUExecutionProvider",
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_logit": scale,
        "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        "tolerance": tolerance,
        "passed": bool(diff.max() <= tolerance),
    }
