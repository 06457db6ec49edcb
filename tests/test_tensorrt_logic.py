"""The TensorRT path's pure logic (no TensorRT, no GPU needed): builder plans per target,
per-version network/builder flags, precision checks, engine/device and engine/export
compatibility checks, timing cache naming, import and start-up errors."""

from __future__ import annotations

import json
import sys
import types

import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.export import trt_env
from ofa_deploy.export.tensorrt import (
    ENGINE_SIDECAR,
    build_policy,
    check_against_export,
    check_engine,
    check_supported,
    engine_mismatches,
    engine_plan,
    model_precision,
    precision_problem,
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


def test_plan_dynamic_profile():
    plan = engine_plan(load_target("cuda"), (-1, 1, 32, 32), "fp16")
    assert plan["precision"] == "fp16" and plan["dla_core"] is None
    assert plan["profile"] == {"min": (1, 1, 32, 32), "opt": (1, 1, 32, 32), "max": (64, 1, 32, 32)}
    assert plan["workspace_bytes"] == 2048 << 20 and plan["builder_optimization_level"] == 3
    assert plan["timing_cache"]


def test_plan_static_dla():
    plan = engine_plan(load_target("jetson-xavier"), (1, 3, 32, 32), "fp16")
    assert plan["profile"] is None and plan["dla_core"] == 0
    # the profile's precisions exclude fp32 (or, where it lists none, DLA has no fp32)
    with pytest.raises(OfaError, match="DLA, which has no fp32|does not run fp32 engines"):
        engine_plan(load_target("jetson-xavier"), (1, 3, 32, 32), "fp32")


def test_plan_opt_batch(tmp_path):
    target = _profile(tmp_path, 'backend = "tensorrt"\nprecision = "int8"\nbatch_sizes = [8, 1, 16]\n'
                                '[tensorrt]\nbuilder_optimization_level = 5\ntiming_cache = false\n')
    plan = engine_plan(target, (-1, 1, 32, 32), "int8")
    assert [plan["profile"][k][0] for k in ("min", "opt", "max")] == [1, 8, 16]
    assert plan["builder_optimization_level"] == 5 and not plan["timing_cache"]


def test_plan_errors():
    with pytest.raises(OfaError, match="not TensorRT"):
        engine_plan(load_target("cpu"), (-1, 1, 32, 32))
    with pytest.raises(OfaError, match="re-export"):
        engine_plan(load_target("cuda"), (1, 1, 32, 32))  # static ONNX, target wants 1/8/64
    with pytest.raises(OfaError, match=r"\(N, C, H, W\)"):
        engine_plan(load_target("cuda"), (-1, 10))
    with pytest.raises(OfaError, match="int4"):
        engine_plan(load_target("cuda"), (-1, 1, 32, 32), "int4")


@pytest.mark.parametrize("version", [(10, 0), (10, 3), (10, 16), (11, 4)])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_policy_strongly_typed_from_10(version, precision):
    policy = build_policy(version, precision, dla=False)
    assert policy == {"strongly_typed": True, "network_flags": ["STRONGLY_TYPED"], "builder_flags": []}
    assert build_policy(version, precision, dla=True)["builder_flags"] == ["GPU_FALLBACK"]


def test_policy_8x_explicit_batch_and_flags():
    for version in ((8, 5), (8, 6)):
        assert build_policy(version, "fp32", dla=False) == {
            "strongly_typed": False, "network_flags": ["EXPLICIT_BATCH"], "builder_flags": []}
        assert build_policy(version, "fp16", dla=False)["builder_flags"] == ["FP16"]
        assert build_policy(version, "int8", dla=False)["builder_flags"] == ["INT8"]  # Q/DQ, no calibrator
        assert build_policy(version, "int8", dla=True)["builder_flags"] == ["FP16", "INT8", "GPU_FALLBACK"]
        # an int8 ONNX whose reverted layers are fp16 (export --max-drop for TensorRT): FP16 too, else
        # 8.x runs them in fp32; a strongly typed network takes the types from the ONNX instead
        assert build_policy(version, "int8", dla=False, has_half=True)["builder_flags"] == ["FP16", "INT8"]
    assert build_policy((10, 3), "int8", dla=False, has_half=True)["builder_flags"] == []


def test_precision_problem():
    assert precision_problem("int8", has_qdq=True, has_half=False, strongly_typed=True) is None
    assert "no QuantizeLinear" in precision_problem("int8", False, False, True)
    assert "int8 model" in precision_problem("fp32", True, False, False)
    assert "fp16 tensors" in precision_problem("fp32", False, True, False)
    assert precision_problem("fp16", False, True, True) is None
    assert "no fp16" in precision_problem("fp16", False, False, True)
    # 8.x's weakly typed network may not show the ONNX's fp16 types before the build
    assert precision_problem("fp16", False, False, False) is None


def test_model_precision():
    assert model_precision({}) == "fp32" and model_precision({"precision": "int8"}) == "int8"
    with pytest.raises(OfaError, match="model.json: precision must be one of fp32, fp16, int8, not 'int4'"):
        model_precision({"precision": "int4"})


def test_supported_versions():
    assert check_supported("8.5.2.2") == (8, 5) and check_supported("11.4.0.106") == (11, 4)
    for bad in ("8.4.3", "7.1.3", "12.0.1"):
        with pytest.raises(OfaError, match="not supported.*8.5 to 11.x"):
            check_supported(bad)


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


def test_engine_against_its_export(tmp_path):
    built = {"precision": "fp16", "onnx_sha256": "a" * 64, "rebuild_command": "ofa-deploy build-engine d"}
    model = {"precision": "fp16", "files": {"model.onnx": {"sha256": "a" * 64}}}
    check_against_export("d/model.engine", built, model)
    check_against_export("d/model.engine", built, None)
    with pytest.raises(OfaError, match="is fp16 .* describes a int8 ONNX; rebuild it: ofa-deploy build-engine d"):
        check_against_export("d/model.engine", built, {**model, "precision": "int8"})
    with pytest.raises(OfaError, match="is fp16 .* describes a fp32 ONNX"):
        check_against_export("d/model.engine", built, {"files": model["files"]})  # no key: fp32
    with pytest.raises(OfaError, match="another model.onnx"):
        check_against_export("d/model.engine", built, {**model, "files": {"model.onnx": {"sha256": "b" * 64}}})


def test_import_errors_name_the_real_cause(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ModuleNotFoundError
    with pytest.raises(OfaError, match="TensorRT is not installed on this machine; .*JetPack"):
        trt_env.import_tensorrt()
    broken = types.ModuleType("pycuda")
    monkeypatch.setitem(sys.modules, "pycuda", broken)
    monkeypatch.delitem(sys.modules, "pycuda.driver", raising=False)

    def fail(name, *args, **kwargs):
        if name == "pycuda.driver":
            raise ImportError("libcuda.so.1: cannot open shared object file: No such file or directory")
        return original(name, *args, **kwargs)

    original = trt_env.importlib.import_module
    monkeypatch.setattr(trt_env.importlib, "import_module", fail)
    with pytest.raises(OfaError) as info:
        trt_env.import_pycuda()
    assert "pycuda is installed but cannot be imported: libcuda.so.1" in str(info.value)
    assert "not installed" not in str(info.value)


def test_start_failure_is_one_clear_error():
    def factory(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    with pytest.raises(OfaError, match="TensorRT could not start on this GPU .*nullptr.*driver"):
        trt_env.start(factory, object())


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
    with pytest.raises(OfaError, match="precision must be one of"):
        read_engine_sidecar(engine)
    (tmp_path / ENGINE_SIDECAR).write_text(json.dumps({"format": "ofa-deploy/engine", "precision": "fp16", **HERE}))
    assert read_engine_sidecar(engine)["gpu_name"] == "Orin"


def test_timing_cache_path_is_per_device(tmp_path):
    a = timing_cache_path({**HERE, "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}, tmp_path)
    assert a == tmp_path / "tensorrt" / "nvidia-geforce-rtx-4090-sm89-trt10.3.0.timing"
    assert timing_cache_path(HERE, tmp_path) != timing_cache_path({**HERE, "tensorrt_version": "10.4.0"}, tmp_path)
