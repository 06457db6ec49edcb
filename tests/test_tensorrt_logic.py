"""The TensorRT path's pure logic (no TensorRT, no GPU needed): builder plans per target,
calibration batching, engine/device compatibility checks, timing cache naming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.export.tensorrt import (
    ENGINE_SIDECAR,
    calibration_batches,
    check_engine,
    engine_mismatches,
    engine_plan,
    read_engine_sidecar,
    timing_cache_path,
)
from ofa_deploy.io import sha256_file
from ofa_deploy.targets import load_target

HERE = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


def _profile(tmp_path, body: str):
    path = tmp_path / "t.toml"
    path.write_text(body)
    return load_target(str(path))


def test_plan_dynamic_fp16_profile():
    plan = engine_plan(load_target("cuda"), (-1, 1, 32, 32))
    assert plan["fp16"] and not plan["int8"] and plan["dla_core"] is None and not plan["gpu_fallback"]
    assert plan["profile"] == {"min": (1, 1, 32, 32), "opt": (1, 1, 32, 32), "max": (64, 1, 32, 32)}
    assert plan["workspace_bytes"] == 2048 << 20 and plan["builder_optimization_level"] == 3
    assert plan["timing_cache"] and plan["calibration_batch"] == 32


def test_plan_static_dla():
    plan = engine_plan(load_target("jetson-xavier"), (1, 3, 32, 32))
    assert plan["profile"] is None and plan["dla_core"] == 0 and plan["gpu_fallback"]
    assert plan["calibration_batch"] == 1


def test_plan_int8_and_opt_batch(tmp_path):
    target = _profile(tmp_path, 'backend = "tensorrt"\nprecision = "int8"\nbatch_sizes = [8, 1, 16]\n'
                                '[tensorrt]\nbuilder_optimization_level = 5\ntiming_cache = false\n')
    plan = engine_plan(target, (-1, 1, 32, 32))
    assert plan["int8"] and plan["fp16"]  # fp16 stays allowed for layers int8 does not cover
    assert [plan["profile"][k][0] for k in ("min", "opt", "max")] == [1, 8, 16]
    assert plan["builder_optimization_level"] == 5 and not plan["timing_cache"]
    fp32 = _profile(tmp_path, 'backend = "tensorrt"\nprecision = "fp32"\n')
    assert not engine_plan(fp32, (-1, 1, 32, 32))["fp16"]


def test_plan_errors():
    with pytest.raises(OfaError, match="not TensorRT"):
        engine_plan(load_target("cpu"), (-1, 1, 32, 32))
    with pytest.raises(OfaError, match="re-export"):
        engine_plan(load_target("cuda"), (1, 1, 32, 32))  # static ONNX, target wants 1/8/64
    with pytest.raises(OfaError, match=r"\(N, C, H, W\)"):
        engine_plan(load_target("cuda"), (-1, 10))


def test_calibration_batches():
    images = np.arange(100 * 2 * 4 * 4, dtype=np.float64).reshape(100, 2, 4, 4)
    batches = calibration_batches(images, 32)
    assert len(batches) == 3 and all(b.shape == (32, 2, 4, 4) for b in batches)
    assert all(b.dtype == np.float32 and b.flags["C_CONTIGUOUS"] for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), images[:96].astype(np.float32))
    assert len(calibration_batches(images, 1)) == 100
    with pytest.raises(OfaError, match="cannot fill one batch"):
        calibration_batches(images[:10], 32)
    with pytest.raises(OfaError, match=r"\(N, C, H, W\)"):
        calibration_batches(images[0], 1)


def test_engine_mismatches():
    assert engine_mismatches(dict(HERE), HERE) == []
    problems = engine_mismatches({**HERE, "tensorrt_version": "8.5.2", "gpu_name": "Xavier",
                                  "compute_capability": "7.2"}, HERE)
    assert len(problems) == 3 and "TensorRT 8.5.2 (here 10.3.0)" in problems[0]
    assert engine_mismatches({**HERE, "gpu_name": "NVIDIA A100"}, HERE) == ["GPU 'NVIDIA A100' (here 'Orin')"]


def test_check_engine_refuses_before_loading(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    built = {**HERE, "engine_sha256": sha256_file(engine),
             "rebuild_command": "ofa-deploy build-engine exports/m --target jetson"}
    check_engine(engine, built, HERE)
    with pytest.raises(OfaError) as info:
        check_engine(engine, built, {**HERE, "tensorrt_version": "10.7.0"})
    message = str(info.value)
    assert "TensorRT 10.3.0 (here 10.7.0)" in message and "ofa-deploy build-engine exports/m --target jetson" in message
    engine.write_bytes(b"tampered")
    with pytest.raises(OfaError, match="SHA-256"):
        check_engine(engine, built, HERE)


def test_read_engine_sidecar(tmp_path):
    engine = tmp_path / "model.engine"
    with pytest.raises(OfaError, match="does not exist"):
        read_engine_sidecar(engine)
    engine.write_bytes(b"e")
    with pytest.raises(OfaError, match="no engine.json"):
        read_engine_sidecar(engine)
    (tmp_path / ENGINE_SIDECAR).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(OfaError, match="not an ofa-deploy engine sidecar"):
        read_engine_sidecar(engine)
    (tmp_path / ENGINE_SIDECAR).write_text(json.dumps({"format": "ofa-deploy/engine", **HERE}))
    assert read_engine_sidecar(engine)["gpu_name"] == "Orin"


def test_timing_cache_path_is_per_device(tmp_path):
    a = timing_cache_path({**HERE, "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}, tmp_path)
    assert a == tmp_path / "tensorrt" / "nvidia-geforce-rtx-4090-sm89-trt10.3.0.timing"
    assert timing_cache_path(HERE, tmp_path) != timing_cache_path({**HERE, "tensorrt_version": "10.4.0"}, tmp_path)
