"""``profile_model``: measure one model's latency on this machine under a target's protocol."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import OfaError
from .backends import BACKENDS, Runner, onnxruntime_runner, tensorrt_runner, torch_runner
from .environment import environment
from .model import ModelFiles, model_identity, resolve_model
from .protocol import Protocol, measure


def choose_backend(target: Any, files: ModelFiles, backend: Optional[str]) -> tuple[str, Optional[str]]:
    """(backend to use, why the target's own backend was not used or ``None``).

    An explicit ``backend`` wins. Otherwise the target's; a TensorRT target falls back to
    its ``fallback_backend`` when TensorRT is not installed here or there is no engine -
    and the result says so."""
    if backend is not None:
        if backend not in BACKENDS:
            raise OfaError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend, None
    wanted = target.backend
    if wanted == "tensorrt":
        reason = None
        if files.engine is None:
            reason = "no TensorRT engine given"
        elif importlib.util.find_spec("tensorrt") is None:
            reason = "TensorRT is not installed here"
        if reason:
            if target.fallback_backend and files.onnx is not None:
                return target.fallback_backend, f"{reason}; used the target's fallback {target.fallback_backend}"
            raise OfaError(f"target {target.name} runs TensorRT engines but {reason}; "
                           "build one with `ofa-deploy build-engine` or pass --backend onnxruntime")
    return wanted, None


def backend_mismatch(target: Any, backend: Optional[str], provider: Optional[str] = None,
                     fallback: Optional[str] = None) -> Optional[str]:
    """Why a measurement made with ``backend`` (and ONNX Runtime ``provider``) is not one of
    ``target`` (whose backend and first provider say how it runs), or ``None`` when it is.
    ``fallback``: the profiler's own note (a fallback it took), kept in the reason."""
    got = f"{backend or 'unknown'}" + (f"/{provider}" if provider else "")
    wanted = target.backend + (f"/{target.providers[0]}" if target.backend == "onnxruntime" and target.providers
                               else "")
    if backend != target.backend or (backend == "onnxruntime" and target.providers and provider
                                     and provider != target.providers[0]):
        why = f"measured with {got}, but target {target.name} runs {wanted}"
        return f"{why} ({fallback})" if fallback else why
    return None


def gpu_target(target: Any) -> bool:
    """Whether ``target`` runs on an NVIDIA GPU (TensorRT, or ONNX Runtime's CUDA/TensorRT providers first)."""
    return target.backend == "tensorrt" or bool(target.providers and target.providers[0].startswith(("CUDA",
                                                                                                      "Tensorrt")))


def _torch_device(target: Any) -> str:
    """The torch backend's device without ``--device``: CUDA for a GPU target when torch sees
    one, else the CPU (as before ``--device`` existed)."""
    if not gpu_target(target):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"  # torch_runner says torch is missing
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_runner(target: Any, files: ModelFiles, backend: str, *, batch: int, threads: int,
                device: Optional[str] = None, cuda_graph: bool = False) -> tuple[Runner, Path]:
    """``device`` (``cpu``/``cuda``, ``None`` = the target's) applies to onnxruntime and torch;
    ``cuda_graph`` to onnxruntime's CUDA provider and torch on CUDA."""
    used = files.file_for(backend)
    if device is not None and device not in ("cpu", "cuda"):
        raise OfaError(f"--device {device!r}: use cpu or cuda")
    if backend == "onnxruntime":
        providers = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider",)}.get(
            device or "", target.providers)
        return onnxruntime_runner(used, providers=providers, threads=threads, batch=batch,
                                  cuda_graph=cuda_graph), used
    if backend == "tensorrt":
        if device == "cpu" or cuda_graph:
            raise OfaError("the tensorrt backend runs on its GPU: --device cpu and --cuda-graph do not apply to it")
        return tensorrt_runner(used, batch=batch), used
    return torch_runner(files.sidecar or {}, threads=threads, batch=batch, device=device or _torch_device(target),
                        cuda_graph=cuda_graph), used


def profile_model(
    model: str | Path,
    target: Any = "cpu",
    *,
    batch: Optional[int] = None,
    backend: Optional[str] = None,
    threads: Optional[int] = None,
    protocol: Optional[Protocol] = None,
    on_attempt: Optional[Callable[[int, float], None]] = None,
    device: Optional[str] = None,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """Measure ``model`` (ONNX file, engine, or export directory) on this machine.

    ``device`` (``cpu`` or ``cuda``; default the target's) and ``cuda_graph`` (replay a
    captured CUDA graph per call) apply to the onnxruntime and torch backends.

    ``target`` is a ``Target`` or a name/path for ``load_target``; its protocol, batch,
    threads and backend apply unless overridden. Returns the JSON-ready result::

        {"latency_ms": {"min","mean","std","p50","p90","p95","p99","max"}, "n", "cov",
         "unstable", "latency_kind", "host_latency_ms", "device_latency_ms",
         "throughput_per_s", "attempts", "protocol", "target", "backend", "provider",
         "fallback", "backend_mismatch" (why this is not a measurement of the target, or None),
         "target_backend",
         "precision", "batch", "input_shape", "model": {path, format, sha256, onnx_sha256, subnet?, macs?},
         "environment": {...}}
    """
    from ..targets import load_target

    if not hasattr(target, "backend"):
        target = load_target(target)
    files = resolve_model(model)
    used_backend, fallback = choose_backend(target, files, backend)
    batch = int(batch if batch is not None else target.batch)
    if batch < 1:
        raise OfaError(f"batch={batch} must be at least 1")
    threads = int(target.threads if threads is None else threads)
    protocol = protocol or Protocol.from_target(target)
    runner, used = load_runner(target, files, used_backend, batch=batch, threads=threads, device=device,
                               cuda_graph=cuda_graph)
    try:
        stats = measure(runner.step, protocol, batch=runner.input_shape[0], device_ms=runner.device_ms,
                        on_attempt=on_attempt)
    finally:
        runner.close()
    if stats["device_latency_ms"] is None:
        stats["latency_kind"] = runner.latency_kind
    if used_backend == "onnxruntime" and target.providers and runner.provider != target.providers[0]:
        note = f"{target.providers[0]} is not available here; ran on {runner.provider}"
        fallback = f"{fallback}; {note}" if fallback else note
    if used_backend == "torch" and device is None and gpu_target(target) and "device" not in runner.info:
        note = "torch sees no CUDA device here; the torch backend ran on the CPU"
        fallback = f"{fallback}; {note}" if fallback else note
    mismatch = backend_mismatch(target, used_backend, runner.provider, fallback)
    gpu = used_backend == "tensorrt" or (runner.provider or "").startswith(("CUDA", "Tensorrt")) \
        or "gpu" in runner.info
    return {
        **stats,
        "target": target.name,
        "backend": used_backend,
        "fallback": fallback,
        # not None: this is not a measurement of the target (another backend or device);
        # `catalog import` refuses it unless told (--allow-backend-mismatch)
        "backend_mismatch": mismatch,
        "target_backend": target.backend,
        "provider": runner.provider,
        "precision": runner.precision or target.precision,
        "batch": runner.input_shape[0],
        "input_shape": list(runner.input_shape),
        "threads": threads,
        "runner": runner.info,
        "model": model_identity(files, used),
        "environment": environment(threads=threads, gpu=gpu),
    }
