"""`reproduce --out` and `build-engine --out` go through the output-ownership rules
(issue 34): an output that is not recognisably theirs is refused in one line, before
anything is written; their own earlier output is accepted (a reproduction resumes)."""

from __future__ import annotations

import json

import pytest
from test_outputs import tree_hashes

from ofa_deploy.errors import OfaError
from ofa_deploy.outputs import ENGINE_FILES, REPRODUCE_ENTRIES, REPRODUCE_MANIFEST
from ofa_deploy.reproduce import FIGURES, MANIFEST, ReproduceOptions, _open_manifest, plan, reproduce

TINY = ReproduceOptions(dataset="digits", scale=0.2, train_subset=64, test_subset=40, per_bucket=1,
                        buckets=(8.0,), calib_n=32)


def _foreign(root):
    """Things that are not a reproduction: a folder of the user's files, a training run, a
    catalog file, a folder holding a catalog, a reproduction with the user's file in it."""
    cases = {}
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("mine")
    cases["mine"] = "notes.txt"
    (root / "run").mkdir()
    for name in ("config.toml", "last.pt", "metrics.jsonl"):
        (root / "run" / name).write_text("x")
    cases["run"] = "a training run directory"
    (root / "c.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
    cases["c.db"] = "an SQLite database"
    (root / "cat").mkdir()
    (root / "cat" / "c.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
    cases["cat"] = "a directory holding a catalog"
    (root / "mixed").mkdir()
    manifest = {"options": TINY.defining(), "runs": {}, "wall_time_s": 0.0}
    (root / "mixed" / MANIFEST).write_text(json.dumps(manifest))  # a valid one
    (root / "mixed" / "thesis.tex").write_text("mine")
    cases["mixed"] = "not ours (thesis.tex)"
    return cases


def test_reproduce_refuses_what_is_not_a_reproduction(tmp_path):
    for name, needle in _foreign(tmp_path).items():
        before = tree_hashes(tmp_path)
        with pytest.raises(OfaError) as info:
            reproduce(TINY, tmp_path / name, device="cpu", progress=False)
        message = str(info.value)
        assert needle in message and "reproduction directory" in message and "\n" not in message, message
        assert tree_hashes(tmp_path) == before, name  # nothing written


def test_reproduce_refuses_its_data_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    options = ReproduceOptions(**{**TINY.__dict__, "data_dir": str(data)})
    for out in (data, tmp_path):
        with pytest.raises(OfaError, match="data directory"):
            reproduce(options, out, device="cpu", progress=False)
    assert list(data.iterdir()) == []


def test_reproduce_accepts_its_own_earlier_output(tmp_path):
    assert REPRODUCE_MANIFEST == MANIFEST
    assert {folder.split("/")[0] for folder, _, _ in FIGURES.values()} <= REPRODUCE_ENTRIES
    out = tmp_path / "r"
    runs = plan(TINY.dataset, TINY.scale)
    _open_manifest(out, TINY, runs, None)  # a new folder
    (out / "runs" / "ps").mkdir(parents=True)
    (out / "report").mkdir()
    (out / "ablations").mkdir()
    (out / "verdict.json").write_text("{}")
    (out / "verdict.md").write_text("")
    (out / f".verdict.json.{2 ** 22 + 7}.abcdef.tmp").write_text("")  # a killed writer's leftover
    manifest = _open_manifest(out, TINY, runs, ["ofa-deploy", "reproduce"])  # resumed
    assert json.loads((out / MANIFEST).read_text())["commands"] == manifest["commands"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _open_manifest(empty, TINY, runs, None)
    assert (empty / MANIFEST).is_file()


def test_engine_files_are_the_trt_names():
    from ofa_deploy.export.trt_plan import ENGINE_FILE, ENGINE_SIDECAR

    assert ENGINE_FILES == {ENGINE_FILE, ENGINE_SIDECAR}


def test_engine_out_refusals_need_no_tensorrt(tmp_path):
    """The ownership check runs before TensorRT is imported (this machine may lack it)."""
    from ofa_deploy.export.trt_build import _check_out

    export = tmp_path / "exp"
    export.mkdir()
    (export / "model.json").write_text(json.dumps({"format": "ofa-deploy/model"}))
    (export / "model.onnx").write_bytes(b"onnx")
    for name, needle in _foreign(tmp_path).items():
        with pytest.raises(OfaError, match="engine directory") as info:
            _check_out(tmp_path / name, export)
        assert needle in str(info.value) or name == "mixed"
    with pytest.raises(OfaError, match="contains the export directory"):
        _check_out(tmp_path, export)
    other = tmp_path / "other-export"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format": "ofa-deploy/model"}))
    with pytest.raises(OfaError, match="another export directory"):
        _check_out(other, export)
    _check_out(export, export)  # the default: beside its own ONNX
    _check_out(tmp_path / "new", export)
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "model.engine").write_bytes(b"x")
    (tmp_path / "engines" / "engine.json").write_text("{}")
    _check_out(tmp_path / "engines", export)  # engine.json's own check (_check_replaceable) comes next
    assert not (tmp_path / "new").exists()
