"""Target profiles: the built-ins parse, lookups and aliases work, malformed profiles name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.targets import list_targets, load_target, profile_dirs

REPO_PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def test_builtin_targets_parse():
    names = {t.name for t in list_targets()}
    assert {"cpu", "cuda", "jetson-orin", "jetson-xavier"} <= names
    assert len(list_targets()) == len(list(REPO_PROFILES.glob("*.toml")))


def test_cpu_profile_values():
    t = load_target("cpu")
    assert (t.backend, t.precision, t.threads, t.providers) == ("onnxruntime", "fp32", 1, ("CPUExecutionProvider",))
    assert t.measure.warmup_s == 1.0 and t.measure.min_iterations >= 200 and t.measure.min_time_s >= 2.0
    assert t.measure.cov_threshold == 0.05 and t.measure.max_retries == 2
    assert t.measure.predictor_statistic == "min" and load_target("jetson-orin").measure.predictor_statistic == "p50"
    assert t.input_layout == "NCHW" and t.batch == t.batch_sizes[0] == 1
    assert not t.build_on_device and t.dla_core is None and not t.needs_calibration
    assert Path(t.source).name == "cpu.toml"


def test_gpu_and_jetson_profiles():
    cuda = load_target("cuda")
    assert cuda.backend == "tensorrt" and cuda.precision == "fp16" and cuda.fallback_backend == "onnxruntime"
    assert "CUDAExecutionProvider" in cuda.providers and not cuda.build_on_device
    orin = load_target("jetson")
    assert orin.name == "jetson-orin" and orin.build_on_device and orin.needs_calibration
    assert orin.trt_shapes == (1, 1, 8)
    xavier = load_target("jetson-xavier")
    assert xavier.dla_core == 0 and xavier.build_on_device and not xavier.dynamic_batch


def test_to_dict_is_json_ready():
    import json

    d = load_target("cuda").to_dict()
    assert json.loads(json.dumps(d))["measure"]["min_iterations"] == 500
    assert isinstance(d["batch_sizes"], list)


def test_user_profile_by_path_with_defaults(tmp_path):
    p = tmp_path / "mybox.toml"
    p.write_text('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\nmin_iterations = 10\n')
    t = load_target(str(p))
    assert t.name == "mybox" and t.measure.min_iterations == 10 and t.opset == 17 and t.batch_sizes == (1,)
    assert t.source == str(p)


def test_env_dirs_searched_first(tmp_path, monkeypatch):
    (tmp_path / "cpu.toml").write_text('backend = "onnxruntime"\nprecision = "fp32"\nthreads = 4\n')
    monkeypatch.setenv("OFA_DEPLOY_PROFILES", str(tmp_path))
    assert profile_dirs()[0] == tmp_path
    assert load_target("cpu").threads == 4
    (tmp_path / "my-orin.toml").write_text('aliases = ["jetson"]\nbackend = "tensorrt"\nprecision = "int8"\n')
    assert load_target("jetson").name == "my-orin"


@pytest.mark.parametrize(
    "body, key",
    [
        ('backend = "onnxruntime"\nprecision = "fp32"\ncolour = "red"\n', "'colour'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\nwarmup = 1\n', "'measure.warmup'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nthreads = "four"\n', "'threads'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nthreads = true\n', "'threads'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\nmin_time_s = "2s"\n', "'measure.min_time_s'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\ncov_threshold = 0\n', "'measure.cov_threshold'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\npredictor_statistic = "p75"\n',
         "'measure.predictor_statistic'"),
        ('backend = "openvino"\nprecision = "fp32"\n', "'backend'"),
        ('backend = "tensorrt"\nprecision = "fp8"\n', "'precision'"),
        ('backend = "onnxruntime"\nprecision = "fp16"\nprecisions = ["fp32", "int8"]\n', "'precision'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nprecisions = ["fp32", "int4"]\n', "'precisions'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nprecisions = []\n', "'precisions'"),
        ('backend = "tensorrt"\nprecision = "fp16"\ndla_core = 0\nprecisions = ["fp16", "fp32"]\n', "'dla_core'"),
        ('precision = "fp32"\n', "'backend'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nbatch_sizes = []\n', "'batch_sizes'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nbatch_sizes = [1, 0]\n', "'batch_sizes'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nbatch_sizes = [1, 8]\n[export]\ndynamic_batch = false\n',
         "'batch_sizes'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\ninput_layout = "NHWC"\n', "'input_layout'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nproviders = []\n', "'providers'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\ndla_core = 0\n', "'dla_core'"),
        ('backend = "tensorrt"\nprecision = "fp32"\ndla_core = 0\n', "'dla_core'"),
        ('backend = "tensorrt"\nprecision = "fp16"\n[tensorrt]\nbuilder_optimization_level = 6\n',
         "'tensorrt.builder_optimization_level'"),
        ('backend = "tensorrt"\nprecision = "fp16"\nfallback_backend = "tensorrt"\n', "'fallback_backend'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\n[export]\nopset = 9\n', "'export.opset'"),
        ('backend = "onnxruntime"\nprecision = "fp32"\nexport = 3\n', "[export]"),
    ],
)
def test_malformed_profile_names_the_key(tmp_path, body, key):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(OfaError) as info:
        load_target(str(p))
    message = str(info.value)
    assert key in message and "\n" not in message


def test_invalid_toml_and_missing_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("backend = \n")
    with pytest.raises(OfaError, match="not valid TOML"):
        load_target(str(p))
    with pytest.raises(OfaError, match="does not exist"):
        load_target(str(tmp_path / "nope.toml"))


def test_unknown_target_lists_known():
    with pytest.raises(OfaError, match=r"unknown target 'tpu'.*cpu.*jetson-orin"):
        load_target("tpu")


def test_targets_imports_without_torch():
    code = "import sys, ofa_deploy.targets as t; t.list_targets(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
