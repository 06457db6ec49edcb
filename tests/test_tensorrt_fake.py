"""``build_engine`` and ``TrtRunner`` driven end to end against the stand-in for TensorRT 8.6,
10.x and 11.x and pycuda in ``trt_fake.py`` (this machine has neither, nor a GPU).

The stand-in refuses what TensorRT refuses (its docstring lists what) and computes with
ONNX Runtime, so these tests check our side: which network and builder flags each version
gets for each precision, the timing cache loaded, replaced or left alone, DLA set at build
and at load, the device index honoured, the sidecars written and nothing written on a
failure, the compatibility checks refusing a foreign or stale engine before
deserialisation, and the runner's buffer, batch and copy plumbing (its logits must equal
ONNX Runtime's). They say nothing about TensorRT itself: ``test_tensorrt_bindings.py``
checks the names against TensorRT's real bindings, ``test_tensorrt.py`` builds real engines
where TensorRT and a GPU exist.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import trt_fake

from ofa_deploy.cli import main
from ofa_deploy.errors import OfaError
from ofa_deploy.export import tensorrt as T
from ofa_deploy.export.to_onnx import ort_session, run_onnx
from ofa_deploy.io import sha256_file

VERSIONS = ["8.6", "10.3", "10.16", "11.4"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return trt_fake.make_exports(tmp_path_factory.mktemp("fake-trt"))


def _fake(monkeypatch, tmp_path, version="10.3"):
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    return trt_fake.install(monkeypatch, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_and_run_each_precision(version, precision, exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path, version)
    root, x = exported
    out = tmp_path / "e"
    sidecar = T.build_engine(root / f"gpu-{precision}", str(root / "gpu.toml"), out_dir=out)
    config = fake.built_configs[-1]
    if version == "8.6":
        assert not sidecar["strongly_typed"]
        assert config.flags == {"fp32": set(), "fp16": {"FP16"}, "int8": {"INT8"}}[precision]
    else:
        assert sidecar["strongly_typed"] and config.flags == set()  # the ONNX's types decide
    assert sidecar["precision"] == precision and sidecar["builder_flags"] == sorted(config.flags)
    assert config.workspace == 256 << 20 and config.profiles[0].shapes[1:] == ((1, 1, 32, 32), (1, 1, 32, 32),
                                                                               (8, 1, 32, 32))
    assert sidecar["tensorrt_version"] == trt_fake.VERSIONS[version]
    assert json.loads((out / T.ENGINE_SIDECAR).read_text()) == sidecar
    assert sidecar["engine_sha256"] == sha256_file(out / T.ENGINE_FILE)
    assert sidecar["onnx_sha256"] == json.loads((root / f"gpu-{precision}" / "model.json").read_text())[
        "files"]["model.onnx"]["sha256"]
    expected = run_onnx(ort_session(root / f"gpu-{precision}" / "model.onnx"), x)
    with T.TrtRunner(out / T.ENGINE_FILE) as runner:
        assert runner.input_shape == (1, 1, 32, 32) and runner.precision == precision
        np.testing.assert_allclose(runner.infer(x[:8]), expected[:8], atol=1e-6)
        np.testing.assert_allclose(runner.infer(x[:3]), expected[:3], atol=1e-6)
        assert runner.device_ms() == 0.75  # the GPU's time for the last call, batch 3
        runner.step()
        assert runner.device_ms() == 0.25 and runner.info["gpu_name"] == "Orin"
        with pytest.raises(OfaError, match="does not fit the engine"):
            runner.infer(x[:9])
    with pytest.raises(OfaError, match="takes batches 1..8"):
        T.TrtRunner(out / T.ENGINE_FILE, batch=16)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_tour_runs_on_every_version(version, exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path, version)
    root, x = exported
    trt_fake.tour(fake, root, x, tmp_path)
    assert ("Builder", "build_serialized_network") in fake.touched and ("", "Runtime") in fake.touched


@pytest.mark.parametrize("version", ["8.6", "10.16"])
def test_timing_cache_new_reused_corrupt_and_foreign(version, exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path, version)
    root, x = exported
    build = lambda cache, name: T.build_engine(root / "gpu-fp16", str(root / "gpu.toml"),  # noqa: E731
                                               out_dir=tmp_path / name, timing_cache=cache)
    default = tmp_path / "cache" / "tensorrt" / f"orin-sm87-trt{trt_fake.VERSIONS[version]}.timing"
    first = T.build_engine(root / "gpu-fp16", str(root / "gpu.toml"), out_dir=tmp_path / "a")
    assert first["timing_cache"]["status"] == "created" and default.read_bytes().endswith(b"layer timings;")
    again = T.build_engine(root / "gpu-fp16", str(root / "gpu.toml"), out_dir=tmp_path / "b")
    assert again["timing_cache"]["reused"] and default.read_bytes().count(b"layer timings;") == 2

    corrupt = tmp_path / "corrupt.cache"
    corrupt.write_bytes(b"\x00garbage")
    sidecar = build(corrupt, "c")
    assert sidecar["timing_cache"]["status"] == "replaced-corrupt" and not sidecar["timing_cache"]["reused"]
    assert corrupt.read_bytes().startswith(trt_fake.MAGIC)
    # the ERROR the corrupt cache logged is not taken for the reason of a later failure
    corrupt.write_bytes(b"\x00garbage")
    fake.fail_build = "out of GPU memory"
    with pytest.raises(OfaError) as info:
        build(corrupt, "c2")
    assert "out of GPU memory" in str(info.value) and "corrupt" not in str(info.value)
    assert not (tmp_path / "c2").exists()
    fake.fail_build = None

    foreign = tmp_path / "foreign.cache"
    foreign.write_bytes(trt_fake.MAGIC + b"NVIDIA A100|timings")
    sidecar = build(foreign, "d")
    assert sidecar["timing_cache"]["status"] == "ignored-mismatch" and not sidecar["timing_cache"]["reused"]
    assert foreign.read_bytes() == trt_fake.MAGIC + b"NVIDIA A100|timings"  # left alone


@pytest.mark.parametrize("version", ["8.6", "10.3"])
def test_dla_build_and_load_on_its_core(version, exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path, version)
    root, x = exported
    for precision in ("fp16", "int8"):
        out = tmp_path / precision
        sidecar = T.build_engine(root / f"dla-{precision}", str(root / "dla.toml"), out_dir=out)
        config = fake.built_configs[-1]
        assert (config.default_device_type.name, config.DLA_core, sidecar["dla_core"]) == ("DLA", 1, 1)
        want = {"8.6": {"fp16": {"FP16"}, "int8": {"FP16", "INT8"}}[precision]}.get(version, set())
        assert config.flags == want | {"GPU_FALLBACK"} and config.profiles == []
        expected = run_onnx(ort_session(root / f"dla-{precision}" / "model.onnx"), x[:1])
        with T.TrtRunner(out / T.ENGINE_FILE) as runner:  # deserialises only on DLA core 1
            np.testing.assert_allclose(runner.infer(x[:1]), expected, atol=1e-6)
    # refused as the profile's precisions exclude fp32, or (without that key) as DLA has no fp32
    with pytest.raises(OfaError, match="DLA, which has no fp32|does not run fp32 engines"):
        T.build_engine(root / "dla-fp32", str(root / "dla.toml"), out_dir=tmp_path / "x")
    fake.num_dla_cores = 1
    with pytest.raises(OfaError, match="asks for DLA core 1, this device has 1 DLA cores"):
        T.build_engine(root / "dla-fp16", str(root / "dla.toml"), out_dir=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("version", ["8.6", "11.4"])
def test_onnx_that_disagrees_with_model_json_is_refused(version, exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path, version)
    root, x = exported
    cases = [("gpu-fp32", "int8", "has no QuantizeLinear/DequantizeLinear nodes"),
             ("gpu-int8", "fp32", "int8 model"), ("gpu-fp16", "fp32", "has fp16 tensors")]
    if version != "8.6":
        cases.append(("gpu-fp32", "fp16", "has no fp16 tensors"))
    for source, claimed, reason in cases:
        lie = tmp_path / f"{source}-as-{claimed}"
        shutil.copytree(root / source, lie)
        model = json.loads((lie / "model.json").read_text())
        (lie / "model.json").write_text(json.dumps({**model, "precision": claimed}))
        with pytest.raises(OfaError, match=re.escape(reason) + f".*, but .*model.json says precision {claimed}"):
            T.build_engine(lie, str(root / "gpu.toml"), out_dir=tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_stale_or_foreign_engine_refused_before_deserialisation(exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path)
    root, x = exported
    export = tmp_path / "export"
    shutil.copytree(root / "gpu-fp16", export)
    T.build_engine(export, str(root / "gpu.toml"))  # engine beside its export
    model = json.loads((export / "model.json").read_text())
    (export / "model.json").write_text(json.dumps({**model, "precision": "int8"}))
    with pytest.raises(OfaError, match="is fp16 .* describes a int8 ONNX; rebuild it"):
        T.TrtRunner(export / T.ENGINE_FILE)
    (export / "model.json").write_text(json.dumps(model))
    monkeypatch.setattr(trt_fake.FakeCuda, "gpu", ("NVIDIA GeForce RTX 4090", (8, 9)))
    with pytest.raises(OfaError) as info:
        T.TrtRunner(export / T.ENGINE_FILE)
    assert "compute capability 8.7 (here 8.9)" in str(info.value) and "build-engine" in str(info.value)
    assert fake.deserialized == 0


def test_device_index_is_used(exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path)
    root, x = exported
    monkeypatch.setattr(trt_fake.FakeCuda, "devices", 2)
    sidecar = T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp_path / "d1", device=1)
    assert sidecar["gpu_name"] == "Orin #1" and fake.driver.contexts_pushed == []
    with pytest.raises(OfaError, match="GPU 'Orin #1' \\(here 'Orin'\\)"):
        T.TrtRunner(tmp_path / "d1" / T.ENGINE_FILE)  # device 0 is another GPU
    with T.TrtRunner(tmp_path / "d1" / T.ENGINE_FILE, device=1) as runner:
        assert runner.info["gpu_name"] == "Orin #1"
    with pytest.raises(OfaError, match="--device 2: this machine has 2 CUDA GPU"):
        T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp_path / "d2", device=2)


def test_cuda_start_failure_and_unsupported_version(exported, tmp_path, monkeypatch):
    fake = _fake(monkeypatch, tmp_path)
    root, x = exported
    monkeypatch.setattr(trt_fake.FakeCuda, "init_error", "cuInit failed: no CUDA-capable device is detected")
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", trt_fake.FakeCuda.module())
    with pytest.raises(OfaError, match="CUDA is not usable on this machine: cuInit failed"):
        T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp_path / "o")
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", fake.driver)
    fake.cuda_starts = False
    with pytest.raises(OfaError, match="TensorRT could not start on this GPU"):
        T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    fake.module.__version__ = "12.0.0"
    with pytest.raises(OfaError, match="TensorRT 12.0.0 is not supported"):
        T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=tmp_path / "o")


def test_parse_failure_reports_tensorrt_errors(exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path, "8.6")
    root, x = exported
    broken = trt_fake.make_variant(root / "gpu-fp32", tmp_path / "broken", "fp32")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    from ofa_deploy.export.sidecar import file_entry

    model = json.loads((broken / "model.json").read_text())
    model["files"]["model.onnx"] = file_entry(broken / "model.onnx")
    (broken / "model.json").write_text(json.dumps(model))
    with pytest.raises(OfaError, match="TensorRT cannot parse .*failed to parse the protobuf"):
        T.build_engine(broken, str(root / "gpu.toml"))
    assert not (broken / T.ENGINE_FILE).exists() and not (broken / T.ENGINE_SIDECAR).exists()


def test_build_refuses_damaged_exports_jetson_and_cpu_targets(exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path)
    root, x = exported
    with pytest.raises(OfaError, match="not TensorRT"):
        T.build_engine(root / "gpu-fp32", "cpu", out_dir=tmp_path / "c")
    with pytest.raises(OfaError, match="must be built on the Jetson itself"):
        T.build_engine(root / "gpu-fp16", "jetson", out_dir=tmp_path / "j")
    copy = tmp_path / "copy"
    shutil.copytree(root / "gpu-fp32", copy)
    (copy / "model.onnx").write_bytes(b"truncated")
    with pytest.raises(OfaError, match="SHA-256"):
        T.build_engine(copy, "cuda", out_dir=tmp_path / "d")


def test_cli_build_engine(exported, tmp_path, monkeypatch, capsys):
    fake = _fake(monkeypatch, tmp_path, "11.4")
    root, x = exported
    out = tmp_path / "cli"
    code = main(["build-engine", str(root / "gpu-int8"), "--target", str(root / "gpu.toml"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "int8 engine for Orin (sm 8.7, TensorRT 11.4.0.106)" in captured.out
    assert "(timing cache created)" in captured.out and (out / T.ENGINE_FILE).is_file()
    lie = tmp_path / "fp32-said-int8"
    shutil.copytree(root / "gpu-fp32", lie)
    model = json.loads((lie / "model.json").read_text())
    (lie / "model.json").write_text(json.dumps({**model, "precision": "int8"}))
    code = main(["build-engine", str(lie), "--target", str(root / "gpu.toml")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "says precision int8" in err
    assert sorted(p.name for p in lie.iterdir()) == sorted(p.name for p in (root / "gpu-fp32").iterdir())
    fake.cuda_starts = False
    code = main(["build-engine", str(root / "gpu-int8"), "--target", str(root / "gpu.toml"), "--out",
                 str(tmp_path / "cli2")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "could not start" in err
    assert "Traceback" not in err and not (tmp_path / "cli2").exists()


def test_target_that_forbids_the_precision(exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path)
    root, x = exported
    from ofa_deploy.targets import Target

    if "precisions" not in getattr(Target, "__dataclass_fields__", {}):
        pytest.skip("this targets.py has no `precisions` key yet")
    profile = tmp_path / "fp16only.toml"
    profile.write_text(trt_fake._profile("fp16", '["fp16"]', "batch_sizes = [1, 8]\n"))
    with pytest.raises(OfaError, match="target fp16only does not run int8 engines .*allows fp16"):
        T.build_engine(root / "gpu-int8", str(profile), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_build_replaces_only_its_own_engine(exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path)
    root, x = exported
    build = lambda out: T.build_engine(root / "gpu-fp32", str(root / "gpu.toml"), out_dir=out)  # noqa: E731
    build(tmp_path / "ours")
    build(tmp_path / "ours")  # a rebuild replaces our own engine
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.engine").write_bytes(b"someone's engine")
    with pytest.raises(OfaError, match="has no engine.json of ofa-deploy beside it; not replacing it"):
        build(foreign)
    (foreign / "engine.json").write_text("{}")
    with pytest.raises(OfaError, match="is not an ofa-deploy engine sidecar; not replacing it"):
        build(foreign)
    assert (foreign / "model.engine").read_bytes() == b"someone's engine"


@pytest.mark.parametrize("version", ["8.6", "10.16"])
def test_fp16_input_and_output(version, exported, tmp_path, monkeypatch):
    """An fp16 ONNX with fp16 I/O: the runner's buffers take the engine's types, logits come
    back as float32."""
    _fake(monkeypatch, tmp_path, version)
    root, x = exported
    half = trt_fake.make_variant(root / "gpu-fp32", tmp_path / "half-io", "fp16", keep_io_types=False)
    T.build_engine(half, str(root / "gpu.toml"), out_dir=tmp_path / "e")
    expected = run_onnx(ort_session(half / "model.onnx"), x.astype(np.float16)).astype(np.float32)
    with T.TrtRunner(tmp_path / "e" / T.ENGINE_FILE) as runner:
        got = runner.infer(x[:8])
        assert got.dtype == np.float32 and runner._host_in.dtype == np.float16
        np.testing.assert_allclose(got, expected[:8], atol=1e-3)


def test_all_buckets_export_and_unloadable_engine(exported, tmp_path, monkeypatch):
    _fake(monkeypatch, tmp_path)
    root, x = exported
    both = tmp_path / "buckets"
    for name in ("b4", "b8"):
        shutil.copytree(root / "gpu-fp16", both / name)
    (both / "index.json").write_text(json.dumps({"exports": [{"name": "b4"}, {"name": "b8"}]}))
    sidecars = T.build_engines(both, str(root / "gpu.toml"))
    assert [s["timing_cache"]["status"] for s in sidecars] == ["created", "reused"]  # one shared cache
    assert all((both / name / T.ENGINE_FILE).is_file() for name in ("b4", "b8"))
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"\x00not an engine")
    with pytest.raises(OfaError, match="could not deserialize .*garbage.engine"):
        T.TrtRunner(garbage, check=False)
    with pytest.raises(OfaError, match="does not exist"):
        T.load_engine(tmp_path / "none.engine", check=False)


def test_build_engine_out_must_be_its_own(exported, tmp_path, monkeypatch, capsys):
    """`build-engine --out` goes through the output-ownership rules (issue 34): a folder of
    the user's files, a training run or a catalog is refused in one line, nothing written;
    a folder of its own earlier engine is rebuilt into."""
    fake = _fake(monkeypatch, tmp_path)
    root, x = exported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "last.pt"):
        (run / name).write_text("x")
    catalog = tmp_path / "c.db"
    catalog.write_bytes(b"SQLite format 3\x00" + bytes(100))
    for out, needle in ((mine, "notes.txt"), (run, "a training run directory"), (catalog, "an SQLite database"),
                        (root, "contains the export directory")):
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")} if out.is_dir() else out.read_bytes()
        built = len(fake.built_configs)
        code = main(["build-engine", str(root / "gpu-fp32"), "--target", str(root / "gpu.toml"), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
        assert len(fake.built_configs) == built
        assert before == ({p: p.stat().st_mtime_ns for p in out.rglob("*")} if out.is_dir() else out.read_bytes())
    ours = tmp_path / "ours"
    for _ in range(2):
        code = main(["build-engine", str(root / "gpu-fp32"), "--target", str(root / "gpu.toml"), "--out", str(ours)])
        assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in ours.iterdir()) == ["engine.json", "model.engine"]
