"""Export library: ONNX Runtime against independent PyTorch oracles, sidecar, staging, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import make_fake_run, one_torch_thread

from ofa_deploy.cost import cost
from ofa_deploy.errors import OfaError
from ofa_deploy.evaluate.bn import recalibrated_subnet
from ofa_deploy.export import export_subnet, read_sidecar, verify_files
from ofa_deploy.io import sha256_file
from ofa_deploy.targets import load_target
from ofa_deploy.weights import load_supernet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one thread is faster than two fighting over shared cores."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fake run's supernet (random weights, perturbed BN) and real digits images."""
    from ofa_deploy.data import load_dataset

    run_dir = make_fake_run(tmp_path_factory.mktemp("export") / "run")
    supernet, _ = load_supernet(run_dir)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return run_dir, supernet, train.images, test.images[:64]


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_random_subnets_match_the_supernet(setup, tmp_path):
    """20 random subnets + the extremes, no recalibration: the ONNX computes what the supernet
    computes with the subnet active (an oracle that does not go through ``extract``)."""
    run_dir, supernet, train, test = setup
    space = supernet.space
    rng = random.Random(4)
    subnets = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(20)]
    x = test[:32]
    worst = 0.0
    for i, subnet in enumerate(subnets):
        out = tmp_path / f"s{i}"
        sidecar = export_subnet(supernet, subnet, "cpu", out, calib_images=None, parity_images=x,
                                recalibrate=False)  # runs onnx.checker (full check) itself
        with torch.no_grad():
            expected = supernet(x, subnet).numpy()
        diff = float(np.abs(_ort(out / "model.onnx", x.numpy()) - expected).max())
        worst = max(worst, diff)
        assert diff <= 1e-4, (str(subnet), diff)
        assert sidecar["parity"]["passed"] and sidecar["parity"]["max_abs_diff"] <= 1e-4
        assert sidecar["parity"]["top1_agreement"] == 1.0
        verify_files(out)
        assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert worst > 0  # the comparison saw real, non-identical computations


def test_sidecar_contents_and_hashes(setup, tmp_path):
    run_dir, supernet, train, test = setup
    space = supernet.space
    subnet = space.middle()
    out = tmp_path / "jetson"
    sidecar = export_subnet(supernet, subnet, "jetson", out, calib_images=train, parity_images=test,
                            run_dir=run_dir, accuracy=0.5, calibration_count=100, bn_images=500, seed=3,
                            normalization={"dataset": "digits", "mean": [0.3054], "std": [0.3236]})
    assert read_sidecar(out) == json.loads((out / "model.json").read_text()) == sidecar
    macs, params = cost(space, subnet)
    assert sidecar["subnet"] == subnet.to_dict() and sidecar["subnet_text"] == str(subnet)
    assert (sidecar["macs"], sidecar["params"], sidecar["num_classes"]) == (macs, params, 10)
    assert sidecar["accuracy"] == {"top1": 0.5, "precision": "fp32"}  # measured elsewhere, on the fp32 network
    assert sidecar["precision"] == "fp16"  # jetson-orin's default: the ONNX carries fp16
    assert sidecar["bn"] == {"recalibrated": True, "images": 500, "seed": 3, "variance": "unbiased"}
    assert sidecar["input"]["shape"] == ["batch", 1, 32, 32] and sidecar["input"]["layout"] == "NCHW"
    assert sidecar["input"]["normalization"]["mean"] == [0.3054]
    assert sidecar["onnx"]["exporter"] == "torchscript" and sidecar["onnx"]["opset"] == 17
    assert sidecar["target"]["name"] == "jetson-orin"
    assert set(sidecar["versions"]) >= {"torch", "onnx", "onnxruntime", "ofa_deploy", "python"}
    assert sidecar["source"]["checkpoint"] == "final.pt"
    assert sidecar["source"]["checkpoint_sha256"] == sha256_file(run_dir / "final.pt")
    for name in ("model.onnx", "calibration.npy"):
        assert sidecar["files"][name]["sha256"] == sha256_file(out / name)
        assert sidecar["files"][name]["bytes"] == (out / name).stat().st_size
    calib = np.load(out / "calibration.npy")
    assert calib.shape == (100, 1, 32, 32) and calib.dtype == np.float32
    # the calibration images are real training images, not noise
    assert any(np.allclose(calib[0], img) for img in train.numpy())
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["ofa_deploy.subnet"] == str(subnet)

    # a damaged file is caught
    (out / "calibration.npy").write_bytes(b"x")
    with pytest.raises(OfaError, match="SHA-256"):
        verify_files(out)


def test_recalibrated_export_matches_recalibrated_subnet(setup, tmp_path):
    run_dir, supernet, train, test = setup
    subnet = supernet.space.sample(7)
    sidecar = export_subnet(supernet, subnet, "cpu", tmp_path / "m", calib_images=train, parity_images=test,
                            bn_images=300, seed=1)
    oracle = recalibrated_subnet(supernet, subnet, train, n=300, seed=1).eval()
    with torch.no_grad():
        expected = oracle(test).numpy()
        unrecalibrated = supernet(test, subnet).numpy()
    got = _ort(tmp_path / "m" / "model.onnx", test.numpy())
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(got - unrecalibrated).max() > 1e-2  # recalibration really changed the network
    assert sidecar["parity"]["passed"]


def test_handed_over_recalibrated_copy_gives_the_same_file(setup, tmp_path):
    """``catalog build`` hands the copy whose accuracy it measured to the export instead of
    recalibrating twice: the ONNX weights must be exactly those the export computes itself."""
    run_dir, supernet, train, test = setup
    subnet = supernet.space.sample(8)
    export_subnet(supernet, subnet, "cpu", tmp_path / "own", calib_images=train, parity_images=test, bn_images=300)
    copy = recalibrated_subnet(supernet, subnet, train, n=300, seed=0)
    export_subnet(supernet, subnet, "cpu", tmp_path / "given", calib_images=train, parity_images=test,
                  bn_images=300, recalibrated_net=copy)
    own, given = (onnx.load(str(tmp_path / d / "model.onnx")).graph.initializer for d in ("own", "given"))
    assert [t.name for t in own] == [t.name for t in given]
    for a, b in zip(own, given):
        assert np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b)), a.name


def test_static_batch_target(setup, tmp_path):
    """jetson-xavier exports a fixed batch of 1; parity runs it image by image."""
    run_dir, supernet, train, test = setup
    sidecar = export_subnet(supernet, supernet.space.smallest(), "jetson-xavier", tmp_path / "x",
                            calib_images=train, parity_images=test[:8], recalibrate=False, calibration_count=16)
    dims = onnx.load(str(tmp_path / "x" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 32, 32]
    assert sidecar["input"]["shape"] == [1, 1, 32, 32] and sidecar["parity"]["images"] == 8


def test_dynamo_exporter(setup, tmp_path):
    run_dir, supernet, train, test = setup
    subnet = supernet.space.smallest()  # dynamo is slow: the fewest layers to trace
    sidecar = export_subnet(supernet, subnet, "cpu", tmp_path / "d", calib_images=None, parity_images=test[:16],
                            recalibrate=False, exporter="dynamo")
    assert sidecar["onnx"]["exporter"] == "dynamo" and sidecar["onnx"]["requested_exporter"] == "dynamo"
    assert sidecar["onnx"]["requested_opset"] == 17 and sidecar["onnx"]["opset"] in (17, 18)  # the file's own
    with torch.no_grad():
        expected = supernet(test[:5], subnet).numpy()
    assert np.abs(_ort(tmp_path / "d" / "model.onnx", test[:5].numpy()) - expected).max() <= 1e-4


def test_output_directory_is_all_or_nothing(setup, tmp_path, monkeypatch):
    run_dir, supernet, train, test = setup
    out = tmp_path / "out"
    import ofa_deploy.export.pipeline as pipeline

    def broken(*args, **kwargs):
        raise OfaError("parity exploded")

    monkeypatch.setattr(pipeline, "check_parity", broken)
    with pytest.raises(OfaError, match="exploded"):
        export_subnet(supernet, supernet.space.smallest(), "cpu", out, calib_images=None, parity_images=test,
                      recalibrate=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OfaError, match="exploded"):  # parents it had to create go too
        export_subnet(supernet, supernet.space.smallest(), "cpu", tmp_path / "a" / "b" / "out", calib_images=None,
                      parity_images=test, recalibrate=False)
    assert list(tmp_path.iterdir()) == []

    def disagreeing(*args, **kwargs):
        return {"max_abs_diff": 1.0, "tolerance": 1e-4, "passed": False, "top1_agreement": 0.5}

    monkeypatch.setattr(pipeline, "check_parity", disagreeing)
    with pytest.raises(OfaError, match="disagrees"):
        export_subnet(supernet, supernet.space.smallest(), "cpu", out, calib_images=None, parity_images=test,
                      recalibrate=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(setup, tmp_path):
    run_dir, supernet, train, test = setup
    out = tmp_path / "out"
    kwargs = dict(calib_images=None, parity_images=test[:8], recalibrate=False)
    export_subnet(supernet, supernet.space.smallest(), "cpu", out, **kwargs)
    with pytest.raises(OfaError, match="already exists"):
        export_subnet(supernet, supernet.space.largest(), "cpu", out, **kwargs)
    assert read_sidecar(out)["subnet_text"] == str(supernet.space.smallest())
    export_subnet(supernet, supernet.space.largest(), "cpu", out, overwrite=True, **kwargs)
    assert read_sidecar(out)["subnet_text"] == str(supernet.space.largest())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_bad_inputs(setup, tmp_path):
    run_dir, supernet, train, test = setup
    from ofa_deploy.space import SearchSpace

    other = SearchSpace(in_channels=1, num_classes=10, depth_choices=(1, 2))
    with pytest.raises(OfaError):
        export_subnet(supernet, other.smallest(), "cpu", tmp_path / "a", calib_images=train, parity_images=test)
    with pytest.raises(OfaError, match="wrong dataset"):
        export_subnet(supernet, supernet.space.smallest(), "cpu", tmp_path / "b", calib_images=train,
                      parity_images=torch.zeros(4, 3, 32, 32))
    with pytest.raises(OfaError, match="training images"):
        export_subnet(supernet, supernet.space.smallest(), "cpu", tmp_path / "c", calib_images=None,
                      parity_images=test)
    with pytest.raises(OfaError, match="calibration images"):  # int8 needs them; fp16 for TensorRT does not
        export_subnet(supernet, supernet.space.smallest(), "jetson", tmp_path / "d", calib_images=None,
                      parity_images=test, recalibrate=False, precision="int8")
    with pytest.raises(OfaError, match="unknown target"):
        export_subnet(supernet, supernet.space.smallest(), "tpu", tmp_path / "e", calib_images=train,
                      parity_images=test)
    assert list(tmp_path.iterdir()) == []


def test_export_package_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys, ofa_deploy.export, ofa_deploy.export.tensorrt, ofa_deploy.export.sidecar; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_target_opset_is_honoured(setup, tmp_path):
    run_dir, supernet, train, test = setup
    profile = tmp_path / "op.toml"
    profile.write_text('backend = "onnxruntime"\nprecision = "fp32"\n[export]\nopset = 13\n')
    out = tmp_path / "o"
    sidecar = export_subnet(supernet, supernet.space.smallest(), load_target(str(profile)), out,
                            calib_images=None, parity_images=test[:8], recalibrate=False)
    assert sidecar["onnx"]["opset"] == 13 and sidecar["target"]["name"] == "op"
