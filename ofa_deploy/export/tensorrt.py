"""TensorRT engines: build them from an export directory, check and load them, run them.

Needs ``tensorrt`` and ``pycuda`` (``pip install 'ofa-deploy[trt]'``, or JetPack's TensorRT
plus pycuda on a Jetson), never torch; both are imported only when an engine is built or
run, so this module imports anywhere and its pure parts (``engine_plan``,
``engine_mismatches``, ``calibration_batches``, ``timing_cache_path``) are tested without
a GPU.

Building (``build_engine(export_dir, target)``) writes beside ``model.onnx``:

* ``model.engine`` - the serialized engine: fp32, fp16 or int8 as the target says; an
  optimization profile min/opt/max = ``target.trt_shapes`` when the ONNX batch is dynamic;
  the builder optimization level and workspace of the target; on DLA when ``dla_core`` is
  set (layers DLA cannot run fall back to the GPU).
* ``engine.json`` - its sidecar: TensorRT version, GPU name, compute capability, Jetson
  L4T release, precision, shapes, build settings and time, SHA-256 of the engine, of the
  ONNX and of the calibration data it came from.
* ``calibration.cache`` - int8 only: the calibrator's scales, reused by the next build.

A per-device **timing cache** (``timing_cache_path``: one file per GPU, compute capability
and TensorRT version under ``$OFA_DEPLOY_CACHE/tensorrt``) is loaded before and saved after
every build: OFA subnets share block shapes, so later subnets of a catalog reuse the kernel
timings of earlier ones, which is the main lever on catalog build time.

Loading (``load_engine``, ``TrtRunner``) first compares ``engine.json`` with this machine
(TensorRT version, GPU, compute capability) and the engine file's hash, and refuses a
mismatch with the command that rebuilds the engine - before deserialising anything.

``TrtRunner(engine_path, batch=None)`` is the runtime the profiler's TensorRT backend uses:
pycuda device buffers and a stream; ``infer(x)`` returns logits for any batch the engine
accepts; ``step()`` runs one inference on a fixed random input (host-to-device copy, the
engine, device-to-host copy, synchronised) and ``device_ms()`` then gives the engine's own
execution time on the GPU, measured with CUDA events around ``execute_async_v3`` only.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import OfaError
from ..io import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from ..targets import Target, load_target
from .sidecar import CALIBRATION_FILE, INDEX_FILE, ONNX_FILE, read_sidecar, verify_files

ENGINE_FILE = "model.engine"
ENGINE_SIDECAR = "engine.json"
CALIBRATION_CACHE = "calibration.cache"
ENGINE_FORMAT = "ofa-deploy/engine"
ENGINE_FORMAT_VERSION = 1
CALIBRATION_BATCH = 32
INSTALL_HINT = ("install TensorRT's Python bindings and pycuda: `pip install 'ofa-deploy[trt]'` on a desktop "
                "NVIDIA GPU, or JetPack's TensorRT (python3-libnvinfer) plus `pip install pycuda` on a Jetson")


# -- environment -----------------------------------------------------------------------
def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package can be imported here (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def _tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise OfaError(f"TensorRT is not installed on this machine; {INSTALL_HINT}") from None
    return tensorrt


def _pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise OfaError(f"pycuda is not installed on this machine; {INSTALL_HINT}") from None
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise OfaError("no CUDA GPU is visible on this machine")
    except cuda.Error as exc:
        raise OfaError(f"CUDA is not usable on this machine: {exc}") from None
    return cuda


def jetson_release() -> str | None:
    """The L4T release line of a Jetson (``/etc/nv_tegra_release``), None elsewhere."""
    path = Path("/etc/nv_tegra_release")
    try:
        return path.read_text().splitlines()[0].strip() if path.is_file() else None
    except (OSError, IndexError):
        return None


def device_info(device: int = 0) -> dict[str, Any]:
    """What an engine is tied to on this machine: TensorRT version, GPU name, compute
    capability (``"8.7"``), CUDA driver version and, on a Jetson, the L4T release."""
    trt = _tensorrt()
    cuda = _pycuda()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": dev.name(),
        "compute_capability": f"{major}.{minor}",
        "cuda_driver": cuda.get_driver_version(),
        "jetson_l4t": jetson_release(),
    }


def cache_root() -> Path:
    """``$OFA_DEPLOY_CACHE`` or ``~/.cache/ofa-deploy`` (shared with the dataset cache)."""
    return Path(os.environ.get("OFA_DEPLOY_CACHE") or Path.home() / ".cache" / "ofa-deploy")


def timing_cache_path(info: dict[str, Any], root: Path | None = None) -> Path:
    """The per-device timing cache file: one per GPU name, compute capability and
    TensorRT version (a cache from another combination is useless to TensorRT)."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(info["gpu_name"]).lower()).strip("-") or "gpu"
    cc = str(info["compute_capability"]).replace(".", "")
    return (root or cache_root()) / "tensorrt" / f"{slug}-sm{cc}-trt{info['tensorrt_version']}.timing"


# -- pure build logic ------------------------------------------------------------------
def engine_plan(target: Target, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The builder settings for ``target`` and an ONNX input of ``input_shape`` (N, C, H, W;
    N = -1 when the batch is dynamic): precision flags, DLA, the optimization profile
    (min/opt/max shapes, dynamic batch only), the int8 calibration batch, workspace and
    optimization level. Raises ``OfaError`` for combinations TensorRT cannot build."""
    _require_tensorrt_target(target)
    if len(input_shape) != 4 or any(d <= 0 for d in input_shape[1:]):
        raise OfaError(f"the ONNX input must be (N, C, H, W) with fixed C, H, W, not {tuple(input_shape)}")
    dynamic = input_shape[0] == -1
    chw = tuple(int(d) for d in input_shape[1:])
    if dynamic:
        lo, opt, hi = target.trt_shapes
        profile = {"min": (lo, *chw), "opt": (opt, *chw), "max": (hi, *chw)}
        calibration_batch = CALIBRATION_BATCH
    else:
        static = int(input_shape[0])
        if any(b != static for b in target.batch_sizes):
            raise OfaError(f"the ONNX has a fixed batch of {static} but target {target.name} wants batch sizes "
                           f"{list(target.batch_sizes)}; re-export for this target")
        profile = None
        calibration_batch = static
    return {
        "precision": target.precision,
        "fp16": target.precision in ("fp16", "int8"),
        "int8": target.precision == "int8",
        "dla_core": target.dla_core,
        "gpu_fallback": target.dla_core is not None,
        "dynamic_batch": dynamic,
        "profile": profile,
        "calibration_batch": calibration_batch,
        "workspace_bytes": target.workspace_mb << 20,
        "builder_optimization_level": target.builder_optimization_level,
        "timing_cache": target.timing_cache,
    }


def _require_tensorrt_target(target: Target) -> None:
    if target.backend != "tensorrt":
        raise OfaError(f"target {target.name} runs {target.backend}, not TensorRT; pass a TensorRT target "
                       "(e.g. cuda, jetson-orin, jetson-xavier)")


def calibration_batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split calibration images (N, C, H, W) float32 into contiguous batches of exactly
    ``batch_size`` (TensorRT's calibrator has one batch size); the remainder that does not
    fill a batch is dropped. Raises ``OfaError`` when not even one batch can be formed."""
    if images.ndim != 4:
        raise OfaError(f"calibration images must be (N, C, H, W), not shape {images.shape}")
    if batch_size < 1 or images.shape[0] < batch_size:
        raise OfaError(f"{images.shape[0]} calibration images cannot fill one batch of {batch_size}; "
                       "re-export with more --calibration-images")
    images = np.ascontiguousarray(images, dtype=np.float32)
    count = images.shape[0] // batch_size
    return [np.ascontiguousarray(images[i * batch_size : (i + 1) * batch_size]) for i in range(count)]


def engine_mismatches(built: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What differs between the machine an engine was built on (its ``engine.json``) and
    this one (``device_info()``): TensorRT version, compute capability, GPU name. Empty when
    the engine can be loaded."""
    problems = []
    if built.get("tensorrt_version") != here.get("tensorrt_version"):
        problems.append(f"TensorRT {built.get('tensorrt_version')} (here {here.get('tensorrt_version')})")
    if str(built.get("compute_capability")) != str(here.get("compute_capability")):
        problems.append(f"compute capability {built.get('compute_capability')} "
                        f"(here {here.get('compute_capability')})")
    if built.get("gpu_name") != here.get("gpu_name"):
        problems.append(f"GPU {built.get('gpu_name')!r} (here {here.get('gpu_name')!r})")
    return problems


def check_engine(engine_path: str | Path, built: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise ``OfaError`` (saying what to rebuild, and how) when the engine at
    ``engine_path`` does not fit this machine or differs from the file its sidecar hashed."""
    engine_path = Path(engine_path)
    rebuild = built.get("rebuild_command") or f"ofa-deploy build-engine {engine_path.parent}"
    problems = engine_mismatches(built, here)
    if problems:
        raise OfaError(f"engine {engine_path} was built for {'; '.join(problems)}; rebuild it on this machine: "
                       f"{rebuild}")
    if sha256_file(engine_path) != built.get("engine_sha256"):
        raise OfaError(f"engine {engine_path} does not match the SHA-256 in its {ENGINE_SIDECAR}; rebuild it: "
                       f"{rebuild}")


def read_engine_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The ``engine.json`` beside an engine file."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise OfaError(f"engine {engine_path} does not exist")
    path = engine_path.parent / ENGINE_SIDECAR
    if not path.is_file():
        raise OfaError(f"engine {engine_path} has no {ENGINE_SIDECAR} beside it, so it cannot be checked against "
                       f"this device; rebuild it with `ofa-deploy build-engine {engine_path.parent}`")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise OfaError(f"{path} is not an ofa-deploy engine sidecar")
    return data


# -- building --------------------------------------------------------------------------
def build_engine(
    export_dir: str | Path,
    target: Target | str | None = None,
    *,
    out_dir: str | Path | None = None,
    timing_cache: str | Path | None = None,
    use_timing_cache: bool | None = None,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build ``model.engine`` + ``engine.json`` for ``target`` (default: the one the export
    was made for) from the export directory ``export_dir``, into ``out_dir`` (default the
    export directory). ``timing_cache`` overrides the per-device cache file;
    ``use_timing_cache`` overrides the target's ``timing_cache`` setting.

    Returns the engine sidecar. ``OfaError`` if TensorRT/pycuda/a GPU is missing, the
    export is damaged, the target must be built on a Jetson and this is not one, or
    TensorRT fails (with its own error lines).
    """
    say = progress or (lambda message: None)
    export_dir = Path(export_dir)
    model = read_sidecar(export_dir)
    verify_files(export_dir, model)
    target_arg = target
    target = _resolve_target(target, model)
    _require_tensorrt_target(target)
    trt = _tensorrt()
    cuda = _pycuda()
    if target.build_on_device and jetson_release() is None:
        raise OfaError(f"target {target.name} engines must be built on the Jetson itself (its TensorRT and GPU); "
                       f"copy {export_dir} there and run `ofa-deploy build-engine {export_dir} --target "
                       f"{target.name}`")
    if not hasattr(trt, "BuilderFlag") or not hasattr(trt.BuilderFlag, "FP16"):
        raise OfaError(f"TensorRT {trt.__version__} builds strongly typed networks only (no fp16/int8 builder "
                       "flags); use TensorRT 8.6-10.x")
    info = device_info()
    out_dir = Path(out_dir) if out_dir is not None else export_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # TensorRT works in the device's primary context; pycuda (the int8 calibrator's buffer)
    # must use the same one
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        return _build(trt, cuda, export_dir, model, target, target_arg, info, out_dir, timing_cache,
                      use_timing_cache, verbose, say)
    finally:
        context.pop()


def _build(trt, cuda, export_dir: Path, model: dict[str, Any], target: Target, target_arg, info: dict[str, Any],
           out_dir: Path, timing_cache, use_timing_cache, verbose: bool, say: Callable[[str], None]) -> dict[str, Any]:
    logger = _make_logger(trt, verbose)
    builder = trt.Builder(logger)
    explicit = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(
        trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    say("parsing ONNX")
    if not parser.parse((export_dir / ONNX_FILE).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OfaError(f"TensorRT cannot parse {export_dir / ONNX_FILE}: {'; '.join(errors) or 'unknown error'}")
    inp = network.get_input(0)
    plan = engine_plan(target, tuple(inp.shape))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_bytes"])
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = plan["builder_optimization_level"]
    if plan["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan["dla_core"] is not None:
        if builder.num_DLA_cores <= plan["dla_core"]:
            raise OfaError(f"target {target.name} asks for DLA core {plan['dla_core']}, this device has "
                           f"{builder.num_DLA_cores} DLA cores (an Orin Nano has none: use jetson-orin)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan["dla_core"]
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if plan["profile"] is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, plan["profile"]["min"], plan["profile"]["opt"], plan["profile"]["max"])
        config.add_optimization_profile(profile)

    calibrator = None
    calibration_cache = out_dir / CALIBRATION_CACHE
    if plan["int8"]:
        if not (export_dir / CALIBRATION_FILE).is_file():
            raise OfaError(f"int8 needs {CALIBRATION_FILE} in {export_dir}; re-export for an int8 target")
        images = np.load(export_dir / CALIBRATION_FILE)
        batches = calibration_batches(images, min(plan["calibration_batch"], images.shape[0]))
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, cuda, batches, calibration_cache)
        config.int8_calibrator = calibrator
        if plan["profile"] is not None:
            shape = batches[0].shape
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(inp.name, shape, shape, shape)
            config.set_calibration_profile(calibration_profile)

    cache_file = None
    cache_before = None
    if plan["timing_cache"] if use_timing_cache is None else use_timing_cache:
        cache_file = Path(timing_cache) if timing_cache is not None else timing_cache_path(info)
        cache_before = cache_file.read_bytes() if cache_file.is_file() else b""
        cache = config.create_timing_cache(cache_before)
        if cache is None:  # a damaged cache file: start afresh rather than fail the build
            cache_before = b""
            cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    say(f"building the {plan['precision']} engine")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "no error message (rerun with --verbose)"
        raise OfaError(f"TensorRT failed to build the engine for {export_dir}: {detail}")
    engine_path = atomic_write_bytes(out_dir / ENGINE_FILE, bytes(memoryview(serialized)))
    timing = None
    if cache_file is not None:
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        atomic_write_bytes(cache_file, data)
        timing = {"path": str(cache_file), "bytes_before": len(cache_before), "bytes_after": len(data),
                  "reused": len(cache_before) > 0}

    output = network.get_output(0)
    target_name = target_arg if isinstance(target_arg, str) else target.name
    sidecar = {
        "format": ENGINE_FORMAT,
        "format_version": ENGINE_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "engine_file": ENGINE_FILE,
        "engine_sha256": sha256_file(engine_path),
        "engine_bytes": engine_path.stat().st_size,
        **info,
        "precision": plan["precision"],
        "dla_core": plan["dla_core"],
        "input": {"name": inp.name, "shape": list(inp.shape), "profile": _profile_json(plan["profile"])},
        "output": {"name": output.name, "shape": list(output.shape)},
        "builder_optimization_level": plan["builder_optimization_level"],
        "workspace_mb": target.workspace_mb,
        "timing_cache": timing,
        "build_seconds": round(seconds, 3),
        "onnx_sha256": model["files"][ONNX_FILE]["sha256"],
        "calibration_sha256": (model["files"].get(CALIBRATION_FILE) or {}).get("sha256") if plan["int8"] else None,
        "calibration_cache_sha256": sha256_file(calibration_cache) if calibrator is not None else None,
        "subnet_text": model.get("subnet_text"),
        "mflops": model.get("mflops"),
        "target": target.to_dict(),
        "rebuild_command": f"ofa-deploy build-engine {export_dir} --target {target_name}",
    }
    atomic_write_json(out_dir / ENGINE_SIDECAR, sidecar)
    return sidecar


def build_engines(export_dir: str | Path, target: Target | str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """``build_engine`` for one export directory, or for every bucket directory of an
    ``--all-buckets`` export (listed in its ``index.json``), sharing one timing cache."""
    export_dir = Path(export_dir)
    index = export_dir / INDEX_FILE
    if not index.is_file():
        return [build_engine(export_dir, target, **kwargs)]
    try:
        names = [entry["name"] for entry in json.loads(index.read_text())["exports"]]
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OfaError(f"{index} is not a valid export index: {exc}") from None
    return [build_engine(export_dir / name, target, **kwargs) for name in names]


def _resolve_target(target: Target | str | None, model: dict[str, Any]) -> Target:
    if isinstance(target, Target):
        return target
    if target is not None:
        return load_target(target)
    name = (model.get("target") or {}).get("name")
    if not name:
        raise OfaError("the export's model.json names no target; pass --target")
    return load_target(name)


def _profile_json(profile: dict[str, tuple[int, ...]] | None) -> dict[str, list[int]] | None:
    return None if profile is None else {k: list(v) for k, v in profile.items()}


def _make_logger(trt, verbose: bool):
    """A TensorRT logger that keeps error messages (for the OfaError) and prints warnings
    (everything with ``verbose``) on stderr."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if verbose or severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR,
                                       trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return Logger()


def _make_calibrator(trt, cuda, batches: list[np.ndarray], cache_path: Path):
    """An entropy calibrator (v2, the one DLA requires) feeding ``batches`` from one device
    buffer; the scales are read from / written to ``cache_path``, so a rebuild skips
    calibration."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device = cuda.mem_alloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names):  # noqa: ARG002 - one input
            if self.index >= len(batches):
                return None
            cuda.memcpy_htod(self.device, batches[self.index])
            self.index += 1
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(cache_path, bytes(memoryview(cache)))

    return EntropyCalibrator()


# -- running ---------------------------------------------------------------------------
def load_engine(engine_path: str | Path, *, check: bool = True):
    """Deserialize the engine at ``engine_path`` (after checking its ``engine.json`` against
    this machine unless ``check`` is off). Returns (runtime, engine, sidecar or None)."""
    trt = _tensorrt()
    engine_path = Path(engine_path)
    sidecar = None
    if check:
        sidecar = read_engine_sidecar(engine_path)
        check_engine(engine_path, sidecar, device_info())
    elif not engine_path.is_file():
        raise OfaError(f"engine {engine_path} does not exist")
    runtime = trt.Runtime(_make_logger(trt, False))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise OfaError(f"TensorRT could not deserialize {engine_path}; rebuild it on this machine")
    return runtime, engine, sidecar


class TrtRunner:
    """Runs one serialized engine with pycuda (no torch).

    ``TrtRunner(path, batch=None)`` checks ``engine.json`` against this device, loads the
    engine and allocates pinned host and device buffers for the largest batch the engine
    takes. ``batch`` (default: the optimization profile's opt batch, or the fixed batch)
    is the batch of ``step()``.

    * ``infer(x)`` - x float32 (N, C, H, W) -> logits (N, classes), synchronous.
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
        trt = _tensorrt()
        cuda = _pycuda()
        self._cuda = cuda
        self._context_stack = cuda.Device(device).retain_primary_context()
        self._context_stack.push()
        self._closed = False
        try:
            self._runtime, self.engine, sidecar = load_engine(engine_path, check=check)
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise OfaError(f"{engine_path} has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
            self.input_name, self.output_name = inputs[0], outputs[0]
            shape = tuple(self.engine.get_tensor_shape(self.input_name))
            if shape[0] == -1:
                lo, opt, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
                self.min_batch, self.max_batch, default = lo[0], hi[0], opt[0]
            else:
                self.min_batch = self.max_batch = default = shape[0]
            self.chw = tuple(int(d) for d in shape[1:])
            batch = default if batch is None else batch
            if not self.min_batch <= batch <= self.max_batch:
                raise OfaError(f"{engine_path} takes batches {self.min_batch}..{self.max_batch}, not {batch}; "
                               "rebuild it for a target with that batch size")
            self.input_shape = (batch, *self.chw)
            self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
            self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
            self._batch: int | None = None
            self._set_batch(self.max_batch)
            out_max = tuple(self.context.get_tensor_shape(self.output_name))
            self._host_in = cuda.pagelocked_empty((self.max_batch, *self.chw), self._in_dtype)
            self._host_out = cuda.pagelocked_empty(out_max, self._out_dtype)
            self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
            self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
            self.context.set_tensor_address(self.input_name, int(self._dev_in))
            self.context.set_tensor_address(self.output_name, int(self._dev_out))
            self.stream = cuda.Stream()
            self._start, self._end = cuda.Event(), cuda.Event()
            self._last_device_ms: float | None = None
            self._fixed = np.random.default_rng(0).standard_normal(self.input_shape).astype(self._in_dtype)
            self._holds_fixed = False
            self.precision = (sidecar or {}).get("precision")
            self.info = {k: (sidecar or {}).get(k) for k in (
                "tensorrt_version", "gpu_name", "compute_capability", "jetson_l4t", "precision", "dla_core",
                "engine_sha256", "onnx_sha256", "subnet_text", "mflops")}
        except BaseException:
            self._context_stack.pop()
            raise

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

    def device_ms(self) -> float | None:
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
