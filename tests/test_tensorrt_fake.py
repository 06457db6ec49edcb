"""``build_engine`` and ``TrtRunner`` driven end to end against a stand-in for TensorRT and
pycuda (this machine has neither, nor a GPU).

The stand-in implements the slice of the TensorRT 10 / pycuda API our code calls and makes
its "engine" compute with ONNX Runtime, so these tests check our side: which builder
settings a target turns into, the timing cache loaded and saved, the int8 calibrator fed
every batch and its cache reused, the sidecars written, the compatibility check refusing a
foreign engine before deserialisation, and the runner's buffer, batch and copy plumbing
(its logits must equal ONNX Runtime's). They say nothing about TensorRT itself:
``test_tensorrt.py`` does that where TensorRT is installed.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import numpy as np
import pytest

from ofa_deploy.errors import OfaError
from ofa_deploy.export import export_subnet
from ofa_deploy.export import tensorrt as T
from ofa_deploy.export.to_onnx import ort_session, run_onnx
from ofa_deploy.run import load_supernet

from conftest import make_fake_run, one_torch_thread


class FakeTRT:
    """Records what the code under test asked for; one instance per test."""

    def __init__(self) -> None:
        self.built_configs: list = []
        self.deserialized = 0
        self.calibration_batches_seen = 0
        self.module = self._module()

    def _module(self) -> types.ModuleType:
        fake = self
        m = types.ModuleType("tensorrt")
        m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        m.__version__ = "10.3.0"

        class _Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        class ILogger:
            Severity = _Severity

            def __init__(self) -> None:
                pass

        class Flag:
            FP16, INT8, GPU_FALLBACK = "FP16", "INT8", "GPU_FALLBACK"

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape = name, tuple(shape)

        class Network:
            def __init__(self):
                self.inputs, self.outputs, self.onnx = [], [], None

            def get_input(self, i):
                return self.inputs[i]

            def get_output(self, i):
                return self.outputs[i]

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse(self, data: bytes) -> bool:
                import onnx

                model = onnx.load_from_string(data)

                def dims(value):
                    return [d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim]

                self.network.inputs = [Tensor(v.name, dims(v)) for v in model.graph.input]
                self.network.outputs = [Tensor(v.name, dims(v)) for v in model.graph.output]
                self.network.onnx = data
                return True

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

        class TimingCache:
            def __init__(self, data: bytes):
                self.data = data

            def serialize(self) -> bytes:
                return self.data

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.int8_calibrator, self.calibration_profile = set(), [], None, None
                self.default_device_type, self.DLA_core, self.builder_optimization_level = None, None, None
                self.timing_cache = None

            def set_memory_pool_limit(self, pool, size):
                self.workspace = size

            def set_flag(self, flag):
                self.flags.add(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

            def create_timing_cache(self, data: bytes):
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.timing_cache = cache

            def get_timing_cache(self):
                return self.timing_cache

        class Builder:
            num_DLA_cores = 2

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.built_configs.append(config)
                if config.int8_calibrator is not None:
                    calibrator = config.int8_calibrator
                    if calibrator.read_calibration_cache() is None:
                        while calibrator.get_batch(["input"]) is not None:
                            fake.calibration_batches_seen += 1
                        calibrator.write_calibration_cache(b"int8 scales")
                if config.timing_cache is not None:
                    config.timing_cache.data += b"layer timings;"
                shape = list(network.inputs[0].shape)
                profile = config.profiles[0].shapes[1:] if config.profiles else (shape, shape, shape)
                header = json.dumps({"input": network.inputs[0].name, "output": network.outputs[0].name,
                                     "shape": shape, "profile": [list(p) for p in profile],
                                     "classes": network.outputs[0].shape[1]}).encode()
                return header + b"\n" + network.onnx

        class Mode:
            INPUT, OUTPUT = "INPUT", "OUTPUT"

        class Context:
            def __init__(self, engine):
                self.engine, self.addresses, self.batch = engine, {}, None

            def set_input_shape(self, name, shape):
                lo, hi = self.engine.meta["profile"][0][0], self.engine.meta["profile"][2][0]
                self.batch = shape[0]
                return lo <= shape[0] <= hi

            def get_tensor_shape(self, name):
                return (self.batch, self.engine.meta["classes"])

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, handle):
                meta = self.engine.meta
                x = FakeCuda.memory[self.addresses[meta["input"]]]
                chw = meta["shape"][1:]
                batch = x.reshape(-1)[: self.batch * int(np.prod(chw))].reshape(self.batch, *chw)
                y = self.engine.session.run(None, {meta["input"]: batch})[0]
                out = FakeCuda.memory[self.addresses[meta["output"]]]
                out.reshape(-1)[: y.size] = y.reshape(-1)
                return True

        class Engine:
            def __init__(self, data: bytes):
                import onnxruntime as ort

                header, onnx_bytes = data.split(b"\n", 1)
                self.meta = json.loads(header)
                self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
                self.num_io_tensors = 2

            def get_tensor_name(self, i):
                return [self.meta["input"], self.meta["output"]][i]

            def get_tensor_mode(self, name):
                return Mode.INPUT if name == self.meta["input"] else Mode.OUTPUT

            def get_tensor_shape(self, name):
                return tuple(self.meta["shape"]) if name == self.meta["input"] else (-1, self.meta["classes"])

            def get_tensor_profile_shape(self, name, index):
                return [tuple(p) for p in self.meta["profile"]]

            def get_tensor_dtype(self, name):
                return "FLOAT"

            def create_execution_context(self):
                return Context(self)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                fake.deserialized += 1
                return Engine(data)

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        m.ILogger, m.Builder, m.OnnxParser, m.Runtime = ILogger, Builder, OnnxParser, Runtime
        m.BuilderFlag = Flag
        m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        m.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
        m.TensorIOMode = Mode
        m.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        m.nptype = lambda dtype: np.float32
        return m


class FakeCuda:
    """pycuda.driver: device memory is numpy arrays addressed by integer handles."""

    memory: dict[int, np.ndarray] = {}
    gpu = ("Orin", (8, 7))

    class Error(Exception):
        pass

    class _Alloc:
        def __init__(self, nbytes):
            self.handle = 1000 + len(FakeCuda.memory)
            FakeCuda.memory[self.handle] = np.zeros(nbytes // 4, np.float32)

        def __int__(self):
            return self.handle

        def free(self):
            FakeCuda.memory.pop(self.handle, None)

    @classmethod
    def module(cls) -> types.ModuleType:
        m = types.ModuleType("pycuda.driver")
        m.Error = cls.Error
        m.init = lambda: None
        m.get_driver_version = lambda: 12020

        class Context:
            def push(self):
                pass

            def pop(self):
                pass

        class Device:
            def __init__(self, i):
                pass

            @staticmethod
            def count():
                return 1

            def name(self):
                return FakeCuda.gpu[0]

            def compute_capability(self):
                return FakeCuda.gpu[1]

            def retain_primary_context(self):
                return Context()

        def copy(dst, src):
            np.copyto(dst.reshape(-1)[: src.size], np.asarray(src, np.float32).reshape(-1))

        m.Device = Device
        m.mem_alloc = cls._Alloc
        m.memcpy_htod = lambda dev, host: copy(cls.memory[int(dev)], host)
        m.memcpy_htod_async = lambda dev, host, stream: copy(cls.memory[int(dev)], host)
        m.memcpy_dtoh_async = lambda host, dev, stream: np.copyto(host, cls.memory[int(dev)][: host.size])
        m.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
        m.Stream = lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None)
        m.Event = lambda: types.SimpleNamespace(record=lambda stream: None, time_till=lambda other: 0.25)
        return m


@pytest.fixture
def fake(monkeypatch, tmp_path):
    trt = FakeTRT()
    driver = FakeCuda.module()
    package = types.ModuleType("pycuda")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(FakeCuda, "gpu", ("Orin", (8, 7)))
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    return trt


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ofa_deploy.data import load_dataset

    root = tmp_path_factory.mktemp("fake-trt")
    supernet, _ = load_supernet(make_fake_run(root / "run"))
    train = load_dataset("digits", "train").images
    test = load_dataset("digits", "test").images[:40]
    with one_torch_thread():
        for name in ("jetson", "jetson-xavier"):
            export_subnet(supernet, supernet.space.smallest(), name, root / name, calib_images=train,
                          parity_images=test[:8], recalibrate=False, calibration_count=100)
    return root, test.numpy()


def test_fp16_build_runner_and_timing_cache(fake, exported, tmp_path, monkeypatch):
    root, x = exported
    with pytest.raises(OfaError, match="must be built on the Jetson itself"):
        T.build_engine(root / "jetson", "jetson")
    monkeypatch.setattr(T, "jetson_release", lambda: "# R36 (release), REVISION: 3.0")
    out = tmp_path / "e1"
    sidecar = T.build_engine(root / "jetson", "jetson", out_dir=out)
    config = fake.built_configs[-1]
    assert config.flags == {"FP16"} and config.workspace == 1024 << 20 and config.builder_optimization_level == 3
    assert config.profiles[0].shapes == ("input", (1, 1, 32, 32), (1, 1, 32, 32), (8, 1, 32, 32))
    assert config.default_device_type is None and config.int8_calibrator is None
    cache_file = tmp_path / "cache" / "tensorrt" / "orin-sm87-trt10.3.0.timing"
    assert cache_file.read_bytes() == b"layer timings;" and not sidecar["timing_cache"]["reused"]
    on_disk = json.loads((out / T.ENGINE_SIDECAR).read_text())
    assert on_disk == sidecar
    device = (sidecar["gpu_name"], sidecar["compute_capability"], sidecar["tensorrt_version"])
    assert device == ("Orin", "8.7", "10.3.0")
    assert sidecar["jetson_l4t"].startswith("# R36") and sidecar["precision"] == "fp16"
    assert sidecar["engine_sha256"] == T.sha256_file(out / T.ENGINE_FILE)
    assert sidecar["onnx_sha256"] == T.sha256_file(root / "jetson" / "model.onnx")
    assert sidecar["rebuild_command"] == f"ofa-deploy build-engine {root / 'jetson'} --target jetson"

    # the next subnet's build starts from the saved timings
    again = T.build_engine(root / "jetson", "jetson", out_dir=tmp_path / "e2")
    assert again["timing_cache"]["reused"] and cache_file.read_bytes() == b"layer timings;" * 2

    expected = run_onnx(ort_session(root / "jetson" / "model.onnx"), x)
    with T.TrtRunner(out / T.ENGINE_FILE) as runner:
        assert runner.input_shape == (1, 1, 32, 32) and runner.precision == "fp16"
        np.testing.assert_allclose(runner.infer(x[:8]), expected[:8], atol=1e-6)
        np.testing.assert_allclose(runner.infer(x[:3]), expected[:3], atol=1e-6)
        runner.step()
        assert runner.device_ms() == 0.25 and runner.info["gpu_name"] == "Orin"
        with pytest.raises(OfaError, match="does not fit the engine"):
            runner.infer(x[:9])
    with pytest.raises(OfaError, match="takes batches 1..8"):
        T.TrtRunner(out / T.ENGINE_FILE, batch=16)


def test_foreign_engine_refused_before_deserialisation(fake, exported, tmp_path, monkeypatch):
    root, x = exported
    monkeypatch.setattr(T, "jetson_release", lambda: "# R36")
    T.build_engine(root / "jetson", "jetson", out_dir=tmp_path / "e")
    monkeypatch.setattr(FakeCuda, "gpu", ("NVIDIA GeForce RTX 4090", (8, 9)))
    with pytest.raises(OfaError) as info:
        T.TrtRunner(tmp_path / "e" / T.ENGINE_FILE)
    assert "compute capability 8.7 (here 8.9)" in str(info.value) and "build-engine" in str(info.value)
    assert fake.deserialized == 0


def test_dla_int8_calibration_and_cache_reuse(fake, exported, tmp_path, monkeypatch):
    root, x = exported
    monkeypatch.setattr(T, "jetson_release", lambda: "# R35")
    profile = tmp_path / "xavier-int8.toml"
    profile.write_text('backend = "tensorrt"\nprecision = "int8"\nbuild_on_device = true\ndla_core = 1\n'
                       '[export]\ndynamic_batch = false\n')
    # the export is static batch 1 with 100 calibration images: 100 batches of 1
    out = tmp_path / "i8"
    sidecar = T.build_engine(root / "jetson-xavier", str(profile), out_dir=out, use_timing_cache=False)
    config = fake.built_configs[-1]
    assert config.flags == {"FP16", "INT8", "GPU_FALLBACK"}
    assert (config.default_device_type, config.DLA_core) == ("DLA", 1) and config.profiles == []
    assert fake.calibration_batches_seen == 100 and config.timing_cache is None
    assert (out / T.CALIBRATION_CACHE).read_bytes() == b"int8 scales"
    assert sidecar["calibration_cache_sha256"] == T.sha256_file(out / T.CALIBRATION_CACHE)
    assert sidecar["calibration_sha256"] == T.sha256_file(root / "jetson-xavier" / "calibration.npy")
    assert sidecar["dla_core"] == 1 and sidecar["timing_cache"] is None
    T.build_engine(root / "jetson-xavier", str(profile), out_dir=out, use_timing_cache=False)
    assert fake.calibration_batches_seen == 100  # second build read the cache, no recalibration

    too_many = tmp_path / "dla5.toml"
    too_many.write_text(profile.read_text().replace("dla_core = 1", "dla_core = 5"))
    with pytest.raises(OfaError, match="2 DLA cores"):
        T.build_engine(root / "jetson-xavier", str(too_many), out_dir=tmp_path / "x", use_timing_cache=False)


def test_build_refuses_damaged_exports_and_cpu_targets(fake, exported, tmp_path):
    root, x = exported
    with pytest.raises(OfaError, match="not TensorRT"):
        T.build_engine(root / "jetson", "cpu", out_dir=tmp_path / "c")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / "jetson", copy)
    (copy / "model.onnx").write_bytes(b"truncated")
    with pytest.raises(OfaError, match="SHA-256"):
        T.build_engine(copy, "cuda", out_dir=tmp_path / "d")
