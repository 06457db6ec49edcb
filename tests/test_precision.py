"""Precision in the ONNX (``export --precision``): int8 Q/DQ and fp16 models of a briefly
trained digits subnet, checked against independent oracles (ONNX Runtime on the fp32
file, PyTorch on the recalibrated subnet, the ONNX graph itself), the sidecar's figures,
the TensorRT flavour of int8, and bad input (one line, non-zero exit, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import assert_one_line_error, one_torch_thread, run_cli
from onnx import TensorProto, numpy_helper

from ofa_deploy.errors import OfaError
from ofa_deploy.evaluate.bn import recalibrated_subnet
from ofa_deploy.export import export_subnet, read_sidecar, verify_files
from ofa_deploy.export.precision import check_precision, model_precision
from ofa_deploy.weights import load_supernet

BN_IMAGES = 200
CALIB = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def trained_smallest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest subnet trained alone on all digits training images for 2 epochs (about
    91% test accuracy, clear logit margins): int8 agreement means something only on a
    network that has learnt something, which the shared 3-epoch RSS run (about 16%) has not."""
    from ofa_deploy.train import TrainConfig, train

    out = tmp_path_factory.getbasetemp() / "shared-trained-digits-smallest"
    if (out / "final.pt").is_file():
        return out
    return train(TrainConfig(dataset="digits", method="fixed", subnet="smallest", epochs=2, device="cpu", seed=0,
                             out=str(out), quiet=True, lr=0.05), progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ofa_deploy.data import load_dataset

    run_dir = trained_smallest(tmp_path_factory)
    supernet, _ = load_supernet(run_dir)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return run_dir, supernet, train, test


@pytest.fixture(scope="module")
def exports(setup, tmp_path_factory):
    """The smallest subnet exported once per precision for the cpu target (+ int8 for a
    TensorRT target), with its accuracy measured on the digits test split."""
    run_dir, supernet, train, test = setup
    root = tmp_path_factory.mktemp("precision")
    out = {}
    for name, precision, target in (("fp32", "fp32", "cpu"), ("fp16", "fp16", "cpu"), ("int8", "int8", "cpu"),
                                    ("int8-trt", "int8", "jetson-orin")):
        out[name] = root / name
        export_subnet(supernet, supernet.space.smallest(), target, out[name], calib_images=train.images,
                      parity_images=test.images[:128], run_dir=run_dir, bn_images=BN_IMAGES,
                      calibration_count=CALIB, eval_data=(test.images, test.labels), precision=precision)
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _logits(path: Path, images: torch.Tensor) -> np.ndarray:
    return _session(path).run(None, {"input": images.numpy()})[0]


def _reference(setup) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch logits of the recalibrated smallest subnet on the test split (the same BN
    images and seed the export uses) - computed here, not read from any export."""
    _, supernet, train, test = setup
    net = recalibrated_subnet(supernet, supernet.space.smallest(), train.images, n=BN_IMAGES, seed=0).eval()
    with torch.no_grad():
        return net(test.images).numpy(), test.labels.numpy()


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_int8_export_has_qdq_nodes_and_runs(exports, setup):
    d = exports["int8"]
    ops = _ops(d / "model.onnx")
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 10
    assert model_precision(d / "model.onnx") == "int8"
    # every Conv weight is an int8 initializer behind a per-channel DequantizeLinear
    model = onnx.load(str(d / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
        out_channels = numpy_helper.to_array(inits[dq.input[0]]).shape[0]
        assert numpy_helper.to_array(inits[dq.input[1]]).shape == (out_channels,)  # per-channel scales
    _, _, _, test = setup
    logits = _logits(d / "model.onnx", test.images[:7])
    assert logits.shape == (7, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    sc = read_sidecar(d)
    verify_files(d, sc)
    assert sc["precision"] == "int8" and sc["conversion"]["format"] == "QDQ"
    assert sc["conversion"]["calibration_method"] == "percentile" and sc["conversion"]["calibration_images"] == CALIB
    assert sc["calibration"]["images"] == CALIB and sc["calibration"]["split"] == "train"
    assert np.load(d / "calibration.npy").shape == (CALIB, 1, 32, 32)
    assert not list(d.glob("*.fp32.onnx")) and not (d / ".fp32.onnx").exists()


def test_int8_top1_agrees_with_fp32(exports, setup):
    """The int8 model's argmax against PyTorch's fp32 argmax on all 360 test images."""
    reference, labels = _reference(setup)
    _, _, _, test = setup
    got = _logits(exports["int8"] / "model.onnx", test.images)
    agreement = float((got.argmax(1) == reference.argmax(1)).mean())
    assert agreement >= 0.9, agreement
    sc = read_sidecar(exports["int8"])
    assert sc["precision_parity"]["metric"] == "top1_agreement" and sc["precision_parity"]["reference"] == "fp32 onnx"
    assert sc["precision_parity"]["value"] == sc["precision_parity"]["top1_agreement"] >= 0.9
    # the sidecar's accuracy is this file's, and the fp32 one is the PyTorch network's
    acc = sc["accuracy"]
    assert acc["precision"] == "int8" and acc["framework"] == "onnxruntime" and acc["images"] == len(labels)
    assert acc["top1"] == pytest.approx(float((got.argmax(1) == labels).mean()))
    assert acc["fp32_top1"] == pytest.approx(float((reference.argmax(1) == labels).mean()), abs=1.5 / len(labels))
    assert acc["drop_points"] == pytest.approx(100 * (acc["fp32_top1"] - acc["top1"]), abs=1e-3)


def test_fp16_export_is_fp16_inside_with_fp32_io(exports, setup):
    d = exports["fp16"]
    model = onnx.load(str(d / "model.onnx"))
    float_inits = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert "Cast" in _ops(d / "model.onnx") and model_precision(d / "model.onnx") == "fp16"
    reference, _ = _reference(setup)
    _, _, _, test = setup
    got = _logits(d / "model.onnx", test.images)
    scale = float(np.abs(reference).max())
    assert float(np.abs(got - reference).max()) <= 1e-2 * max(1.0, scale)
    sc = read_sidecar(d)
    assert sc["precision"] == "fp16" and sc["precision_parity"]["metric"] == "max_abs_diff"
    assert 0 < sc["precision_parity"]["max_abs_diff"] <= 1e-2 * max(1.0, scale)
    assert sc["conversion"]["initializer_dtypes"] == ["float16"] and sc["input"]["dtype"] == "float32"


def test_fp32_export_records_its_precision(exports):
    sc = read_sidecar(exports["fp32"])
    assert sc["precision"] == "fp32" and sc["conversion"] is None and sc["calibration"] is None
    assert sc["precision_parity"]["reference"] == "pytorch" and sc["precision_parity"]["metric"] == "max_abs_diff"
    assert sc["accuracy"]["top1"] == sc["accuracy"]["fp32_top1"] and sc["accuracy"]["drop_points"] == 0
    assert "QuantizeLinear" not in _ops(exports["fp32"] / "model.onnx")
    assert model_precision(exports["fp32"] / "model.onnx") == "fp32"


def test_tensorrt_int8_is_symmetric_with_float_bias(exports):
    """TensorRT's explicit quantization: int8 activations with zero point 0, no int32 bias."""
    d = exports["int8-trt"]
    model = onnx.load(str(d / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for q in quantize:
        zero = inits[q.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
    assert all(v.dtype != np.int32 for v in inits.values())
    sc = read_sidecar(d)
    assert sc["precision"] == "int8" and sc["conversion"]["flavour"] == "tensorrt"
    # the cpu flavour is uint8-activation U8S8, which ONNX Runtime fuses into QLinearConv
    assert read_sidecar(exports["int8"])["conversion"]["flavour"] == "onnxruntime"


def test_tensorrt_int8_places_qdq_by_tensorrts_rules(exports):
    """TensorRT's explicit-quantization placement: Q/DQ on the inputs of Conv and Gemm
    (activation and weight) and nowhere else; a weighted op's output stays float, so a
    residual Add reads the project Conv in float and its skip input through a Q/DQ, and the
    logits, ReLU, h-swish and SE gates carry none (ONNX Runtime's default placement had put
    Q/DQ on all of them: 120 QuantizeLinear for this subnet instead of 48)."""
    model = onnx.load(str(exports["int8-trt"] / "model.onnx"))
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def made_by(name: str) -> str:
        return producer[name].op_type if name in producer else "initializer/input"

    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert weighted
    for node in weighted:
        assert made_by(node.input[0]) == made_by(node.input[1]) == "DequantizeLinear", node.name
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers.get(node.output[0], [])} <= {"Conv", "Gemm", "Add"}, node.name
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds  # the smallest subnet has residual blocks
    for add in adds:
        assert sorted(made_by(name) for name in add.input) == ["Conv", "DequantizeLinear"], add.name
    assert made_by(model.graph.output[0].name) == "Gemm"
    assert read_sidecar(exports["int8-trt"])["conversion"]["placement"] == "inputs of Conv, Gemm, MatMul"


def test_int8_calibrates_on_a_count_that_is_not_a_multiple_of_the_batch(exports, tmp_path):
    """ORT's percentile and entropy calibrators failed ("inhomogeneous shape") when the last
    calibration batch was short: 40 images in batches of 32."""
    from ofa_deploy.export.precision import to_int8

    images = np.load(exports["int8"] / "calibration.npy")[:40]
    for method in ("percentile", "minmax"):
        info = to_int8(exports["fp32"] / "model.onnx", tmp_path / f"{method}.onnx", images, method=method,
                       for_tensorrt=True)
        assert info["calibration_images"] == 40 and (tmp_path / f"{method}.onnx").is_file()


def test_int8_placement_is_checked(setup, tmp_path):
    from ofa_deploy.export.precision import to_int8

    with pytest.raises(OfaError, match="placement must be one of"):
        to_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx", np.zeros((1, 1, 32, 32), np.float32),
                placement="everywhere")


def test_profile_reports_the_models_precision(exports):
    from ofa_deploy.profile import Protocol, profile_model

    quick = Protocol(warmup_s=0.01, min_iterations=5, min_time_s=0.01, cov_threshold=10.0, max_retries=0)
    for name in ("fp32", "fp16", "int8"):
        assert profile_model(exports[name], "cpu", protocol=quick)["precision"] == name


def test_check_precision():
    assert check_precision("int8", ("fp32", "int8"), target="t") == "int8"
    with pytest.raises(OfaError, match="int4"):
        check_precision("int4")
    with pytest.raises(OfaError, match="target t allows only fp16"):
        check_precision("fp32", ("fp16",), target="t")


# -- command line: bad input is one line, exit 2, nothing written ------------------------------------------

def test_cli_refuses_bad_precision_requests(setup, tmp_path, capsys):
    run_dir = setup[0]
    fp32_only = tmp_path / "fp32only.toml"
    fp32_only.write_text('backend = "onnxruntime"\nprecision = "fp32"\nprecisions = ["fp32"]\n')
    cases = [
        (["--precision", "int4"], "--precision"),
        (["--precision", "int8", "--calibration-images", "0"], "--calibration-images"),
        (["--precision", "int8", "--target", fp32_only], "allows only fp32"),
        (["--precision", "fp32", "--target", "jetson-xavier"], "allows only fp16, int8"),
    ]
    for i, (extra, needle) in enumerate(cases):
        out = tmp_path / f"out{i}"
        code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, *extra)
        assert_one_line_error(code, err, needle)
        assert not out.exists() and not list(tmp_path.glob(f".out{i}*"))


def test_library_refuses_int8_without_calibration_images(setup, tmp_path):
    run_dir, supernet, train, test = setup
    with pytest.raises(OfaError, match="calibration"):
        export_subnet(supernet, supernet.space.smallest(), "cpu", tmp_path / "x", calib_images=train.images,
                      parity_images=test.images[:8], bn_images=50, calibration_count=0, precision="int8")
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


def test_cli_int8_export_prints_the_drop(setup, tmp_path, capsys):
    run_dir = setup[0]
    out = tmp_path / "q"
    code, stdout, err = run_cli(capsys, "export", run_dir, "--smallest", "--precision", "int8", "--out", out,
                                "--bn-images", 100, "--calibration-images", 32, "--parity-images", 32,
                                "--calibration-method", "minmax", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    (row,) = result["exports"]
    assert row["precision"] == "int8" and row["vs_fp32"]["metric"] == "top1_agreement"
    assert row["accuracy_drop_points"] == pytest.approx(row["sidecar"]["accuracy"]["drop_points"])
    assert row["sidecar"]["conversion"]["calibration_method"] == "minmax"
    assert read_sidecar(out)["precision"] == "int8"
