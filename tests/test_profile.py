"""Latency measurement: statistics against numpy, the protocol's stopping and retry rules,
the onnxruntime/torch backends, model resolution, errors, and the torch-free CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.profile import Protocol, profile_model, summarize
from ofa_deploy.profile.protocol import measure, robust_cov
from ofa_deploy.targets import load_target

FAST = dict(warmup_s=0.02, min_iterations=20, min_time_s=0.02, max_retries=0)
REPO = Path(__file__).resolve().parents[1]


def tiny_onnx(path: Path, *, batch: int | str = "N", channels: int = 1) -> Path:
    """A small conv net built with onnx.helper (no torch): (batch, C, 32, 32) -> (batch, 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, channels, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "tiny.onnx")


def test_summarize_matches_numpy():
    xs = list(np.random.default_rng(1).gamma(2.0, 0.3, size=501))
    s = summarize(xs)
    a = np.asarray(xs)
    assert s["min"] == a.min() and s["max"] == a.max()
    assert s["mean"] == pytest.approx(a.mean())
    assert s["std"] == pytest.approx(a.std(ddof=1))
    for q in (50, 90, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(a, q))


def test_robust_cov_ignores_rare_spikes_but_sees_spread():
    steady = [1.0 + 0.01 * ((i % 5) - 2) for i in range(1000)]
    spiky = steady[:-3] + [50.0, 60.0, 70.0]
    assert robust_cov(spiky) < 0.02
    assert summarize(spiky)["std"] / summarize(spiky)["mean"] > 1.0
    bimodal = [1.0, 2.0] * 500
    assert robust_cov(bimodal) > 0.3


def test_protocol_from_target_and_overrides():
    cpu = load_target("cpu")
    p = Protocol.from_target(cpu)
    assert (p.warmup_s, p.min_iterations, p.min_time_s, p.cov_threshold, p.max_retries) == (
        cpu.measure.warmup_s, cpu.measure.min_iterations, cpu.measure.min_time_s,
        cpu.measure.cov_threshold, cpu.measure.max_retries)
    q = Protocol.from_target(cpu, min_iterations=7, cov_threshold=None, max_retries=0)
    assert q.min_iterations == 7 and q.cov_threshold == cpu.measure.cov_threshold and q.max_retries == 0
    with pytest.raises(OfaError):
        Protocol(min_iterations=1)


def test_measure_reaches_both_minimums():
    calls = []
    protocol = Protocol(warmup_s=0.0, min_iterations=30, min_time_s=0.05, max_retries=0, cov_threshold=10)
    r = measure(lambda: calls.append(1), protocol)
    assert r["n"] >= 30 and r["attempts"][0]["wall_s"] >= 0.05
    slow = Protocol(warmup_s=0.0, min_iterations=5, min_time_s=0.0, max_retries=0, cov_threshold=10)
    r = measure(lambda: time.sleep(0.002), slow)
    assert r["n"] == 5 and r["latency_ms"]["min"] >= 2.0


def test_unstable_is_retried_then_flagged():
    state = {"i": 0}

    def step():  # alternates 0 and 3 ms: a bimodal latency no retry makes steady
        state["i"] += 1
        if state["i"] % 2:
            time.sleep(0.003)

    protocol = Protocol(warmup_s=0.0, min_iterations=20, min_time_s=0.0, cov_threshold=0.05, max_retries=2)
    r = measure(step, protocol)
    assert r["unstable"] is True and len(r["attempts"]) == 3 and r["cov"] > 0.05


def test_device_time_is_primary_and_host_time_kept():
    device = iter(float(v) for v in range(10**6))
    protocol = Protocol(warmup_s=0.0, min_iterations=20, min_time_s=0.0, cov_threshold=100.0, max_retries=2)
    r = measure(lambda: None, protocol, device_ms=lambda: 1.0 + 1e-9 * next(device))
    assert r["latency_kind"] == "device_compute"
    assert r["latency_ms"]["p50"] == pytest.approx(1.0) and r["host_latency_ms"]["p50"] < 1.0
    assert len(r["attempts"]) == 1 and r["unstable"] is False


def test_profile_onnx_contract(onnx_path: Path):
    r = profile_model(onnx_path, "cpu", protocol=Protocol(**FAST, cov_threshold=100.0))
    assert set(r["latency_ms"]) >= {"min", "mean", "std", "p50", "p90", "p99"}
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert isinstance(r["n"], int) and r["n"] >= 20 and isinstance(r["cov"], float)
    assert r["backend"] == "onnxruntime" and r["provider"] == "CPUExecutionProvider"
    assert r["batch"] == 1 and r["input_shape"] == [1, 1, 32, 32] and r["threads"] == 1
    assert r["throughput_per_s"] > 0 and r["unstable"] is False
    assert r["model"]["format"] == "onnx" and len(r["model"]["sha256"]) == 64
    env = r["environment"]
    assert {"hostname", "date", "cpu", "threads", "libraries"} <= set(env)
    assert "onnxruntime" in env["libraries"] and env["cpu"]["logical_cores"] >= 1
    json.dumps(r)  # JSON-ready


def test_batch_and_export_directory(tmp_path: Path):
    export = tmp_path / "export"
    tiny_onnx(export / "model.onnx")
    sidecar = {"format": "ofa-deploy/model", "subnet": {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}, "macs": 123}
    (export / "model.json").write_text(json.dumps(sidecar))
    r = profile_model(export, "cpu", batch=4, protocol=Protocol(**FAST, cov_threshold=100.0))
    assert r["batch"] == 4 and r["input_shape"][0] == 4
    assert r["model"]["subnet"] == sidecar["subnet"] and r["model"]["macs"] == 123


def test_repeated_runs_agree_within_spread(onnx_path: Path):
    protocol = Protocol(warmup_s=0.05, min_iterations=200, min_time_s=0.1, cov_threshold=100.0, max_retries=0)
    a = profile_model(onnx_path, "cpu", protocol=protocol)["latency_ms"]
    b = profile_model(onnx_path, "cpu", protocol=protocol)["latency_ms"]
    assert abs(a["p50"] - b["p50"]) <= max(a["p90"] - a["min"], b["p90"] - b["min"])


def test_torch_backend_compares_eager(tmp_path: Path):
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    export = tmp_path / "export"
    tiny_onnx(export / "model.onnx")
    (export / "model.json").write_text(json.dumps({"format": "ofa-deploy/model", "space": space.to_dict(),
                                                   "subnet": space.smallest().to_dict()}))
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = profile_model(export, "cpu", backend="torch", protocol=Protocol(**FAST, cov_threshold=100.0))
        assert torch.get_num_threads() == 2  # the caller's thread count afterwards
    finally:
        torch.set_num_threads(before)
    assert r["backend"] == "torch" and r["input_shape"] == [1, 1, 32, 32] and r["latency_ms"]["p50"] > 0
    assert r["runner"]["torch_threads"] == 1  # the cpu target's one thread while timing


def test_bad_inputs_raise_clear_errors(tmp_path: Path, onnx_path: Path):
    with pytest.raises(OfaError, match="does not exist"):
        profile_model(tmp_path / "missing.onnx", "cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(OfaError, match="onnxruntime can load"):
        profile_model(garbage, "cpu")
    static = tiny_onnx(tmp_path / "static.onnx", batch=1)
    with pytest.raises(OfaError, match="static batch of 1"):
        profile_model(static, "cpu", batch=8)
    (tmp_path / "notexport").mkdir()
    with pytest.raises(OfaError, match="not an export directory"):
        profile_model(tmp_path / "notexport", "cpu")
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    with pytest.raises(OfaError, match="neither"):
        profile_model(weird, "cpu")
    with pytest.raises(OfaError, match="engine"):
        profile_model(onnx_path, "cpu", backend="tensorrt")


def test_tensorrt_target_falls_back_and_says_so(onnx_path: Path):
    import onnxruntime as ort

    r = profile_model(onnx_path, "cuda", threads=1, protocol=Protocol(**FAST, cov_threshold=100.0))
    assert r["backend"] == "onnxruntime" and "fallback" in r["fallback"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert r["provider"] == "CPUExecutionProvider" and "CUDAExecutionProvider is not available" in r["fallback"]


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorrt") is None, reason="TensorRT is not installed on this machine"
)
def test_tensorrt_engine_profiles(fake_run: Path, tmp_path: Path):  # pragma: no cover - needs a GPU
    import torch

    from ofa_deploy.export import export_subnet
    from ofa_deploy.export.tensorrt import build_engine
    from ofa_deploy.weights import load_supernet

    net, _ = load_supernet(fake_run)
    images = torch.randn(64, 1, 32, 32)
    export_subnet(net, net.space.middle(), "cuda", tmp_path / "exp", calib_images=images, parity_images=images[:8])
    build_engine(tmp_path / "exp", "cuda")
    r = profile_model(tmp_path / "exp", "cuda", protocol=Protocol(**FAST, cov_threshold=100.0))
    assert r["backend"] == "tensorrt" and r["latency_kind"] == "device_compute" and r["fallback"] is None
    assert r["device_latency_ms"]["p50"] <= r["host_latency_ms"]["p50"]
    assert r["environment"]["gpu"] or r["environment"].get("jetson")


BLOCK_TORCH = (
    "import sys, runpy; sys.modules['torch'] = None; "
    "sys.argv = ['ofa-deploy'] + sys.argv[1:]; runpy.run_module('ofa_deploy', run_name='__main__')"
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_profile_json_without_torch(onnx_path: Path, tmp_path: Path):
    out = tmp_path / "result.json"
    done = _cli("profile", str(onnx_path), "--target", "cpu", "--json", "--warmup-s", "0.02",
                "--min-iterations", "20", "--min-time-s", "0.02", "--cov-threshold", "100", "--out", str(out))
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert set(r["latency_ms"]) >= {"min", "mean", "std", "p50", "p90", "p99"}
    assert r["n"] >= 20 and "environment" in r and "torch" not in r["runner"]
    assert json.loads(out.read_text())["latency_ms"] == r["latency_ms"]


def test_cli_profile_bad_model_is_one_line(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    done = _cli("profile", str(bad), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("ofa-deploy: error:")


def test_jetson_environment_is_read_when_present(monkeypatch, tmp_path: Path):
    import importlib

    env_mod = importlib.import_module("ofa_deploy.profile.environment")

    devfreq = tmp_path / "devfreq" / "17000000.gpu"
    devfreq.mkdir(parents=True)
    for name, value in (("cur_freq", "1020000000"), ("min_freq", "1020000000"), ("max_freq", "1020000000")):
        (devfreq / name).write_text(value)
    files = {"/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0", "/proc/device-tree/model":
             "NVIDIA Jetson Orin Nano Developer Kit\x00"}
    real_read = env_mod._read
    monkeypatch.setattr(env_mod, "_read", lambda p: files.get(str(p), real_read(p)))
    monkeypatch.setattr(env_mod, "DEVFREQ", tmp_path / "devfreq")
    monkeypatch.setattr(env_mod.shutil, "which", lambda name: "/usr/bin/nvpmodel" if name == "nvpmodel" else None)
    monkeypatch.setattr(env_mod, "_command", lambda argv: "NV Power Mode: MAXN_SUPER\n2\n")
    info = env_mod.environment(threads=0)["jetson"]
    assert info["model"] == "NVIDIA Jetson Orin Nano Developer Kit" and info["l4t"].startswith("# R36")
    assert info["nvpmodel"] == "NV Power Mode: MAXN_SUPER 2" and info["jetson_clocks"] == "on"
    assert info["gpu_freq"]["cur_hz"] == 1020000000
