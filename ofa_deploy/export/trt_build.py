"""``build_engine``: an export directory's ONNX -> ``model.engine`` + ``engine.json``, in the
precision the ONNX carries (see ``trt_plan`` for how each TensorRT version is told so).

Everything is checked before anything is written: the export's files against their
SHA-256s, the precision ``model.json`` declares against what the parsed network holds
(Q/DQ layers, fp16 tensors), the target's shapes and DLA core against the ONNX and the
device. The engine is written first and ``engine.json`` (which vouches for it by hash)
last, each atomically.

A per-device **timing cache** (``timing_cache_path``: one file per GPU, compute capability
and TensorRT version) is loaded before and saved after every build: OFA subnets share
block shapes, so later subnets of a catalog reuse the kernel timings of earlier ones. A
cache TensorRT rejects as corrupt is replaced; one it rejects as made on another device or
version is left as it is and not used (``engine.json`` says which happened).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import OfaError
from ..io import atomic_write_bytes, atomic_write_json, read_json
from ..targets import Target, recorded_target
from .sidecar import INDEX_FILE, ONNX_FILE, SIDECAR_FILE, read_sidecar, verify_files
from .trt_env import (
    check_supported,
    device_info,
    import_pycuda,
    import_tensorrt,
    jetson_release,
    make_logger,
    start,
    timing_cache_path,
)
from .trt_plan import (
    ENGINE_FILE,
    ENGINE_FORMAT,
    ENGINE_FORMAT_VERSION,
    ENGINE_SIDECAR,
    build_policy,
    check_target_precision,
    engine_plan,
    model_precision,
    precision_problem,
)


def build_engine(
    export_dir: str | Path,
    target: Target | str | None = None,
    *,
    out_dir: str | Path | None = None,
    timing_cache: str | Path | None = None,
    use_timing_cache: bool | None = None,
    device: int = 0,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Dict[str, Any]:
    """Build ``model.engine`` + ``engine.json`` on GPU ``device`` for ``target`` (default:
    the one the export was made for) from the export directory ``export_dir``, into
    ``out_dir`` (default the export directory). ``timing_cache`` overrides the per-device
    cache file; ``use_timing_cache`` overrides the target's ``timing_cache`` setting.

    Returns the engine sidecar. ``OfaError`` if TensorRT/pycuda/a GPU is missing, the
    export is damaged or its ONNX does not carry the precision its ``model.json`` says, the
    target must be built on a Jetson and this is not one, or TensorRT fails (with its own
    error lines).
    """
    say = progress or (lambda message: None)
    export_dir = Path(export_dir)
    model = read_sidecar(export_dir)
    verify_files(export_dir, model)
    precision = model_precision(model, str(export_dir / SIDECAR_FILE))
    target_arg = target
    target = _resolve_target(target, model, export_dir)
    check_target_precision(target, precision)  # before TensorRT: bad input is named first
    out_dir = Path(out_dir) if out_dir is not None else export_dir
    _check_out(out_dir, export_dir)
    _check_replaceable(out_dir)
    trt = import_tensorrt()
    cuda = import_pycuda(device)
    if target.build_on_device and jetson_release() is None:
        raise OfaError(f"target {target.name} engines must be built on the Jetson itself (its TensorRT and GPU); "
                       f"copy {export_dir} there and run `{_rebuild_command(export_dir, target, target_arg)}`")
    info = device_info(trt, cuda, device)
    # TensorRT works in the current CUDA context: make it the primary context of `device`
    context = cuda.Device(device).retain_primary_context()
    context.push()
    try:
        return _build(trt, export_dir, model, precision, target, target_arg, info, out_dir, timing_cache,
                      use_timing_cache, verbose, say)
    finally:
        context.pop()


def _build(trt, export_dir: Path, model: Dict[str, Any], precision: str, target: Target, target_arg,
           info: Dict[str, Any], out_dir: Path, timing_cache, use_timing_cache, verbose: bool,
           say: Callable[[str], None]) -> Dict[str, Any]:
    version = check_supported(trt.__version__)
    policy = build_policy(version, precision, dla=target.dla_core is not None)
    logger = make_logger(trt, verbose)
    builder = start(trt.Builder, logger)
    flags = 0
    for name in policy["network_flags"]:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say("parsing ONNX")
    onnx_path = export_dir / ONNX_FILE
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OfaError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors) or 'unknown error'}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise OfaError(f"{onnx_path} has {network.num_inputs} inputs and {network.num_outputs} outputs, "
                       "expected 1 and 1")
    has_qdq, has_half = _network_types(trt, network)
    problem = precision_problem(precision, has_qdq, has_half, policy["strongly_typed"])
    if problem is not None:
        raise OfaError(f"{onnx_path} {problem}, but {export_dir / SIDECAR_FILE} says precision {precision}; "
                       "export it again")
    # the builder flags may depend on the parsed network's types (8.x: int8 with fp16 layers);
    # the network flags, already used, do not
    policy = build_policy(version, precision, dla=target.dla_core is not None, has_half=has_half)
    inp = network.get_input(0)
    plan = engine_plan(target, tuple(inp.shape), precision)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_bytes"])
    if version >= (8, 6):  # the optimization level arrived in 8.6
        config.builder_optimization_level = plan["builder_optimization_level"]
    for name in policy["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan["dla_core"] is not None:
        if builder.num_DLA_cores <= plan["dla_core"]:
            raise OfaError(f"target {target.name} asks for DLA core {plan['dla_core']}, this device has "
                           f"{builder.num_DLA_cores} DLA cores (an Orin Nano has none: use jetson-orin)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan["dla_core"]
    if plan["profile"] is not None:
        profile = builder.create_optimization_profile()
        try:
            profile.set_shape(inp.name, plan["profile"]["min"], plan["profile"]["opt"], plan["profile"]["max"])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise OfaError(f"TensorRT refuses the batch range of target {target.name} for {onnx_path}: {exc}") from None
        if config.add_optimization_profile(profile) < 0:
            raise OfaError(f"TensorRT refuses the optimization profile {_profile_json(plan['profile'])} "
                           f"for {onnx_path}: {'; '.join(logger.errors[-3:])}")

    cache_file: Optional[Path] = None
    timing: Optional[Dict[str, Any]] = None
    if plan["timing_cache"] if use_timing_cache is None else use_timing_cache:
        cache_file = Path(timing_cache) if timing_cache is not None else timing_cache_path(info)
        timing = _load_timing_cache(config, logger, cache_file)

    say(f"building the {precision} engine")
    first_error = len(logger.errors)  # only what the build itself reports explains its failure
    start_time = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start_time
    if serialized is None:
        detail = "; ".join(logger.errors[first_error:][-3:]) or "no error message (rerun with --verbose)"
        raise OfaError(f"TensorRT failed to build the engine for {export_dir}: {detail}")
    engine_bytes = bytes(memoryview(serialized))
    if timing is not None and timing["status"] != "ignored-mismatch":
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        assert cache_file is not None  # set with timing above
        atomic_write_bytes(cache_file, data)
        timing["bytes_after"] = len(data)

    output = network.get_output(0)
    sidecar = {
        "format": ENGINE_FORMAT,
        "format_version": ENGINE_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "engine_file": ENGINE_FILE,
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "engine_bytes": len(engine_bytes),
        **info,
        "precision": precision,
        "strongly_typed": policy["strongly_typed"],
        "builder_flags": policy["builder_flags"],
        "dla_core": plan["dla_core"],
        "input": {"name": inp.name, "shape": list(inp.shape), "profile": _profile_json(plan["profile"])},
        "output": {"name": output.name, "shape": list(output.shape)},
        "builder_optimization_level": plan["builder_optimization_level"] if version >= (8, 6) else None,
        "workspace_mb": target.workspace_mb,
        "timing_cache": timing,
        "build_seconds": round(seconds, 3),
        "onnx_sha256": model["files"][ONNX_FILE]["sha256"],
        "subnet_text": model.get("subnet_text"),
        "mflops": model.get("mflops"),
        "target": target.record(),
        "rebuild_command": _rebuild_command(export_dir, target, target_arg),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / ENGINE_FILE, engine_bytes)
    atomic_write_json(out_dir / ENGINE_SIDECAR, sidecar)
    return sidecar


def _check_out(out_dir: Path, export_dir: Path) -> None:
    """An ``--out`` other than the export directory: a new or empty directory, or one
    holding only engines of earlier builds - never the user's files, a training run, a
    catalog, another export or the export directory's parent (``outputs.ENGINE``)."""
    from ..outputs import ENGINE, check_own_dir

    if os.path.realpath(out_dir) != os.path.realpath(export_dir):
        check_own_dir(out_dir, ENGINE, inputs=[("export directory", export_dir)])


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a ``model.engine``/``engine.json`` in ``out_dir`` that an earlier
    build-engine did not write (a build replaces only its own engine)."""
    sidecar, engine = out_dir / ENGINE_SIDECAR, out_dir / ENGINE_FILE
    if sidecar.exists():
        try:
            data = read_json(sidecar)
        except OfaError:
            data = None
        if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
            raise OfaError(f"{sidecar} is not an ofa-deploy engine sidecar; not replacing it (choose another --out)")
    elif engine.exists():
        raise OfaError(f"{engine} has no {ENGINE_SIDECAR} of ofa-deploy beside it; not replacing it "
                       "(choose another --out)")


def _network_types(trt, network) -> Tuple[bool, bool]:
    """(has Q/DQ layers, has fp16 tensors) of a parsed network."""
    qdq = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    has_qdq = has_half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        has_qdq = has_qdq or layer.type in qdq
        has_half = has_half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return has_qdq, has_half


def _load_timing_cache(config, logger, cache_file: Path) -> Dict[str, Any]:
    """Give ``config`` the timing cache in ``cache_file`` (or an empty one) and say what
    became of the file: reused, created, replaced (corrupt) or ignored (another device's)."""
    before = cache_file.read_bytes() if cache_file.is_file() else b""
    status = "reused" if before else "created"
    first_error = len(logger.errors)
    cache = config.create_timing_cache(before)
    # TensorRT 8.6 logs an error for a corrupt cache and may still return an object
    if before and (cache is None or len(logger.errors) > first_error):
        status, cache = "replaced-corrupt", config.create_timing_cache(b"")
    if cache is None:
        raise OfaError("TensorRT cannot create a timing cache; rerun with --no-timing-cache")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # made on another device or TensorRT: build with a fresh cache, leave the file alone
        status, cache = "ignored-mismatch", config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise OfaError("TensorRT cannot use a timing cache; rerun with --no-timing-cache")
    return {"path": str(cache_file), "status": status, "bytes_before": len(before), "reused": status == "reused"}


def build_engines(export_dir: str | Path, target: Target | str | None = None, **kwargs: Any) -> List[Dict[str, Any]]:
    """``build_engine`` for one export directory, or for every bucket directory of an
    ``--all-buckets`` export (listed in its ``index.json``), sharing one timing cache."""
    export_dir = Path(export_dir)
    index = export_dir / INDEX_FILE
    if not index.is_file():
        return [build_engine(export_dir, target, **kwargs)]
    try:
        names = [entry["name"] for entry in json.loads(index.read_text())["exports"]]
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise OfaError(f"{index} is not a valid export index: {type(exc).__name__}") from None
    return [build_engine(export_dir / name, target, **kwargs) for name in names]


def _resolve_target(target: Target | str | None, model: Dict[str, Any], export_dir: Path) -> Target:
    """``target`` (a ``Target``, a name or a ``.toml`` path), or without it the target the
    export recorded in its ``model.json`` - its whole definition, so a target given to
    ``export`` as a path needs no ``--target`` here. A ``target`` of the recorded one's
    name but another definition is refused (``targets.target_for``)."""
    return recorded_target(target, model.get("target"), f"export {export_dir / SIDECAR_FILE}")


def _rebuild_command(export_dir: Path, target: Target, target_arg: Target | str | None) -> str:
    """The command that builds this engine again: without ``--target`` where the export's
    recorded target was used (it is used again), else with the target as it was given."""
    if target_arg is None:
        return f"ofa-deploy build-engine {export_dir}"
    return f"ofa-deploy build-engine {export_dir} --target {target_arg if isinstance(target_arg, str) else target.name}"


def _profile_json(profile: Optional[Dict[str, tuple]]) -> Optional[Dict[str, List[int]]]:
    return None if profile is None else {k: list(v) for k, v in profile.items()}
