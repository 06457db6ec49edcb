"""Latency backends: each turns a model file into a ``Runner`` whose ``step()`` runs one
synchronous inference on a fixed random input.

* ``onnxruntime`` - CPU or CUDA execution provider (on CUDA the input and output stay on
  the GPU through IO binding, so the host-timed latency excludes transfers and says so);
* ``tensorrt`` - a serialized engine, through ``ofa_deploy.export.tensorrt.TrtRunner``
  (TensorRT + pycuda), which also reports the device compute time of every call;
* ``torch`` - the extracted subnet in eager mode (or, on CUDA, replayed as a CUDA graph),
  for comparison.

On CUDA (torch backend, and onnxruntime's CUDA provider when torch is importable) two CUDA
events around each call give the device time apart from the host latency, as TensorRT's
runner does; a CUDA-graph replay removes the per-kernel launch cost from both. Only GPU
machines run those lines. Only the torch backend and the CUDA event timer import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import OfaError

BACKENDS = ("onnxruntime", "tensorrt", "torch")

_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                     "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class Runner:
    """One loaded model ready to time.

    ``step()`` runs batch ``input_shape[0]`` once and returns when the result is ready.
    ``device_ms()``, where present, is the device compute time of the last step.
    ``latency_kind`` names what host timing of ``step()`` covers.
    """

    backend: str
    step: Callable[[], None]
    input_shape: tuple[int, ...]
    latency_kind: str = "host"
    provider: Optional[str] = None
    precision: Optional[str] = None
    device_ms: Optional[Callable[[], Optional[float]]] = None
    info: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def random_input(shape: Sequence[int], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def onnxruntime_runner(
    onnx_path: str | Path,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 0,
    batch: Optional[int] = None,
    cuda_graph: bool = False,
) -> Runner:
    """An ONNX Runtime session on the first of ``providers`` that is available.

    On the CUDA provider the input and outputs stay on the GPU (IO binding), CUDA events
    give the device time when torch is importable, and ``cuda_graph`` turns on ORT's own
    CUDA-graph capture (``enable_cuda_graph``: one replay per run, inputs at fixed addresses,
    which the IO binding gives).

    ``threads`` sets intra-op threads (0 = ORT's default, one per physical core); inter-op
    is 1 and execution sequential, the usual single-stream latency setting. Raises
    ``OfaError`` if the file is not a model ORT can load, or the provider is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise OfaError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from None
    wanted = [_PROVIDER_ALIASES.get(p.lower(), p) for p in providers] or ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    usable: list[str | tuple[str, dict[str, str]]] = [p for p in wanted if p in available]
    if not usable:
        raise OfaError(
            f"none of the providers {wanted} is available in this onnxruntime ({', '.join(available)}); "
            "install onnxruntime-gpu for CUDA"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    timer = _CudaEventTimer.create() if usable[0] == "CUDAExecutionProvider" else None
    if cuda_graph and usable[0] != "CUDAExecutionProvider":
        raise OfaError(f"--cuda-graph needs onnxruntime's CUDAExecutionProvider; this run would use {usable[0]}")
    if usable[0] == "CUDAExecutionProvider" and (timer is not None or cuda_graph):
        options: dict[str, str] = {}
        if timer is not None:  # ORT launches on our stream, so events on it bracket its kernels
            options["user_compute_stream"] = str(timer.stream_handle)
        if cuda_graph:
            options["enable_cuda_graph"] = "1"
        usable = [("CUDAExecutionProvider", options), *usable[1:]]
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=usable)
    except Exception as exc:  # ORT raises its own exception types for every load failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        how = " with enable_cuda_graph (every node must run on the CUDA provider)" if cuda_graph else ""
        raise OfaError(f"{onnx_path} is not a model onnxruntime can load{how}: {first}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise OfaError(f"{onnx_path} has {len(inputs)} inputs; profiling expects one image input")
    if inputs[0].type not in ("tensor(float)", "tensor(float16)"):
        raise OfaError(f"{onnx_path}'s input {inputs[0].name!r} is a {inputs[0].type}; profiling feeds random "
                       f"images, so the input must be a float or float16 tensor")
    shape = _concrete_shape(inputs[0].shape, batch, onnx_path)
    dtype = np.float16 if "float16" in inputs[0].type else np.float32
    x = random_input(shape, dtype)
    name = inputs[0].name
    provider = session.get_providers()[0]
    device_ms = None
    if provider == "CUDAExecutionProvider":
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for out in session.get_outputs():
            if cuda_graph:  # a replayed graph writes where it wrote when captured: fixed output buffers
                dims = [shape[0]] + [d if isinstance(d, int) and d > 0 else 1 for d in out.shape[1:]]
                out_type = np.float16 if "float16" in out.type else np.float32
                binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_shape_and_type(
                    dims, out_type, "cuda", 0))
            else:
                binding.bind_output(out.name, "cuda")

        def step() -> None:
            if timer is not None:
                timer.start()
            session.run_with_iobinding(binding)
            if timer is not None:
                timer.stop()

        kind = "host_device_resident_io"
        device_ms = timer.elapsed_ms if timer is not None else None
    else:
        feed = {name: x}

        def step() -> None:
            session.run(None, feed)

        kind = "host"
    return Runner(
        backend="onnxruntime",
        step=step,
        input_shape=shape,
        latency_kind=kind,
        provider=provider,
        precision=_onnx_precision(session, dtype),
        device_ms=device_ms,
        info={"intra_op_threads": opts.intra_op_num_threads, "providers": session.get_providers()},
    )


class _CudaEventTimer:
    """Device time of one call: CUDA events recorded before and after it on one stream
    (torch's CUDA bindings; ``create`` returns ``None`` without torch or CUDA, and the
    runner then reports host latency only). Only a GPU runs this."""

    def __init__(self, torch: Any, stream: Any) -> None:
        self.stream = stream
        self.stream_handle = stream.cuda_stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    @classmethod
    def create(cls, stream: Any = None) -> "Optional[_CudaEventTimer]":
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            return None
        return cls(torch, stream if stream is not None else torch.cuda.Stream())

    def start(self) -> None:
        self._start.record(self.stream)

    def stop(self) -> None:
        self._end.record(self.stream)
        self._end.synchronize()

    def elapsed_ms(self) -> float:
        return self._start.elapsed_time(self._end)


def _onnx_precision(session: Any, input_dtype: Any) -> str:
    """What the model carries: the precision ``export`` stamped in its metadata (an fp16 or
    int8 export keeps a float32 input, so the input type alone says fp32), else by input type."""
    stamped = session.get_modelmeta().custom_metadata_map.get("ofa_deploy.precision")
    if stamped in ("fp32", "fp16", "int8"):
        return stamped
    return "fp16" if input_dtype == np.float16 else "fp32"


def _concrete_shape(dims: Sequence[Any], batch: Optional[int], path: Any) -> tuple[int, ...]:
    """The model's input shape with its batch dimension set to ``batch``."""
    if not dims:
        raise OfaError(f"{path} has a scalar input; profiling expects (N, C, H, W)")
    first = dims[0]
    if isinstance(first, int) and first > 0:
        if batch is not None and batch != first:
            raise OfaError(f"{path} has a static batch of {first}, not {batch}; re-export with a dynamic batch")
        shape = [first]
    else:
        shape = [batch or 1]
    for i, d in enumerate(dims[1:], start=1):
        if not isinstance(d, int) or d <= 0:
            raise OfaError(f"{path} has a symbolic dimension {d!r} at axis {i}; only the batch may be dynamic")
        shape.append(d)
    return tuple(shape)


def tensorrt_runner(engine_path: str | Path, *, batch: Optional[int] = None) -> Runner:
    """A serialized TensorRT engine: host timing of ``step()`` is end to end (copies in and
    out included); CUDA events around the execution give the device compute time."""
    from ..export.trt_runtime import TrtRunner  # imports neither tensorrt nor pycuda until it runs

    trt = TrtRunner(str(engine_path), batch=batch)  # OfaError naming what is missing or broken
    return Runner(
        backend="tensorrt",
        step=trt.step,
        input_shape=tuple(trt.input_shape),
        latency_kind="host_with_transfers",
        precision=getattr(trt, "precision", None),
        device_ms=trt.device_ms,
        info=dict(getattr(trt, "info", {}) or {}),
        close=getattr(trt, "close", lambda: None),
    )


def torch_runner(sidecar: dict[str, Any], *, threads: int = 0, batch: Optional[int] = None, device: str = "cpu",
                 cuda_graph: bool = False) -> Runner:
    """The sidecar's subnet rebuilt as a static eager network (random weights: latency does
    not depend on their values), under ``torch.inference_mode``.

    ``device="cuda"``: on the GPU, timed with CUDA events (device time) besides the host
    latency; ``cuda_graph``: the forward captured once as a CUDA graph and each step one
    replay (no per-kernel launches). Both raise ``OfaError`` without CUDA."""
    try:
        import torch
    except ImportError:
        raise OfaError("the torch backend needs torch; use --backend onnxruntime on machines without it") from None
    from ..nn.static import StaticSubnet
    from ..space import SearchSpace, Subnet

    if "space" not in sidecar or "subnet" not in sidecar:
        raise OfaError("the torch backend needs an export directory whose model.json has space and subnet")
    space = SearchSpace.from_dict(sidecar["space"])
    subnet = Subnet.from_dict(sidecar["subnet"], space)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise OfaError(f"--device {device!r}: use cpu or cuda")
    if device != "cpu" and not torch.cuda.is_available():
        raise OfaError(f"--device {device}: torch sees no CUDA device on this machine; use --device cpu")
    if cuda_graph and device == "cpu":
        raise OfaError("cuda_graph replay needs --device cuda")
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    net = StaticSubnet(space, subnet).eval()
    shape = (batch or 1, space.in_channels, space.image_size, space.image_size)
    x = torch.from_numpy(random_input(shape))
    if device != "cpu":
        return _torch_cuda_runner(torch, net, x, torch.device(device), cuda_graph,
                                  close=lambda: torch.set_num_threads(saved_threads))

    def step() -> None:
        with torch.inference_mode():
            net(x)

    return Runner(backend="torch", step=step, input_shape=shape, latency_kind="host", provider="eager",
                  precision="fp32", info={"torch_threads": torch.get_num_threads()},
                  close=lambda: torch.set_num_threads(saved_threads))  # the caller's torch, as it was


def _torch_cuda_runner(torch: Any, net: Any, x: Any, device: Any, cuda_graph: bool,
                       close: Callable[[], None]) -> Runner:
    """The torch backend on a GPU: CUDA events around every call on the current stream;
    with ``cuda_graph`` the forward is captured once (after a warm-up on a side stream, as
    PyTorch's CUDA-graphs notes require) and every step is one replay. Only a GPU runs this."""
    net = net.to(device)
    x = x.to(device)
    with torch.cuda.device(device):
        timer = _CudaEventTimer.create(torch.cuda.current_stream(device))
        assert timer is not None  # None only without torch or CUDA, and the net is on the GPU now
        run: Callable[[], Any]
        if cuda_graph:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.inference_mode():
                with torch.cuda.stream(side):
                    for _ in range(3):
                        net(x)
                torch.cuda.current_stream(device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph):
                        net(x)
                except Exception as exc:  # an op that cannot be captured
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise OfaError(f"CUDA graph capture of the torch model failed: {first}; profile without "
                                   "--cuda-graph") from None
            run = graph.replay
        else:
            def run() -> None:
                with torch.inference_mode():
                    net(x)

    def step() -> None:
        timer.start()
        run()
        timer.stop()

    return Runner(backend="torch", step=step, input_shape=tuple(x.shape), latency_kind="host_device_resident_io",
                  provider="cuda_graph" if cuda_graph else "eager", precision="fp32", device_ms=timer.elapsed_ms,
                  info={"device": str(device), "gpu": torch.cuda.get_device_name(device),
                        "cuda_graph": cuda_graph}, close=close)
