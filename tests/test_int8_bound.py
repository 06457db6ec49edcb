"""int8 under an accuracy bound (issue 31): the search (on a stand-in quantizer whose
layers cost known images), the checks of the bound, the test-split hold-out, the catalog's
schema 6 and ``catalog select --max-drop``."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.catalog import Catalog
from ofa_deploy.catalog.db import quantization
from ofa_deploy.catalog.schema import MIGRATIONS, SCHEMA_VERSION, statements
from ofa_deploy.errors import OfaError
from ofa_deploy.export import bound
from ofa_deploy.export.precision import layer_of

N = 100  # validation images: one image is one point
LABELS = np.arange(N) % 10
NODES = ["/stem/conv/Conv", "/blocks.0/expand/Conv", "/blocks.0/dw/Conv", "/blocks.1/expand/Conv", "/head/Conv",
         "/classifier/Gemm"]


class FakeQuantizer:
    """Writes the excluded node names as its "model"; ``cost`` says how many validation
    images each layer's quantization gets wrong (fp32 gets them all right) and ``noise``
    the logit error it adds."""

    reverted_precision = "fp32"

    def __init__(self, cost: dict[str, int], noise: dict[str, float]) -> None:
        self.cost, self.noise, self.writes = cost, noise, []

    def write(self, dst, exclude=(), *, check=True):
        self.writes.append(list(exclude))
        Path(dst).write_text(json.dumps(list(exclude)))
        return {"tool": "fake"} if check else {}

    def quantized_nodes(self, path):
        return list(NODES)

    def logits(self, path) -> np.ndarray:
        out = np.eye(10)[LABELS] * 5.0
        if Path(path).name == "fp32.onnx":
            return out
        excluded = {layer_of(n) for n in json.loads(Path(path).read_text())}
        wrong = 0
        for layer in {layer_of(n) for n in NODES} - excluded:
            wrong += self.cost.get(layer, 0)
            out = out + self.noise.get(layer, 0.01)
        out[:wrong] = np.roll(out[:wrong], 1, axis=1)
        return out


@pytest.fixture
def fake(monkeypatch, tmp_path):
    def make(cost, noise):
        q = FakeQuantizer(cost, noise)
        monkeypatch.setattr("ofa_deploy.export.to_onnx.ort_session", lambda path: path)
        monkeypatch.setattr("ofa_deploy.export.to_onnx.run_onnx", lambda path, x, batch=None: q.logits(path))
        (tmp_path / "fp32.onnx").write_text("fp32")
        return q
    return make


def _run(q, tmp_path, max_drop):
    return bound.bounded_int8(q, tmp_path / "model.onnx", tmp_path / "fp32.onnx", np.zeros((N, 1, 2, 2)), LABELS,
                              max_drop)


def test_a_bound_already_met_reverts_nothing(fake, tmp_path):
    q = fake({"blocks.0": 1}, {})
    b = _run(q, tmp_path, 1.0)["bound"]
    assert b["reverted_count"] == 0 and b["validation"]["drop_points"] == 1.0 and b["ranking"] is None
    assert q.writes == [[]]  # one plain quantization, no trials


def test_the_most_sensitive_layers_are_reverted_until_the_bound_holds(fake, tmp_path):
    # blocks.0 costs 3 images, blocks.1 one; stem and head cost nothing but add logit error
    q = fake({"blocks.0": 3, "blocks.1": 1}, {"blocks.0": 0.5, "blocks.1": 0.2, "stem": 0.05, "head": 0.01})
    b = _run(q, tmp_path, 1.5)["bound"]
    assert b["validation"]["plain_int8_drop_points"] == 4.0
    assert b["reverted_layers"] == ["blocks.0"]
    assert b["reverted_nodes"] == ["/blocks.0/expand/Conv", "/blocks.0/dw/Conv"] and b["reverted_count"] == 2
    assert b["validation"]["drop_points"] == 1.0 and b["quantized_layers"] == 5
    assert json.loads((tmp_path / "model.onnx").read_text()) == b["reverted_nodes"]  # the file written last
    assert not (tmp_path / "model.onnx.variant").exists()
    b = _run(q, tmp_path, 0.0)["bound"]
    assert b["reverted_layers"] == ["blocks.0", "blocks.1"] and b["validation"]["drop_points"] == 0.0


def test_layers_are_ranked_on_a_head_of_the_validation_images_and_judged_on_all(fake, tmp_path, monkeypatch):
    q = fake({"blocks.0": 3, "blocks.1": 1}, {"blocks.0": 0.5, "blocks.1": 0.2, "stem": 0.05, "head": 0.01})
    seen = []

    def run_onnx(path, x, batch=None):
        seen.append((Path(path).name, len(x)))
        return q.logits(path)[: len(x)]

    monkeypatch.setattr("ofa_deploy.export.to_onnx.run_onnx", run_onnx)
    monkeypatch.setattr(bound, "RANK_IMAGES", 10)
    b = _run(q, tmp_path, 1.5)["bound"]
    assert b["reverted_layers"] == ["blocks.0"] and b["validation"]["drop_points"] == 1.0
    assert "first 10 validation images" in b["ranking"]
    ranked = [n for name, n in seen if name == "model.onnx.variant"][: b["quantized_layers"]]
    assert ranked == [10] * b["quantized_layers"]  # one measurement per layer, on the head only
    assert all(n == N for name, n in seen if name in ("fp32.onnx", "model.onnx"))  # top-1: every image


def test_a_bound_met_only_by_reverting_everything_is_refused(fake, tmp_path):
    # every layer costs an image: with all but one in float the drop is still 1 point
    q = fake({name: 1 for name in ("stem", "blocks.0", "blocks.1", "head", "classifier")}, {})
    with pytest.raises(OfaError, match=r"--max-drop 0\.5: .*all but one of its 5 quantized layers"):
        _run(q, tmp_path, 0.5)
    assert not (tmp_path / "model.onnx.variant").exists()


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), -0.01])
def test_a_bound_must_be_a_finite_number_of_points(value):
    with pytest.raises(OfaError, match="--max-drop must be a finite number"):
        bound.check_max_drop(value, "int8", 512)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_bound_is_for_int8_only(precision):
    with pytest.raises(OfaError, match=f"--max-drop .*--precision {precision}"):
        bound.check_max_drop(0.5, precision, 512)


def test_a_bound_needs_calibration_images():
    with pytest.raises(OfaError, match="--max-drop: .*calibration image"):
        bound.check_max_drop(0.5, "int8", 0)
    assert bound.check_max_drop(None, "fp32", 0) is None and bound.check_max_drop(0, "int8", 1) == 0.0


def test_the_test_split_hold_out_is_seeded_and_disjoint():
    v, t = bound.split_test(360, 0)
    assert len(v) == 180 and len(t) == 180 and not set(v) & set(t) and set(v) | set(t) == set(range(360))
    assert (bound.split_test(360, 0)[0] == v).all() and not (bound.split_test(360, 1)[0] == v).all()
    with pytest.raises(OfaError, match="at least two"):
        bound.split_test(1, 0)


def test_layer_of_names_the_module():
    assert layer_of("/blocks.8/expand/Conv") == "blocks.8" and layer_of("/stem/conv/Conv") == "stem"
    assert layer_of("/blocks.8/expand/Conv_output_0::HardSigmoid_3") == "blocks.8"
    assert layer_of("Conv_12") == "Conv_12"


# -- the catalog ----------------------------------------------------------------------------
def test_sidecar_quantization_record():
    assert quantization(None) == (None, None, None)
    assert quantization({"precision": "fp32"}) == (0.0, None, None)
    assert quantization({"precision": "int8", "accuracy": {"drop_points": 0.56}}) == (0.56, None, None)
    assert quantization({"precision": "int8", "accuracy": {"drop_points": -0.2},
                         "bound": {"max_drop_points": 0.5, "reverted_count": 7}}) == (-0.2, 0.5, 7)
    assert quantization({"precision": "int8", "accuracy": {"drop_points": "x"}, "bound": {"reverted_count": True}}) \
        == (None, None, None)


def test_migration_to_7_adds_the_drop_columns_and_keeps_rows(tmp_path: Path):
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path)
    for version in range(6):
        for statement in statements(MIGRATIONS[version].replace("{image_size}", "32")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("INSERT INTO subnets VALUES ('k', 'k', '{}', 1, 2, 'd')")
    conn.execute("INSERT INTO artifacts (subnet, target, kind, path, sha256, bytes, created, precision, resolution) "
                 "VALUES ('k', 'cpu', 'onnx', '/x/model.onnx', 'h', 3, 'd', 'int8', 32)")
    conn.commit()
    conn.close()
    with Catalog(path) as cat:
        assert cat.version == SCHEMA_VERSION == 7
        art = cat.artifact("k", "cpu", "onnx", "int8", 32)
        assert art["sha256"] == "h" and (art["drop_points"], art["max_drop"], art["reverted"]) == (None, None, None)
        onnx = tmp_path / "model.onnx"
        onnx.write_bytes(b"x")
        cat.add_artifact("k", "cpu", "onnx", onnx, "h2", "int8", 32,
                         {"precision": "int8", "accuracy": {"drop_points": 0.3},
                          "bound": {"max_drop_points": 0.5, "reverted_count": 4}})
        art = cat.artifact("k", "cpu", "onnx", "int8", 32)
        assert (art["sha256"], art["drop_points"], art["max_drop"], art["reverted"]) == ("h2", 0.3, 0.5, 4)


def _entry(precision, accuracy, p90, drop, tmp_path):
    onnx = tmp_path / f"{precision}-{accuracy}.onnx"
    onnx.write_bytes(b"x")
    return {"text": f"{precision}-{accuracy}", "precision": precision, "accuracy": accuracy, "mflops": 5.0,
            "latency_ms": {"p90": p90}, "unstable": False, "onnx": str(onnx), "drop_points": drop}


def test_select_max_drop_keeps_entries_within_the_recorded_drop(tmp_path):
    from ofa_deploy.catalog import NothingFits, select

    items = [_entry("fp32", 0.90, 2.0, 0.0, tmp_path), _entry("int8", 0.93, 1.0, 1.2, tmp_path),
             _entry("int8", 0.91, 1.1, 0.4, tmp_path), _entry("fp16", 0.95, 1.5, None, tmp_path)]
    assert select(items, max_latency_ms=3)["text"] == "fp16-0.95"
    assert select(items, max_latency_ms=3, max_drop=0.5)["text"] == "int8-0.91"
    assert select(items, max_latency_ms=3, max_drop=2)["text"] == "int8-0.93"
    with pytest.raises(NothingFits, match="recorded accuracy drop is within 0.5 points .*1 record no drop"):
        select([items[1], items[3]], max_latency_ms=3, max_drop=0.5)
    assert not math.isnan(items[0]["drop_points"])


# -- end to end (a random-weight run: fast; the bound is what is checked, not accuracy) ----
def test_export_max_drop_records_the_bound_and_holds_out_half_the_test_split(fake_run, tmp_path, capsys):
    from conftest import run_cli

    out = tmp_path / "e"
    code, stdout, err = run_cli(capsys, "export", fake_run, "--smallest", "--precision", "int8", "--max-drop", "100",
                                "--calibration-images", "32", "--bn-images", "64", "--parity-images", "16",
                                "--out", out)
    assert code == 0, err
    assert "bound 100 points" in stdout
    sc = json.loads((out / "model.json").read_text())
    b = sc["bound"]
    assert b["max_drop_points"] == 100 and b["reverted_count"] == 0 and b["quantized_nodes"] > 0
    assert b["validation"]["source"]["split"] == "test-part" and b["validation"]["images"] == 180
    assert sc["accuracy"]["images"] == 180 and b["test"]["drop_points"] == sc["accuracy"]["drop_points"]
    assert b["reverted_precision"] == "fp32"


def test_a_run_with_a_validation_split_bounds_on_it(tmp_path, capsys):
    from conftest import make_fake_run, run_cli

    from ofa_deploy import run

    run_dir = make_fake_run(tmp_path / "r")
    config = run.read_config(run_dir)
    config["data"]["val_size"] = 100
    run.write_config(run_dir, config)
    out = tmp_path / "e"
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--precision", "int8", "--max-drop", "100",
                           "--calibration-images", "32", "--bn-images", "64", "--parity-images", "16", "--out", out)
    assert code == 0, err
    sc = json.loads((out / "model.json").read_text())
    assert sc["bound"]["validation"]["source"]["split"] == "val" and sc["bound"]["validation"]["images"] == 100
    assert sc["accuracy"]["images"] == 360  # the whole test split reports the accuracy


def test_a_bound_not_met_writes_nothing(fake_run, tmp_path, capsys, monkeypatch):
    from conftest import assert_one_line_error, run_cli

    def unmet(*args, **kwargs):
        raise OfaError("--max-drop 0.5: int8 is 3.00 points below fp32; no int8 model meets it (nothing written)")

    monkeypatch.setattr("ofa_deploy.export.calibration_search.bounded_int8", unmet)
    out = tmp_path / "e"
    code, _, err = run_cli(capsys, "export", fake_run, "--smallest", "--precision", "int8", "--max-drop", "0.5",
                           "--calibration-images", "32", "--bn-images", "64", "--parity-images", "16", "--out", out)
    assert_one_line_error(code, err, "--max-drop 0.5")
    assert not out.exists() and not list(tmp_path.glob("e*"))
