"""Loading and running engines: ``load_engine`` and ``TrtRunner`` (TensorRT + pycuda, no torch).

Loading first compares ``engine.json`` with this machine (TensorRT version, GPU, compute
capability), the engine file with its hash and, when the export's ``model.json`` is beside
it, the ONNX and precision the engine was built from with the ones the export now holds -
and refuses a mismatch with the command that rebuilds the engine, before deserialising
anything. An engine built for a DLA core is deserialised on that core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import OfaError
from .sidecar import SIDECAR_FILE, read_sidecar
from .trt_env import device_info, import_pycuda, import_tensorrt, make_logger, start
from .trt_plan import ENGINE_SIDECAR, check_against_export, check_engine, read_engine_sidecar


def load_engine(engine_path: str | Path, *, check: bool = True, device: int = 0):
    """Deserialize the engine at ``engine_path`` on GPU ``device`` (after checking its
    ``engine.json`` against this machine and the export beside it unless ``check`` is off).
    The caller holds a CUDA context of that device. Returns (runtime, engine, sidecar or None)."""
    trt = import_tensorrt()
    engine_path = Path(engine_path)
    sidecar = None
    if check:
        sidecar = read_engine_sidecar(engine_path)
        check_engine(engine_path, sidecar, device_info(trt, import_pycuda(device), device))
        if (engine_path.parent / SIDECAR_FILE).is_file():
            check_against_export(engine_path, sidecar, read_sidecar(engine_path.parent))
    elif not engine_path.is_file():
        raise OfaError(f"engine {engine_path} does not exist")
    elif (engine_path.parent / ENGINE_SIDECAR).is_file():
        sidecar = read_engine_sidecar(engine_path)  # unchecked, but it names the DLA core
    runtime = start(trt.Runtime, make_logger(trt, False))
    dla_core = (sidecar or {}).get("dla_core")
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise OfaError(f"TensorRT could not deserialize {engine_path}; rebuild it on this machine")
    return runtime, engine, sidecar


class TrtRunner:
    """Runs one serialized engine with pycuda (no torch).

    ``TrtRunner(path, batch=None, device=0)`` checks ``engine.json`` against GPU ``device``,
    loads the engine and allocates pinned host and device buffers for the largest batch the
    engine takes. ``batch`` (default: the optimization profile's opt batch, or the fixed
    batch) is the batch of ``step()``.

    * ``infer(x)`` - x (N, C, H, W) -> float32 logits (N, classes), synchronous.
    * ``step()`` - one timed-path inference on a fixed random input of ``input_shape``:
      host-to-device copy, ``execute_async_v3``, device-to-host copy, stream synchronise.
      Host timing of ``step()`` is end-to-end latency including transfers.
    * ``device_ms()`` - GPU time of the engine execution alone in the last ``step()`` or
      ``infer()`` (CUDA events around ``execute_async_v3``).
    * ``precision``, ``input_shape``, ``info`` (device and build facts), ``close()``; also a
      context manager.
    """

    def __init__(self, engine_path: str | Path, *, batch: int | None = None, device: int = 0,
                 check: bool = True) -> None:
        trt = import_tensorrt()
        cuda = import_pycuda(device)
        self._cuda = cuda
        self._context_stack = cuda.Device(device).retain_primary_context()
        self._context_stack.push()
        self._closed = False
        try:
            self._runtime, self.engine, sidecar = load_engine(engine_path, check=check, device=device)
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise OfaError(f"TensorRT could not create an execution context for {engine_path} (GPU memory?)")
            self._setup(trt, cuda, engine_path, batch)
            self.precision = (sidecar or {}).get("precision")
            self.info: Dict[str, Any] = {k: (sidecar or {}).get(k) for k in (
                "tensorrt_version", "gpu_name", "compute_capability", "jetson_l4t", "precision", "dla_core",
                "engine_sha256", "onnx_sha256", "subnet_text", "mflops")}
        except BaseException:
            self._context_stack.pop()
            raise

    def _setup(self, trt, cuda, engine_path, batch: Optional[int]) -> None:
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise OfaError(f"{engine_path} has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if shape[0] == -1:
            lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
            self.min_batch, self.max_batch, default = lo[0], hi[0], opt[0]
        else:
            self.min_batch = self.max_batch = default = shape[0]
        self.chw: Tuple[int, ...] = tuple(int(d) for d in shape[1:])
        batch = default if batch is None else batch
        if not self.min_batch <= batch <= self.max_batch:
            raise OfaError(f"{engine_path} takes batches {self.min_batch}..{self.max_batch}, not {batch}; "
                           "rebuild it for a target with that batch size")
        self.input_shape = (batch, *self.chw)
        # fp16 engines may take and give fp16 tensors: the buffers follow the engine's types
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        self._batch: Optional[int] = None
        self._set_batch(self.max_batch)  # output shapes are -1 until every input shape is set
        out_max = tuple(self.context.get_tensor_shape(self.output_name))
        if any(d < 0 for d in out_max):
            raise OfaError(f"{engine_path}: TensorRT cannot tell the output shape for input {self.input_shape}")
        self._host_in = cuda.pagelocked_empty((self.max_batch, *self.chw), in_dtype)
        self._host_out = cuda.pagelocked_empty(out_max, out_dtype)
        self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
        self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self.context.set_tensor_address(self.input_name, int(self._dev_in))
        self.context.set_tensor_address(self.output_name, int(self._dev_out))
        self.stream = cuda.Stream()
        self._start, self._end = cuda.Event(), cuda.Event()
        self._last_device_ms: Optional[float] = None
        self._fixed = np.random.default_rng(0).standard_normal(self.input_shape).astype(in_dtype)
        self._holds_fixed = False

    def _set_batch(self, n: int) -> None:
        if self._batch != n:
            if not self.context.set_input_shape(self.input_name, (n, *self.chw)):
                raise OfaError(f"the engine rejects input shape {(n, *self.chw)}")
            self._batch = n

    def _run(self, n: int) -> np.ndarray:
        cuda = self._cuda
        self._set_batch(n)
        count = n * int(np.prod(self.chw))
        cuda.memcpy_htod_async(self._dev_in, self._host_in.reshape(-1)[:count], self.stream)
        self._start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise OfaError("TensorRT failed to execute the engine")
        self._end.record(self.stream)
        out_count = n * int(np.prod(self._host_out.shape[1:]))
        cuda.memcpy_dtoh_async(self._host_out.reshape(-1)[:out_count], self._dev_out, self.stream)
        self.stream.synchronize()
        self._last_device_ms = self._start.time_till(self._end)
        return self._host_out[:n]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for images ``x`` (N, C, H, W); N within the engine's batch range."""
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.chw or not self.min_batch <= x.shape[0] <= self.max_batch:
            raise OfaError(f"input of shape {x.shape} does not fit the engine: (N, {', '.join(map(str, self.chw))}) "
                           f"with N in {self.min_batch}..{self.max_batch}")
        self._host_in[: x.shape[0]] = x
        self._holds_fixed = False
        return self._run(x.shape[0]).astype(np.float32, copy=True)

    def step(self) -> None:
        """One inference of the fixed input (``input_shape``), synchronised."""
        if not self._holds_fixed:
            self._host_in[: self.input_shape[0]] = self._fixed
            self._holds_fixed = True
        self._run(self.input_shape[0])

    def device_ms(self) -> Optional[float]:
        """Engine execution time on the GPU of the last call, in milliseconds."""
        return self._last_device_ms

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._dev_in.free()
        self._dev_out.free()
        del self.context, self.engine, self._runtime
        self._context_stack.pop()

    def __enter__(self) -> "TrtRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
