"""The last hostile inputs of issue 34's campaign: each one line (or a warning), nothing left
behind. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import make_fake_run

ROOT = Path(__file__).resolve().parents[1]
FAST_PROFILE = ["--warmup-s", "0.02", "--min-iterations", "20", "--min-time-s", "0.05", "--cov-threshold", "100"]
FAST_EXPORT = ["--bn-images", "64", "--no-accuracy", "--parity-images", "16", "--calibration-images", "8"]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ofa_deploy", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, **kwargs)


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_profile_of_an_onnx_with_a_string_input_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("text", TensorProto.STRING, [1])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["text"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    line = _one_line(_cli("profile", str(path), *FAST_PROFILE))
    assert "input 'text' is a tensor(string)" in line and "float" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_spec_with_a_leading_dash_is_explained():
    line = _one_line(_cli("subnet", "show", "-33-33_33-33-33_33-33-33_33-33-33_33-33-33"))
    assert "'-33-33_33-33-33_33-33-33_33-33-33_33-33-33' begins with '-'" in line and "--" in line, line
    # and what the hint says works: the spec reaches the parser, which says what is wrong with it
    line = _one_line(_cli("subnet", "show", "--", "-33-33_33-33-33_33-33-33_33-33-33_33-33-33"))
    assert "subnet text" in line and "malformed" in line, line
    # an ordinary unknown option gets no such hint
    assert "begins with" not in _one_line(_cli("subnet", "show", "--bogus"))


def test_report_into_a_folder_of_user_files_does_not_offer_an_overwrite_flag(tmp_path):
    run = make_fake_run(tmp_path / "run")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    line = _one_line(_cli("report", str(run), "--out", str(out), "--allow-missing-eval"))
    assert "--overwrite" not in line and "choose another --out" in line, line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_profile_warns_when_model_json_lists_no_files(tmp_path):
    run = make_fake_run(tmp_path / "run")
    export = tmp_path / "exp"
    made = _cli("export", str(run), "--smallest", "--out", str(export), *FAST_EXPORT)
    assert made.returncode == 0, made.stderr
    checked = _cli("profile", str(export), "--json", *FAST_PROFILE)
    assert checked.returncode == 0 and "warning" not in checked.stderr, checked.stderr
    sidecar = json.loads((export / "model.json").read_text())
    del sidecar["files"]
    (export / "model.json").write_text(json.dumps(sidecar))
    done = _cli("profile", str(export), "--json", *FAST_PROFILE)
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "SHA-256" in done.stderr and "model.onnx" in done.stderr, done.stderr
    assert json.loads(done.stdout)["latency_ms"]["p50"] > 0


def _without_root_powers() -> list[str]:
    """A prefix that runs the child as root without the power to write others' files
    (CAP_DAC_OVERRIDE), so that file permissions apply as for any user; none when not root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot take write permission away")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_catalog_import_into_a_catalog_the_user_cannot_write(tmp_path):
    from test_catalog import SPACE, fake_result

    from ofa_deploy.catalog import Catalog

    # a folder everyone may write (so SQLite could put -wal/-shm files there), a catalog file only root may
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(folder, 0o777)
        db = folder / "c.db"
        with Catalog(db) as cat:
            cat.set_space(SPACE.to_dict())
        os.chmod(db, 0o444)
        results = folder / "r.json"
        results.write_text(json.dumps([fake_result(1.0, subnet=str(SPACE.middle()))]))
        os.chmod(results, 0o444)
        before = db.read_bytes()
        argv = [*_without_root_powers(), sys.executable, "-m", "ofa_deploy", "catalog", "import", str(results),
                "--catalog", str(db)]
        line = _one_line(subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)}))
        assert f"cannot write catalog {db}" in line and "damaged" not in line, line
        assert "read-only" in line or "permission" in line, line
        assert db.read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["c.db", "r.json"]  # no c.db-shm, c.db-wal
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        subprocess.run(["rm", "-rf", str(folder)])
