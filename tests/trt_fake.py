"""A behaviour stand-in for TensorRT (8.6, 10.x or 11.x) and pycuda, for machines without
either (and without a GPU).

It refuses what TensorRT refuses, as far as this project's code can run into it (see
shared/reference/tensorrt_audit.md): enums and flags exist only in the versions that have
them (``EXPLICIT_BATCH`` gone in 11, ``BuilderFlag.FP16/INT8`` and the calibrator gone in 11),
``set_flag`` takes only real ``BuilderFlag`` members, an 8.6 ONNX parse needs an
explicit-batch network, parse failures are reported through ``num_errors``/``get_error``,
``set_shape`` raises on bad shapes, a corrupt timing cache logs an ERROR (8.6 still returns a
cache object, later versions None), a cache from another GPU is refused by
``set_timing_cache`` (False), ``build_serialized_network`` returns None (after logging an
ERROR) for a strongly typed network with precision flags, an 8.x Q/DQ network without INT8,
a dynamic input without a profile, a DLA core the device lacks or fp32 layers on DLA without
GPU fallback, ``Builder``/``Runtime`` raise ``TypeError`` when CUDA cannot start, an engine
built for a DLA core deserialises only on a runtime set to that core, and an execution
context reports -1 output dimensions until the input shape is set; pycuda's init can fail,
and copies, executions and events happen only when the stream is synchronised.

Its "engine" computes with ONNX Runtime, so the runner's plumbing is checked against real
logits. Every TensorRT attribute that ``ofa_deploy`` code reads or sets on the stand-in is
recorded (``FakeTRT.touched``, as (owner, name) with TensorRT's own class names), which is
what ``test_tensorrt_bindings.py`` checks against the real bindings of each version.
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types

import numpy as np

VERSIONS = {"8.6": "8.6.1", "10.3": "10.3.0", "10.16": "10.16.1.11", "11.4": "11.4.0.106"}
MAGIC = b"TRTFAKE-TIMING|"


def _from_our_code(depth: int = 2) -> bool:
    return sys._getframe(depth).f_globals.get("__name__", "").startswith("ofa_deploy")


class _Touches:
    """Where the stand-in records what our code touched (one per installed stand-in)."""

    current: set | None = None

    @classmethod
    def add(cls, owner: str, name: str) -> None:
        if cls.current is not None and not name.startswith("__"):
            cls.current.add((owner, name))


class _RecordingMeta(type):
    def __getattribute__(cls, name):
        if _from_our_code() and "_trt_name" in type.__getattribute__(cls, "__dict__"):
            _Touches.add(type.__getattribute__(cls, "_trt_name"), name)
        return type.__getattribute__(cls, name)


class _RecordingEnumMeta(enum.EnumMeta):
    def __getattribute__(cls, name):
        if _from_our_code() and not name.startswith("_"):
            _Touches.add(type.__getattribute__(cls, "_trt_name"), name)
        return super().__getattribute__(name)


class _Recorded(metaclass=_RecordingMeta):
    """Instances record attribute reads and writes made by ofa_deploy code under the real
    TensorRT class name ``_trt_name`` (subclasses our code defines, like its logger, are not
    TensorRT's and are not recorded)."""

    _trt_name = ""

    def __getattribute__(self, name):
        cls = type(self)
        if "_trt_name" in cls.__dict__ and _from_our_code():
            _Touches.add(cls._trt_name, name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        cls = type(self)
        if "_trt_name" in cls.__dict__ and _from_our_code():
            _Touches.add(cls._trt_name, name)
        object.__setattr__(self, name, value)


class _RecordingModule(types.ModuleType):
    def __getattribute__(self, name):
        if _from_our_code():
            _Touches.add("", name)
        return super().__getattribute__(name)


class _RecordedEnum(enum.IntEnum, metaclass=_RecordingEnumMeta):
    pass


def _enum(trt_name: str, members: list):
    """An enum whose members are TensorRT's (numbered from 0) and whose member reads by our
    code are recorded under ``trt_name``."""
    cls = _RecordedEnum(trt_name.split(".")[-1], [(m, i) for i, m in enumerate(members)])
    cls._trt_name = trt_name
    return cls


class FakeTRT:
    """One stand-in ``tensorrt`` module of ``version`` ("8.6", "10.3", "10.16" or "11.4"),
    with knobs for the failures a test wants: ``cuda_starts``, ``num_dla_cores``, ``gpu``
    (the device tag timing caches carry)."""

    def __init__(self, version: str = "10.3") -> None:
        self.version = VERSIONS[version]
        self.major = int(version.split(".")[0])
        self.built_configs: list = []
        self.deserialized = 0
        self.cuda_starts = True
        self.num_dla_cores = 2
        self.gpu = "Orin"
        self.fail_build = None  # an error TensorRT reports while building (out of memory, ...)
        self.touched: set = set()
        self.module = self._module()

    def _module(self) -> types.ModuleType:
        fake, major = self, self.major
        m = _RecordingModule("tensorrt")
        m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        m.__version__ = self.version

        Severity = _enum("ILogger.Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
        flags = ["FP16", "INT8", "GPU_FALLBACK"] if major < 11 else ["GPU_FALLBACK"]
        BuilderFlag = _enum("BuilderFlag", flags + ["DEBUG", "REFIT"])
        net_flags = {8: ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"], 10: ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
                     11: ["STRONGLY_TYPED"]}[major]
        NetFlag = _enum("NetworkDefinitionCreationFlag", net_flags)
        MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
        DeviceType = _enum("DeviceType", ["GPU", "DLA"])
        TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
        LayerType = _enum("LayerType", ["CONVOLUTION", "ACTIVATION", "POOLING", "ELEMENTWISE", "QUANTIZE",
                                        "DEQUANTIZE", "CAST", "IDENTITY", "CONSTANT", "SHUFFLE", "OTHER"])
        DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32"])

        class ILogger(_Recorded):
            _trt_name = "ILogger"

            def __init__(self) -> None:
                pass

        type.__setattr__(ILogger, "Severity", Severity)

        def log(logger, severity, msg):
            logger.log(severity, msg)

        class ParserError(_Recorded):
            _trt_name = "ParserError"

            def __init__(self, text):
                object.__setattr__(self, "text", text)

            def __str__(self):
                return object.__getattribute__(self, "text")

        class ITensor(_Recorded):
            _trt_name = "ITensor"

            def __init__(self, name, shape, dtype):
                self.name, self.shape, self.dtype = name, tuple(shape), dtype

        class ILayer(_Recorded):
            _trt_name = "ILayer"

            def __init__(self, kind, outputs):
                self.type, self.outputs, self.num_outputs = kind, outputs, len(outputs)

            def get_output(self, i):
                return self.outputs[i]

        class INetworkDefinition(_Recorded):
            _trt_name = "INetworkDefinition"

            def __init__(self, flags):
                self.flags, self.inputs, self.outputs, self.layers, self.onnx = flags, [], [], [], None
                self.strongly_typed = "STRONGLY_TYPED" in net_flags and bool(
                    flags & (1 << int(NetFlag.STRONGLY_TYPED)))
                self.explicit_batch = major >= 10 or bool(flags & (1 << int(NetFlag.EXPLICIT_BATCH)))

            num_inputs = property(lambda self: len(self.inputs))
            num_outputs = property(lambda self: len(self.outputs))
            num_layers = property(lambda self: len(self.layers))

            def get_input(self, i):
                return self.inputs[i]

            def get_output(self, i):
                return self.outputs[i]

            def get_layer(self, i):
                return self.layers[i]

        class OnnxParser(_Recorded):
            _trt_name = "OnnxParser"

            def __init__(self, network, logger):
                self.network, self.logger, self.errors = network, logger, []

            num_errors = property(lambda self: len(self.errors))

            def get_error(self, i):
                return self.errors[i]

            def parse(self, data: bytes) -> bool:
                import onnx

                self.errors = []
                if not self.network.explicit_batch:
                    self.errors.append(ParserError("the network must be created with the EXPLICIT_BATCH flag"))
                    return False
                try:
                    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
                except Exception as exc:  # onnx raises its own DecodeError
                    self.errors.append(ParserError(f"ModelImporter: failed to parse the protobuf ({exc})"))
                    return False
                half = onnx.TensorProto.FLOAT16
                types_ = {v.name: v.type.tensor_type.elem_type for v in
                          list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
                types_.update({t.name: t.data_type for t in model.graph.initializer})

                def dims(value):
                    return [d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim]

                def dtype(name):
                    return DataType.HALF if types_.get(name) == half else DataType.FLOAT

                kinds = {"QuantizeLinear": LayerType.QUANTIZE, "DequantizeLinear": LayerType.DEQUANTIZE,
                         "Conv": LayerType.CONVOLUTION, "Cast": LayerType.CAST}
                net = self.network
                net.inputs = [ITensor(v.name, dims(v), dtype(v.name)) for v in model.graph.input
                              if v.name not in {t.name for t in model.graph.initializer}]
                net.outputs = [ITensor(v.name, dims(v), dtype(v.name)) for v in model.graph.output]
                net.layers = [
                    ILayer(kinds.get(n.op_type, LayerType.OTHER), [ITensor(o, [], dtype(o)) for o in n.output])
                    for n in model.graph.node
                ]
                net.onnx = data
                return True

        class IOptimizationProfile(_Recorded):
            _trt_name = "IOptimizationProfile"

            def __init__(self):
                self.shapes = None

            def set_shape(self, name, lo, opt, hi):
                lo, opt, hi = tuple(lo), tuple(opt), tuple(hi)
                if not (len(lo) == len(opt) == len(hi)) or any(
                        not 0 < a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    raise ValueError(f"invalid dimensions min {lo} opt {opt} max {hi}")
                self.shapes = (name, lo, opt, hi)

        class ITimingCache(_Recorded):
            _trt_name = "ITimingCache"

            def __init__(self, data: bytes):
                self.data = data

            def serialize(self) -> bytes:
                return self.data

        class IBuilderConfig(_Recorded):
            _trt_name = "IBuilderConfig"

            def __init__(self, logger):
                self.logger, self.flags, self.profiles, self.timing_cache, self.workspace = (
                    logger,
                    set(),
                    [],
                    None,
                    None,
                )
                self.default_device_type, self.DLA_core = DeviceType.GPU, -1
                if major >= 9 or fake.version.startswith("8.6"):
                    self.builder_optimization_level = 3

            def set_memory_pool_limit(self, pool, size):
                if not isinstance(pool, MemoryPoolType):
                    raise TypeError("set_memory_pool_limit(): incompatible function arguments")
                self.workspace = size

            def set_flag(self, flag):
                if not isinstance(flag, BuilderFlag):
                    raise TypeError("set_flag(): incompatible function arguments")
                self.flags.add(flag.name)

            def add_optimization_profile(self, profile):
                if profile.shapes is None:
                    return -1
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, data: bytes):
                data = bytes(data)
                if data and not data.startswith(MAGIC):
                    log(self.logger, Severity.ERROR, "ITimingCache::deserialize: corrupt timing cache")
                    return ITimingCache(b"") if major < 10 else None
                return ITimingCache(data or MAGIC + fake.gpu.encode() + b"|")

            def set_timing_cache(self, cache, ignore_mismatch):
                if not cache.data.startswith(MAGIC + fake.gpu.encode() + b"|") and not ignore_mismatch:
                    log(self.logger, Severity.WARNING, "timing cache was created on another device")
                    return False
                self.timing_cache = cache
                return True

            def get_timing_cache(self):
                return self.timing_cache

        class Builder(_Recorded):
            _trt_name = "Builder"

            def __init__(self, logger):
                if not fake.cuda_starts:
                    raise TypeError("pybind11::init(): factory function returned nullptr")
                self.logger = logger

            num_DLA_cores = property(lambda self: fake.num_dla_cores)

            def create_network(self, flags):
                if flags >> len(net_flags):
                    raise ValueError(f"invalid network creation flags {flags}")
                return INetworkDefinition(flags)

            def create_builder_config(self):
                return IBuilderConfig(self.logger)

            def create_optimization_profile(self):
                return IOptimizationProfile()

            def build_serialized_network(self, network, config):
                fake.built_configs.append(config)
                problem = self._refusal(network, config)
                if problem:
                    log(self.logger, Severity.ERROR, problem)
                    return None
                if config.timing_cache is not None:
                    config.timing_cache.data += b"layer timings;"
                net_in, net_out = network.inputs[0], network.outputs[0]
                shape = list(net_in.shape)
                profile = config.profiles[0].shapes[1:] if config.profiles else (shape, shape, shape)
                header = json.dumps({"input": net_in.name, "output": net_out.name, "shape": shape,
                                     "profile": [list(p) for p in profile], "classes": net_out.shape[1],
                                     "dtypes": [int(net_in.dtype), int(net_out.dtype)],
                                     "dla_core": config.DLA_core if config.default_device_type == DeviceType.DLA
                                     else None}).encode()
                return header + b"\n" + network.onnx

            def _refusal(self, network, config):
                flags = config.flags
                if fake.fail_build:
                    return fake.fail_build
                if network.strongly_typed and flags & {"FP16", "INT8"}:
                    return "setFlag: precision flags are not allowed on a strongly typed network"
                qdq = any(layer.type in (LayerType.QUANTIZE, LayerType.DEQUANTIZE) for layer in network.layers)
                if qdq and not network.strongly_typed and "INT8" not in flags:
                    return "Network contains Q/DQ layers but the INT8 builder flag is not set"
                if network.inputs[0].shape[0] == -1 and not config.profiles:
                    return "Network has dynamic or shape inputs, but no optimization profile has been defined"
                if config.default_device_type == DeviceType.DLA:
                    if not 0 <= config.DLA_core < fake.num_dla_cores:
                        return f"DLA core {config.DLA_core} is not available"
                    half = any(o.dtype == DataType.HALF for layer in network.layers for o in layer.outputs)
                    low = flags & {"FP16", "INT8"} or (network.strongly_typed and (half or qdq))
                    if not low and "GPU_FALLBACK" not in flags:
                        return "DLA does not support FP32 layers and GPU fallback is not enabled"
                return None

        class IExecutionContext(_Recorded):
            _trt_name = "IExecutionContext"

            def __init__(self, engine):
                self.engine, self.addresses, self.batch = engine, {}, None

            def set_input_shape(self, name, shape):
                meta = self.engine.meta
                if name != meta["input"]:
                    return False
                lo, hi = meta["profile"][0][0], meta["profile"][2][0]
                if not lo <= shape[0] <= hi or list(shape[1:]) != meta["shape"][1:]:
                    return False
                self.batch = shape[0]
                return True

            def get_tensor_shape(self, name):
                return (-1 if self.batch is None else self.batch, self.engine.meta["classes"])

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, stream_handle):
                meta = self.engine.meta
                if self.batch is None or set(self.addresses) != {meta["input"], meta["output"]}:
                    return False
                FakeCuda.streams[stream_handle].pending.append(self._execute)
                return True

            def _execute(self):
                meta = self.engine.meta
                FakeCuda.clock_ms += 0.25 * self.batch
                x = FakeCuda.memory[self.addresses[meta["input"]]]
                chw = meta["shape"][1:]
                count = self.batch * int(np.prod(chw))
                batch = x.view(self.engine.in_dtype)[:count].reshape(self.batch, *chw)
                feed = self.engine.session.get_inputs()[0]
                want = np.float16 if "float16" in feed.type else np.float32
                y = self.engine.session.run(None, {meta["input"]: batch.astype(want)})[0]
                out = FakeCuda.memory[self.addresses[meta["output"]]].view(self.engine.out_dtype)
                out[: y.size] = y.reshape(-1)

        class ICudaEngine(_Recorded):
            _trt_name = "ICudaEngine"

            def __init__(self, meta, onnx_bytes):
                import onnxruntime as ort

                self.meta = meta
                self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
                self.num_io_tensors = 2
                self.in_dtype, self.out_dtype = (np.float16 if DataType(d) == DataType.HALF else np.float32
                                                 for d in meta["dtypes"])

            def get_tensor_name(self, i):
                return [self.meta["input"], self.meta["output"]][i]

            def get_tensor_mode(self, name):
                return TensorIOMode.INPUT if name == self.meta["input"] else TensorIOMode.OUTPUT

            def get_tensor_shape(self, name):
                return tuple(self.meta["shape"]) if name == self.meta["input"] else (-1, self.meta["classes"])

            def get_tensor_profile_shape(self, name, index):
                if name != self.meta["input"] or index != 0:
                    raise ValueError("no such profile or input")
                return [tuple(p) for p in self.meta["profile"]]

            def get_tensor_dtype(self, name):
                return DataType(self.meta["dtypes"][0 if name == self.meta["input"] else 1])

            def create_execution_context(self):
                return IExecutionContext(self)

        class Runtime(_Recorded):
            _trt_name = "Runtime"

            def __init__(self, logger):
                if not fake.cuda_starts:
                    raise TypeError("pybind11::init(): factory function returned nullptr")
                self.logger, self.DLA_core = logger, -1

            def deserialize_cuda_engine(self, data):
                fake.deserialized += 1
                try:
                    header, onnx_bytes = bytes(data).split(b"\n", 1)
                    meta = json.loads(header)
                except ValueError:  # TensorRT logs a magic-tag or version error and returns None
                    log(self.logger, Severity.ERROR, "IRuntime::deserializeCudaEngine: not a serialized engine")
                    return None
                if meta["dla_core"] is not None and self.DLA_core != meta["dla_core"]:
                    log(self.logger, Severity.ERROR, f"engine was built for DLA core {meta['dla_core']}")
                    return None
                return ICudaEngine(meta, onnx_bytes)

        for name, value in dict(ILogger=ILogger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
                                BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetFlag,
                                MemoryPoolType=MemoryPoolType, DeviceType=DeviceType, TensorIOMode=TensorIOMode,
                                LayerType=LayerType, DataType=DataType).items():
            setattr(m, name, value)
        if major < 11:
            m.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
        m.nptype = lambda dtype: np.float16 if dtype == DataType.HALF else np.float32
        return m


class FakeCuda:
    """pycuda.driver: device memory is numpy byte arrays addressed by integer handles."""

    memory: dict = {}
    streams: dict = {}
    gpu = ("Orin", (8, 7))
    devices = 1
    clock_ms = 0.0  # the GPU's clock: an execution of batch n takes 0.25 * n ms
    init_error = None  # what cuInit reports, e.g. "cuInit failed: no CUDA-capable device is detected"

    class Error(Exception):
        pass

    class _Alloc:
        def __init__(self, nbytes):
            self.handle = 1000 + len(FakeCuda.memory)
            FakeCuda.memory[self.handle] = np.zeros(nbytes, np.uint8)

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
        m.contexts_pushed = []

        class Context:
            def __init__(self, index):
                self.index = index

            def push(self):
                m.contexts_pushed.append(self.index)

            def pop(self):
                m.contexts_pushed.pop()

        class Device:
            def __init__(self, i):
                if not 0 <= i < FakeCuda.devices:
                    raise cls.Error(f"cuDeviceGet failed: invalid device ordinal {i}")
                self.index = i

            @staticmethod
            def count():
                return FakeCuda.devices

            def name(self):
                return FakeCuda.gpu[0] + ("" if self.index == 0 else f" #{self.index}")

            def compute_capability(self):
                return FakeCuda.gpu[1]

            def retain_primary_context(self):
                return Context(self.index)

        def htod(dev, host):
            raw = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
            cls.memory[int(dev)][: raw.size] = raw

        def dtoh(host, dev):
            raw = host.view(np.uint8).reshape(-1)
            raw[:] = cls.memory[int(dev)][: raw.size]

        m.Device = Device
        m.mem_alloc = cls._Alloc
        class Stream:
            """Work is queued and happens only at ``synchronize()``, as on a GPU: a caller
            that reads results without synchronising reads stale memory."""

            def __init__(self):
                self.handle = 7000 + len(cls.streams)
                self.pending = []
                cls.streams[self.handle] = self

            def synchronize(self):
                while self.pending:
                    self.pending.pop(0)()

        class Event:
            def __init__(self):
                self.at = None

            def record(self, stream):
                stream.pending.append(lambda: setattr(self, "at", cls.clock_ms))

            def time_till(self, other):
                if self.at is None or other.at is None:
                    raise cls.Error("cuEventElapsedTime failed: the events have not been recorded yet")
                return other.at - self.at

        # the arrays are copied when the work is queued, as a pinned host buffer may change
        m.memcpy_htod_async = lambda dev, host, stream: stream.pending.append(
            lambda data=np.array(host): htod(dev, data))  # noqa: B008 - copied when queued, on purpose
        m.memcpy_dtoh_async = lambda host, dev, stream: stream.pending.append(lambda: dtoh(host, dev))
        m.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
        m.Stream = Stream
        m.Event = Event
        if cls.init_error is not None:
            def init():
                raise cls.Error(cls.init_error)

            m.init = init
        return m


def install(monkeypatch, version: str = "10.3") -> FakeTRT:
    """Put a stand-in TensorRT of ``version`` and pycuda in ``sys.modules`` (undone by
    ``monkeypatch``) and start recording what ofa_deploy touches into ``FakeTRT.touched``."""
    trt = FakeTRT(version)
    driver = FakeCuda.module()
    package = types.ModuleType("pycuda")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(FakeCuda, "gpu", ("Orin", (8, 7)))
    monkeypatch.setattr(FakeCuda, "devices", 1)
    monkeypatch.setattr(FakeCuda, "init_error", None)
    monkeypatch.setattr(_Touches, "current", trt.touched)
    trt.driver = driver
    return trt


# -- exports in each precision, and a tour of the engine path ---------------------------
def _profile(precision: str, allowed: str, body: str) -> str:
    from ofa_deploy.targets import Target

    # profiles list the precisions a target allows once targets.py knows the key
    listed = f"precisions = {allowed}\n" if "precisions" in getattr(Target, "__dataclass_fields__", {}) else ""
    return f'backend = "tensorrt"\nprecision = "{precision}"\n{listed}{body}'


GPU_FP32 = _profile("fp32", '["fp32", "fp16", "int8"]', "batch_sizes = [1, 8]\n[tensorrt]\nworkspace_mb = 256\n")
STATIC = "batch_sizes = [1]\n[export]\ndynamic_batch = false\n[tensorrt]\ntiming_cache = false\n"
DLA_FP16 = _profile("fp16", '["fp16", "int8"]', "dla_core = 1\n" + STATIC)


def make_variant(src, dst, precision: str, keep_io_types: bool = True):
    """A copy of export directory ``src`` whose ONNX carries ``precision`` (fp16 tensors,
    with fp32 input/output unless ``keep_io_types`` is off, or ONNX Runtime's static Q/DQ
    int8 calibrated on the export's calibration images), with ``model.json`` saying so."""
    import shutil

    import onnx

    from ofa_deploy.export.sidecar import file_entry

    shutil.copytree(src, dst)
    onnx_path = dst / "model.onnx"
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=keep_io_types), str(onnx_path))
    elif precision == "int8":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        images = np.load(dst / "calibration.npy")[:16]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter([{"input": images[i : i + 1]} for i in range(len(images))])

            def get_next(self):
                return next(self.items, None)

        quantize_static(str(src / "model.onnx"), str(onnx_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True)
    model = json.loads((dst / "model.json").read_text())
    model["precision"] = precision
    model["files"]["model.onnx"] = file_entry(onnx_path)
    (dst / "model.json").write_text(json.dumps(model))
    return dst


def make_exports(root):
    """Export directories of one small subnet: ``gpu-<precision>`` (dynamic batch 1..8) and
    ``dla-<precision>`` (static batch 1) for fp32, fp16 and int8, plus the two profiles."""
    from conftest import make_fake_run, one_torch_thread

    from ofa_deploy.data import load_dataset
    from ofa_deploy.export import export_subnet
    from ofa_deploy.weights import load_supernet

    supernet, _ = load_supernet(make_fake_run(root / "run"))
    train = load_dataset("digits", "train").images
    test = load_dataset("digits", "test").images[:40]
    (root / "gpu.toml").write_text(GPU_FP32)
    (root / "dla.toml").write_text(DLA_FP16)
    (root / "dla-fp32.toml").write_text(_profile("fp32", '["fp32", "fp16", "int8"]', STATIC))
    with one_torch_thread():
        for kind, profile in (("gpu", "gpu.toml"), ("dla", "dla-fp32.toml")):
            export_subnet(supernet, supernet.space.smallest(), str(root / profile), root / f"{kind}-fp32",
                          calib_images=train, parity_images=test[:8], recalibrate=False, calibration_count=32)
            for precision in ("fp16", "int8"):
                make_variant(root / f"{kind}-fp32", root / f"{kind}-{precision}", precision)
    return root, test.numpy()


def tour(trt: FakeTRT, root, x, tmp) -> None:
    """Drive every TensorRT call of the engine path once on the stand-in ``trt`` (already
    installed): builds in each precision with and without a timing cache (new, reused,
    corrupt, another device's), a DLA build and load, runners, and the failure paths
    (parse error, failed build)."""
    from ofa_deploy.errors import OfaError
    from ofa_deploy.export import tensorrt as T

    for precision in ("fp32", "fp16", "int8"):
        out = tmp / f"tour-{precision}"
        T.build_engine(root / f"gpu-{precision}", str(root / "gpu.toml"), out_dir=out, timing_cache=tmp / "t.cache")
        with T.TrtRunner(out / T.ENGINE_FILE, check=False) as runner:
            runner.infer(x[:3])
            runner.step()
    (tmp / "bad.cache").write_bytes(b"garbage")
    T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp / "tour-c", timing_cache=tmp / "bad.cache")
    (tmp / "other.cache").write_bytes(MAGIC + b"Other GPU|")
    T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp / "tour-o", timing_cache=tmp / "other.cache")
    T.build_engine(root / "dla-fp16", str(root / "dla.toml"), out_dir=tmp / "tour-dla")
    with T.TrtRunner(tmp / "tour-dla" / T.ENGINE_FILE, check=False) as runner:
        runner.step()
    T.load_engine(tmp / "tour-dla" / T.ENGINE_FILE, check=False)
    broken = make_variant(root / "gpu-fp32", tmp / "tour-broken", "fp32")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    model = json.loads((broken / "model.json").read_text())
    from ofa_deploy.export.sidecar import file_entry

    model["files"]["model.onnx"] = file_entry(broken / "model.onnx")
    (broken / "model.json").write_text(json.dumps(model))
    for export_dir, failure in ((broken, None), (root / "gpu-fp32", "out of GPU memory")):
        trt.fail_build = failure
        try:
            T.build_engine(export_dir, str(root / "gpu.toml"), out_dir=tmp / "tour-fail")
        except OfaError:
            pass
        else:
            raise AssertionError("the stand-in should have refused this build")
    trt.fail_build = None
