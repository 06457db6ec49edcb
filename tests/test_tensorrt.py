"""Real TensorRT engines: build, check, run, against ONNX Runtime, in each precision the ONNX
can carry. Runs only where TensorRT, pycuda and an NVIDIA GPU are present (a desktop GPU or
a Jetson); skipped elsewhere - it has not run on the project's CPU machines."""

from __future__ import annotations

import json

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (CPU-only machine)")
cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed")

from conftest import make_fake_run  # noqa: E402

from ofa_deploy.errors import OfaError  # noqa: E402
from ofa_deploy.export import export_subnet  # noqa: E402
from ofa_deploy.export.tensorrt import ENGINE_FILE, ENGINE_SIDECAR, TrtRunner, build_engine  # noqa: E402
from ofa_deploy.export.to_onnx import ort_session, run_onnx  # noqa: E402
from ofa_deploy.run import load_supernet  # noqa: E402
from ofa_deploy.targets import load_target  # noqa: E402

try:
    cuda.init()
    HAS_GPU = cuda.Device.count() > 0
except cuda.Error:
    HAS_GPU = False
pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from trt_fake import _profile, make_variant

    from ofa_deploy.data import load_dataset

    root = tmp_path_factory.mktemp("trt")
    supernet, _ = load_supernet(make_fake_run(root / "run"))
    train = load_dataset("digits", "train").images
    test = load_dataset("digits", "test").images[:64]
    profile = root / "gpu.toml"
    profile.write_text(_profile("fp32", '["fp32", "fp16", "int8"]', "batch_sizes = [1, 8, 64]\n"))
    target = load_target(str(profile))
    export_subnet(supernet, supernet.space.middle(), target, root / "fp32", calib_images=train, parity_images=test,
                  calibration_count=128)
    for precision in ("fp16", "int8"):  # the precision is carried by the ONNX
        make_variant(root / "fp32", root / precision, precision)
    return root, target, test.numpy()


def test_fp32_engine_matches_onnxruntime(exported, tmp_path):
    root, target, x = exported
    cache = tmp_path / "timing.cache"
    sidecar = build_engine(root / "fp32", target, out_dir=tmp_path / "fp32", timing_cache=cache)
    assert sidecar["precision"] == "fp32" and sidecar["input"]["profile"]["max"][0] == 64
    assert cache.is_file() and sidecar["timing_cache"]["status"] == "created"
    expected = run_onnx(ort_session(root / "fp32" / "model.onnx"), x)
    with TrtRunner(tmp_path / "fp32" / ENGINE_FILE) as runner:
        got = runner.infer(x)
        assert np.abs(got - expected).max() <= 1e-3
        runner.step()
        assert runner.device_ms() is not None and runner.device_ms() > 0
    again = build_engine(root / "fp32", target, out_dir=tmp_path / "again", timing_cache=cache)
    assert again["timing_cache"]["reused"]


def test_fp16_and_int8_engines_from_their_onnx(exported, tmp_path):
    root, target, x = exported
    for precision in ("fp16", "int8"):
        expected = run_onnx(ort_session(root / precision / "model.onnx"), x).argmax(1)
        sidecar = build_engine(root / precision, target, out_dir=tmp_path / precision,
                               timing_cache=tmp_path / "t.cache")
        assert sidecar["precision"] == precision
        with TrtRunner(tmp_path / precision / ENGINE_FILE) as runner:
            agreement = float((runner.infer(x).argmax(1) == expected).mean())
        assert agreement >= (0.95 if precision == "fp16" else 0.8), (precision, agreement)


def test_mismatched_engine_is_refused(exported, tmp_path):
    root, target, x = exported
    build_engine(root / "fp32", target, out_dir=tmp_path / "e", use_timing_cache=False)
    sidecar_path = tmp_path / "e" / ENGINE_SIDECAR
    data = json.loads(sidecar_path.read_text())
    data["tensorrt_version"] = "0.0.1"
    sidecar_path.write_text(json.dumps(data))
    with pytest.raises(OfaError, match="rebuild it on this machine"):
        TrtRunner(tmp_path / "e" / ENGINE_FILE)
