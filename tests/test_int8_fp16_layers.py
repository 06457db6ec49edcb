"""Layers reverted by ``--max-drop`` are fp16 in TensorRT-flavour int8 files (issue 31):
the file's types, its ONNX Runtime logits against the fp32 file, the TensorRT stand-in's
builds of it on each version; and the calibration search's choice and its record."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import trt_fake
from onnx import TensorProto

from ofa_deploy.export import tensorrt as T
from ofa_deploy.export.bound import Validator
from ofa_deploy.export.calibration_search import candidate_counts, choose_calibration, method_order, rank
from ofa_deploy.export.precision import Int8Quantizer, layer_of
from ofa_deploy.export.to_onnx import ort_session, run_onnx

REVERTED = ("blocks.0", "head")
QDQ_AND_CAST = ("QuantizeLinear", "DequantizeLinear", "Cast")


@pytest.fixture(scope="module")
def reverted(tmp_path_factory):
    """A TensorRT-target fp32 export of a small random-weight subnet, and int8 copies with
    ``REVERTED`` left in float (fp16: the TensorRT flavour) and with nothing reverted."""
    from conftest import make_fake_run, one_torch_thread

    from ofa_deploy.data import load_dataset
    from ofa_deploy.export import export_subnet
    from ofa_deploy.export.sidecar import file_entry
    from ofa_deploy.weights import load_supernet

    root = tmp_path_factory.mktemp("fp16-layers")
    supernet, _ = load_supernet(make_fake_run(root / "run"))
    train = load_dataset("digits", "train").images
    test = load_dataset("digits", "test").images[:64].numpy()
    (root / "gpu.toml").write_text(trt_fake.GPU_FP32)
    with one_torch_thread():
        export_subnet(supernet, supernet.space.smallest(), str(root / "gpu.toml"), root / "fp32",
                      calib_images=train, parity_images=torch_first(test), recalibrate=False, calibration_count=32)
    calibration = np.load(root / "fp32" / "calibration.npy")
    records = {}
    with Int8Quantizer(root / "fp32" / "model.onnx", calibration, for_tensorrt=True) as quantizer:
        for name, layers in (("plain", ()), ("reverted", REVERTED)):
            out = root / name
            out.mkdir()
            for file in ("calibration.npy", "model.json"):
                (out / file).write_bytes((root / "fp32" / file).read_bytes())
            records[name] = quantizer.write(out / "model.onnx")
            nodes = [n for n in quantizer.quantized_nodes(out / "model.onnx") if layer_of(n) in layers]
            if nodes:
                records[name] = quantizer.write(out / "model.onnx", nodes)
            model = json.loads((out / "model.json").read_text())
            model.update(precision="int8", files={**model["files"], "model.onnx": file_entry(out / "model.onnx")})
            (out / "model.json").write_text(json.dumps(model))
    return root, test, records


def torch_first(x):
    import torch

    return torch.from_numpy(x[:8])


def _types(path):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return graph, types


def test_reverted_layers_are_fp16_and_the_rest_is_untouched(reverted):
    root, _, records = reverted
    graph, types = _types(root / "reverted" / "model.onnx")
    produced = {o: n for n in graph.node for o in n.output}
    # (the Q/DQ named after a reverted layer quantize its output for the next, int8 layer)
    region = [n for n in graph.node if layer_of(n.name) in REVERTED and n.op_type not in QDQ_AND_CAST]
    assert {n.op_type for n in region} >= {"Conv", "Gemm"}
    for node in region:  # every float tensor a reverted node reads or writes is fp16 (weights included)
        for name in [*node.input, *node.output]:
            if name:
                assert types.get(name) in (TensorProto.FLOAT16, TensorProto.INT64), (node.name, name)
    for node in graph.node:
        if node not in region and node.op_type != "Cast":
            assert all(types.get(o) != TensorProto.FLOAT16 for o in node.output), node.name
        if node.op_type == "QuantizeLinear":  # opset 17: float32 in
            assert types[node.input[0]] == TensorProto.FLOAT
        if node.op_type == "Conv" and node.input[0] in produced:
            # a Cast never sits between a DequantizeLinear and the Conv it feeds (TensorRT's int8 fusion)
            src = produced[node.input[0]]
            assert not (src.op_type == "Cast" and src.input[0] in produced
                        and produced[src.input[0]].op_type == "DequantizeLinear")
    casts = [n for n in graph.node if n.op_type == "Cast"]
    assert 2 <= len(casts) <= 8  # the region's edges only, not one pair per node
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    rec = records["reverted"]
    assert rec["reverted"]["precision"] == "fp16" and rec["reverted"]["casts"] == len(casts)
    assert "float16" in rec["initializer_dtypes"] and records["plain"].get("reverted") is None
    assert rec["quantize_nodes"] < records["plain"]["quantize_nodes"]


def test_onnx_runtime_runs_it_within_tolerance_of_fp32(reverted):
    root, x, _ = reverted
    fp32 = run_onnx(ort_session(root / "fp32" / "model.onnx"), x)
    plain = run_onnx(ort_session(root / "plain" / "model.onnx"), x)
    got = run_onnx(ort_session(root / "reverted" / "model.onnx"), x)
    assert got.dtype == np.float32 and got.shape == fp32.shape and np.isfinite(got).all()
    scale = np.abs(fp32).max()
    # fp16 layers add fp16 rounding to what int8 already costs: no more than plain int8's error
    assert np.abs(got - fp32).mean() <= np.abs(plain - fp32).mean() * 1.1 + 1e-3 * scale
    assert (got.argmax(1) == fp32.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.4"])
def test_the_tensorrt_stand_in_builds_and_runs_it(version, reverted, tmp_path, monkeypatch):
    root, x, _ = reverted
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    fake = trt_fake.install(monkeypatch, version)
    sidecar = T.build_engine(root / "reverted", str(root / "gpu.toml"), out_dir=tmp_path / "e")
    flags = fake.built_configs[-1].flags
    if version == "8.6":  # not strongly typed: FP16 lets 8.x run the fp16 layers in fp16
        assert not sidecar["strongly_typed"] and flags == {"FP16", "INT8"}
    else:  # strongly typed: the ONNX's fp16 and Q/DQ decide, no precision flags
        assert sidecar["strongly_typed"] and flags == set()
    assert sidecar["precision"] == "int8"
    expected = run_onnx(ort_session(root / "reverted" / "model.onnx"), x)
    with T.TrtRunner(tmp_path / "e" / T.ENGINE_FILE) as runner:
        np.testing.assert_allclose(runner.infer(x[:8]), expected[:8], atol=1e-6)


def test_the_onnx_runtime_flavour_keeps_reverted_layers_fp32(reverted, tmp_path):
    root, _, _ = reverted
    calibration = np.load(root / "fp32" / "calibration.npy")
    with Int8Quantizer(root / "fp32" / "model.onnx", calibration) as quantizer:
        assert quantizer.reverted_precision == "fp32"
        quantizer.write(tmp_path / "p.onnx")
        nodes = [n for n in quantizer.quantized_nodes(tmp_path / "p.onnx") if layer_of(n) == "head"]
        rec = quantizer.write(tmp_path / "r.onnx", nodes)
    assert "float16" not in rec["initializer_dtypes"] and rec["cast_nodes"] == 0 and "reverted" not in rec


# -- the calibration search (stand-in quantizers whose drop is known) -----------------------
class _Quantizer:
    """``drops[(method, count)]``: the drop, or (drop, logit error)."""

    def __init__(self, drops, method, count, log):
        value = drops[(method, count)]
        # a drop, or (drop, logit error), or (drop, logit error, standard error of the drop)
        self.drop, self.mad, self.se = (*value, 0.0, 0.0)[:3] if isinstance(value, tuple) else (value, 0.0, 0.0)
        self.closed, self.log = False, log
        self.method, self.count, self.calibration = method, count, np.zeros((count, 1, 2, 2), np.float32)
        log.append(self)

    def write(self, dst, exclude=(), *, check=True):
        dst.write_text(f"{self.drop} {self.mad} {self.se}")
        return {}

    def close(self):
        self.closed = True


class _Validator:
    y = np.zeros(100)

    def measure(self, path):
        drop, mad, se = map(float, path.read_text().split())
        return 1 - drop / 100, mad, se

    def drop_of(self, top1):
        return round(100 * (1 - top1), 4)


def _search(tmp_path, drops, max_drop, counts=(32, 64)):
    log = []
    best, record = choose_calibration(lambda m, c: _Quantizer(drops, m, c, log), method_order("percentile"),
                                      list(counts), _Validator(), tmp_path / "w.onnx", max_drop)
    assert not (tmp_path / "w.onnx").exists()
    assert not best.closed and all(q.closed for q in log if q is not best)
    return best, record


def test_the_search_order_and_counts():
    # entropy's ranges are minmax's (ONNX Runtime's calibrator as quantize_static builds it)
    assert method_order("percentile") == ["percentile", "minmax"]
    assert method_order("minmax") == ["minmax", "percentile"]
    assert method_order("entropy") == ["entropy", "percentile"]
    assert candidate_counts(512, 1437) == [512, 1024] and candidate_counts(512, 700) == [512, 700]
    assert candidate_counts(512, 512) == [512] and candidate_counts(512, 100) == [100]


def test_a_full_tie_keeps_the_earlier(tmp_path):
    drops = {("percentile", 32): 0.0, ("minmax", 32): 0.0, ("percentile", 64): -5.0, ("minmax", 64): -5.0}
    best, record = _search(tmp_path, drops, 0.5)
    # percentile met the bound on 32 images: no larger calibration is tried; minmax's tie loses
    assert (best.method, best.count) == ("percentile", 32)
    assert record["chosen"] == {"method": "percentile", "images": 32}
    assert [(c["method"], c["images"], c["drop_points"]) for c in record["candidates"]] == [
        ("percentile", 32, 0.0), ("minmax", 32, 0.0)]


def test_within_the_bound_the_smallest_logit_error_wins(tmp_path):
    # minmax's drop is the larger but within the bound and its logits the closer to fp32's
    drops = {("percentile", 32): (0.0, 0.30), ("minmax", 32): (0.4, 0.10)}
    best, record = _search(tmp_path, drops, 0.5, counts=(32,))
    assert (best.method, record["chosen"]) == ("minmax", {"method": "minmax", "images": 32})
    assert [c["mean_abs_logit_diff"] for c in record["candidates"]] == [0.30, 0.10]


def test_within_the_bound_headroom_of_one_standard_error_comes_before_logit_error(tmp_path):
    # the F-MNIST case: minmax's drop sits at the bound (0.46 of 0.5, SE 0.15) with the closer
    # logits; percentile's (0.24) has headroom and wins
    drops = {("percentile", 32): (0.24, 0.40, 0.15), ("minmax", 32): (0.46, 0.31, 0.15)}
    best, record = _search(tmp_path, drops, 0.5, counts=(32,))
    assert best.method == "percentile" and [c["drop_se_points"] for c in record["candidates"]] == [0.15, 0.15]
    # neither has headroom: within the bound, logit error decides as before
    drops = {("percentile", 32): (0.40, 0.40, 0.2), ("minmax", 32): (0.46, 0.31, 0.2)}
    assert _search(tmp_path, drops, 0.5, counts=(32,))[0].method == "minmax"
    # within the bound without headroom still beats outside it: the headroom never fails a search
    drops = {("percentile", 32): (0.6, 0.01, 0.0), ("minmax", 32): (0.5, 0.9, 0.3)}
    assert _search(tmp_path, drops, 0.5, counts=(32,))[0].method == "minmax"


def test_outside_the_bound_the_smallest_drop_wins_and_logit_error_breaks_ties(tmp_path):
    drops = {("percentile", 32): (2.0, 0.20), ("minmax", 32): (2.0, 0.50)}
    best, _ = _search(tmp_path, drops, 0.5, counts=(32,))
    assert best.method == "percentile"
    drops = {("percentile", 32): (3.0, 0.01), ("minmax", 32): (2.0, 0.50)}
    best, _ = _search(tmp_path, drops, 0.5, counts=(32,))
    assert best.method == "minmax"
    assert rank({"drop_points": 0.5, "mean_abs_logit_diff": 9.0}, 0.5) < rank(
        {"drop_points": 0.51, "mean_abs_logit_diff": 0.0}, 0.5)


def test_more_images_only_when_the_configured_count_misses(tmp_path):
    drops = {("percentile", 32): 2.0, ("minmax", 32): 3.0, ("percentile", 64): 1.0, ("minmax", 64): 1.0}
    best, record = _search(tmp_path, drops, 0.5)
    assert (best.method, best.count) == ("percentile", 64) and len(record["candidates"]) == 4
    best, record = _search(tmp_path, drops, 0.5, counts=(32,))
    assert (best.method, best.count) == ("percentile", 32) and len(record["candidates"]) == 2


def test_export_records_the_search_and_the_chosen_calibration(fake_run, tmp_path, capsys):
    from conftest import run_cli

    out = tmp_path / "e"
    code, _, err = run_cli(capsys, "export", fake_run, "--smallest", "--precision", "int8", "--max-drop", "100",
                           "--calibration-method", "minmax", "--calibration-images", "32", "--bn-images", "64",
                           "--parity-images", "16", "--out", out)
    assert code == 0, err
    sc = json.loads((out / "model.json").read_text())
    search = sc["bound"]["calibration"]
    # the bound holds on 32 images: both methods tried there, the configured one first (entropy's
    # ranges are minmax's)
    assert [(c["method"], c["images"]) for c in search["candidates"]] == [("minmax", 32), ("percentile", 32)]
    best = min(search["candidates"], key=lambda c: rank(c, 100.0))
    assert search["chosen"] == {"method": best["method"], "images": 32}
    assert sc["conversion"]["calibration_method"] == best["method"] and sc["calibration"]["images"] == 32
    assert sc["bound"]["validation"]["plain_int8_drop_points"] == best["drop_points"]
    assert np.load(out / "calibration.npy").shape[0] == 32


def test_validator_measures_against_the_fp32_file(reverted):
    root, x, _ = reverted
    labels = run_onnx(ort_session(root / "fp32" / "model.onnx"), x).argmax(1)
    check = Validator(root / "fp32" / "model.onnx", x, labels)
    assert check.fp32_top1 == 1.0 and check.measure(root / "fp32" / "model.onnx") == (1.0, 0.0, 0.0)
    assert check.drop_of(0.99) == 1.0
