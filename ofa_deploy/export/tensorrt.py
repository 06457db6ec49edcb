"""TensorRT engines: build them from an export directory, check and load them, run them.

Supports TensorRT 8.5 (JetPack 5) to 11.x; needs ``tensorrt`` and ``pycuda``
(``pip install 'ofa-deploy[trt]'``, or JetPack's TensorRT plus ``pip install pycuda`` on a
Jetson), never torch. Both are imported only when an engine is built or run, so this
package imports anywhere. The work is split by job:

* ``trt_env`` - importing TensorRT/pycuda with errors that name the real cause, the
  supported versions, starting TensorRT objects, device facts, the timing cache's path;
* ``trt_plan`` - pure decisions: per-version network and builder flags for the precision
  the ONNX carries (strongly typed on 10.x/11.x, explicit quantization on 8.x - no
  calibrator; the reasons are there), the target's build settings, engine/machine and
  engine/export checks;
* ``trt_build`` - ``build_engine``/``build_engines``: ``model.engine`` + ``engine.json``;
* ``trt_runtime`` - ``load_engine`` and ``TrtRunner``, the profiler's TensorRT runtime.

This module gathers their public names for callers (``ofa_deploy.export.tensorrt``).
"""

from __future__ import annotations

from .trt_build import build_engine, build_engines
from .trt_env import (
    INSTALL_HINT,
    SUPPORTED,
    cache_root,
    check_supported,
    device_info,
    jetson_release,
    parse_version,
    tensorrt_available,
    timing_cache_path,
)
from .trt_plan import (
    ENGINE_FILE,
    ENGINE_FORMAT,
    ENGINE_FORMAT_VERSION,
    ENGINE_SIDECAR,
    PRECISIONS,
    build_policy,
    check_against_export,
    check_engine,
    check_target_precision,
    engine_mismatches,
    engine_plan,
    model_precision,
    precision_problem,
    read_engine_sidecar,
)
from .trt_runtime import TrtRunner, load_engine

__all__ = [
    "ENGINE_FILE",
    "ENGINE_FORMAT",
    "ENGINE_FORMAT_VERSION",
    "ENGINE_SIDECAR",
    "INSTALL_HINT",
    "PRECISIONS",
    "SUPPORTED",
    "TrtRunner",
    "build_engine",
    "build_engines",
    "build_policy",
    "cache_root",
    "check_against_export",
    "check_engine",
    "check_supported",
    "check_target_precision",
    "device_info",
    "engine_mismatches",
    "engine_plan",
    "jetson_release",
    "load_engine",
    "model_precision",
    "parse_version",
    "precision_problem",
    "read_engine_sidecar",
    "tensorrt_available",
    "timing_cache_path",
]
