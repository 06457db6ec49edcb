"""The TensorRT path's pure decisions (no TensorRT, no GPU): which network and builder
flags each TensorRT version needs for the precision an ONNX carries, the optimization
profile and build settings of a target, and whether an engine fits this machine and the
export beside it.

Precision belongs to the ONNX (``model.json`` ``"precision"``, fp32 when absent): fp16 as
fp16 tensors, int8 as explicit QuantizeLinear/DequantizeLinear nodes. How each TensorRT
version is told to keep it (``build_policy``):

* 10.x and 11.x: a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``)
  and no precision builder flags - TensorRT takes every tensor's type from the ONNX. 11.x
  has no other way (``BuilderFlag.FP16/INT8`` are removed); on 10.x the flags are deprecated
  and a strongly typed network refuses them. ``EXPLICIT_BATCH`` is not passed: deprecated and
  ignored on 10.x, removed on 11.x. DLA builds (Orin on JetPack 6) are strongly typed too, as
  NVIDIA documents for DLA on 11.x; on 10.x this has not been tried on a device.
* 8.5 and 8.6: no strong typing (8.6 has no such flag). An explicit-batch network; the FP16
  flag for an fp16 ONNX (otherwise 8.x runs its fp16 layers in fp32); the INT8 flag for a
  Q/DQ ONNX, which 8.x then builds by explicit quantization - the scales come from the Q/DQ
  nodes, no calibrator. On DLA (Xavier's JetPack 5) int8 also sets FP16, because DLA has no
  fp32 and the layers Q/DQ leaves in float would otherwise all fall back to the GPU. An int8
  ONNX with fp16 tensors (the layers ``export --max-drop`` reverted, for TensorRT targets)
  sets FP16 too: without it 8.x would run those layers in fp32. 8.x is not strongly typed,
  so FP16 lets it pick fp16 for them (and for other float layers) where it is faster, without
  guaranteeing it; 10.x and 11.x take the fp16 from the ONNX.

The implicit int8 calibrator (``IInt8EntropyCalibrator2``) is gone from this code: it is
deprecated since 10.1 and removed in 11, and on 8.5/8.6 the explicit Q/DQ path builds the
same int8 engine from scales that were computed once on the host (and that ONNX Runtime's
accuracy figures in ``model.json`` were measured with), so it earns no place there either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import OfaError
from ..io import read_json, sha256_file
from ..targets import PRECISIONS, Target

ENGINE_FILE = "model.engine"
ENGINE_SIDECAR = "engine.json"
ENGINE_FORMAT = "ofa-deploy/engine"
ENGINE_FORMAT_VERSION = 2


def model_precision(model: Dict[str, Any], where: str = "model.json") -> str:
    """The precision an export's ONNX carries, from its ``model.json`` (fp32 when the key
    is absent: exports made before precision was recorded are fp32)."""
    precision = model.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise OfaError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return str(precision)


def build_policy(version: Tuple[int, int], precision: str, dla: bool, has_half: bool = False) -> Dict[str, Any]:
    """How TensorRT ``version`` (major, minor) builds an ONNX of ``precision`` (``has_half``:
    whose network has fp16 tensors): the names of the ``NetworkDefinitionCreationFlag`` and
    ``BuilderFlag`` members to set, and whether the network is strongly typed."""
    if precision not in PRECISIONS:
        raise OfaError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    strongly_typed = version >= (10, 0)
    builder_flags: List[str] = []
    if strongly_typed:
        network_flags = ["STRONGLY_TYPED"]
    else:
        network_flags = ["EXPLICIT_BATCH"]
        if precision == "fp16" or (precision == "int8" and (dla or has_half)):
            builder_flags.append("FP16")
        if precision == "int8":
            builder_flags.append("INT8")
    if dla:
        builder_flags.append("GPU_FALLBACK")
    return {"strongly_typed": strongly_typed, "network_flags": network_flags, "builder_flags": builder_flags}


def precision_problem(declared: str, has_qdq: bool, has_half: bool, strongly_typed: bool) -> Optional[str]:
    """Why a parsed network does not carry the ``declared`` precision (None when it does):
    int8 needs Q/DQ layers and only int8 may have them; fp32 has no fp16 tensors; fp16 has
    fp16 tensors (checked on strongly typed networks only, where every tensor's type is the
    ONNX's own)."""
    if declared == "int8" and not has_qdq:
        return "has no QuantizeLinear/DequantizeLinear nodes"
    if declared != "int8" and has_qdq:
        return "has QuantizeLinear/DequantizeLinear nodes (an int8 model)"
    if declared == "fp32" and has_half:
        return "has fp16 tensors"
    if declared == "fp16" and strongly_typed and not has_half:
        return "has no fp16 tensors"
    return None


def engine_plan(target: Target, input_shape: Tuple[int, ...], precision: str = "fp32") -> Dict[str, Any]:
    """The builder settings for ``target`` and an ONNX of ``precision`` whose input is
    ``input_shape`` (N, C, H, W; N = -1 when the batch is dynamic): DLA, the optimization
    profile (min/opt/max shapes, dynamic batch only), workspace and optimization level.
    Raises ``OfaError`` for combinations TensorRT cannot build."""
    check_target_precision(target, precision)
    if len(input_shape) != 4 or any(d <= 0 for d in input_shape[1:]):
        raise OfaError(f"the ONNX input must be (N, C, H, W) with fixed C, H, W, not {tuple(input_shape)}")
    dynamic = input_shape[0] == -1
    chw = tuple(int(d) for d in input_shape[1:])
    if dynamic:
        lo, opt, hi = target.trt_shapes
        profile: Optional[Dict[str, Tuple[int, ...]]] = {
            "min": (lo, *chw), "opt": (opt, *chw), "max": (hi, *chw)}
    else:
        static = int(input_shape[0])
        if any(b != static for b in target.batch_sizes):
            raise OfaError(f"the ONNX has a fixed batch of {static} but target {target.name} wants batch sizes "
                           f"{list(target.batch_sizes)}; re-export for this target")
        profile = None
    return {
        "precision": precision,
        "dla_core": target.dla_core,
        "dynamic_batch": dynamic,
        "profile": profile,
        "workspace_bytes": target.workspace_mb << 20,
        "builder_optimization_level": target.builder_optimization_level,
        "timing_cache": target.timing_cache,
    }


def check_target_precision(target: Target, precision: str) -> None:
    """Raise ``OfaError`` unless ``target`` is a TensorRT target that may run an engine of
    ``precision``: one of the profile's ``precisions`` (where it lists them), never fp32 on DLA."""
    require_tensorrt_target(target)
    if precision not in PRECISIONS:
        raise OfaError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    allowed = getattr(target, "precisions", None)
    if allowed and precision not in allowed:
        raise OfaError(f"target {target.name} does not run {precision} engines (its profile allows "
                       f"{', '.join(allowed)}); export again with one of those")
    if target.dla_core is not None and precision == "fp32":
        raise OfaError(f"target {target.name} runs on DLA, which has no fp32: export with --precision fp16 or int8")


def require_tensorrt_target(target: Target) -> None:
    if target.backend != "tensorrt":
        raise OfaError(f"target {target.name} runs {target.backend}, not TensorRT; pass a TensorRT target "
                       "(e.g. cuda, jetson-orin, jetson-xavier)")


def engine_mismatches(built: Dict[str, Any], here: Dict[str, Any]) -> List[str]:
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


def check_engine(engine_path: str | Path, built: Dict[str, Any], here: Dict[str, Any]) -> None:
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


def check_against_export(engine_path: str | Path, built: Dict[str, Any], model: Optional[Dict[str, Any]]) -> None:
    """Raise ``OfaError`` when the export beside an engine (its ``model.json``, if any)
    describes another ONNX or another precision than the one ``engine.json`` was built from."""
    if model is None:
        return
    rebuild = built.get("rebuild_command") or f"ofa-deploy build-engine {Path(engine_path).parent}"
    onnx_sha = ((model.get("files") or {}).get("model.onnx") or {}).get("sha256")
    ours, theirs = built.get("precision"), model_precision(model)
    if ours != theirs:
        raise OfaError(f"engine {engine_path} is {ours} (its {ENGINE_SIDECAR}) but the model.json beside it "
                       f"describes a {theirs} ONNX; rebuild it: {rebuild}")
    if onnx_sha is not None and built.get("onnx_sha256") != onnx_sha:
        raise OfaError(f"engine {engine_path} was built from another model.onnx than the one beside it "
                       f"(SHA-256 differs); rebuild it: {rebuild}")


def read_engine_sidecar(engine_path: str | Path) -> Dict[str, Any]:
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
    if data.get("precision") not in PRECISIONS:
        raise OfaError(f"{path}: precision must be one of {', '.join(PRECISIONS)}, not {data.get('precision')!r}")
    return data
