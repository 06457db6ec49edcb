"""``benchmarks/bench_onnx_latency.py``: ratios to the first file, one JSON document, bad input
refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_onnx_latency.py"


def _model(path: Path, op: str) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 4, 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_ratios_to_the_first_file(tmp_path: Path) -> None:
    a, b = _model(tmp_path / "a.onnx", "Relu"), _model(tmp_path / "b.onnx", "Sigmoid")
    done = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), "--rounds", "3", "--per-round", "2",
                           "--warmup", "1", "--repeats", "2"], capture_output=True, text=True, check=True)
    doc = json.loads(done.stdout)
    assert len(doc["repeats"]) == 2
    for run in doc["repeats"]:
        assert run[str(a)]["ratio_pooled"] == 1.0 and run[str(a)]["ratio_per_round_median"] == 1.0
        assert run[str(b)]["p50_ms"] > 0 and run[str(b)]["ratio_per_round_q1"] <= run[str(b)]["ratio_per_round_q3"]


def test_bad_input_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    good = _model(tmp_path / "a.onnx", "Relu")
    for args in ([str(bad)], [str(tmp_path / "missing.onnx")], [str(good), "--rounds", "0"]):
        run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert run.returncode != 0 and run.stdout == ""
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
