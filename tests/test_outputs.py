"""What a command may write and replace (``ofa_deploy.outputs``): for every way a user could
lose good data by a typo or a race, the command refuses with one line on stderr, exit
status != 0, no traceback - and every good file keeps its hash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_deploy.cli import main

from conftest import make_fake_run, one_torch_thread

FAST = ["--bn-images", "64", "--no-accuracy", "--parity-images", "16", "--calibration-images", "8"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def tree_hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (and of single files), by path."""
    found = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofa-deploy: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("outputs") / "run")


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "small"
    assert main(["export", str(run_dir), "--smallest", "--out", str(out), *FAST]) == 0
    return out


# -- export --------------------------------------------------------------------------------

def test_export_over_its_own_run_is_refused(run_dir, capsys):
    before = tree_hashes(run_dir)
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", run_dir, "--overwrite", *FAST)
    assert_refused(code, err, "run directory", "--out")
    assert tree_hashes(run_dir) == before


def test_export_out_containing_the_run_is_refused(run_dir, capsys, monkeypatch):
    before = tree_hashes(run_dir)
    monkeypatch.chdir(run_dir.parent)
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", ".", "--overwrite", *FAST)
    assert_refused(code, err, "contains the run directory")
    assert tree_hashes(run_dir) == before


def test_overwrite_refuses_a_directory_with_foreign_files(run_dir, export_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("model.json", "model.onnx"):
        (mine / name).write_bytes((export_dir / name).read_bytes())
    (mine / "notes.txt").write_text("my notes\n")
    before = tree_hashes(mine)
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", mine, "--overwrite", *FAST)
    assert_refused(code, err, "notes.txt")
    assert tree_hashes(mine) == before


@pytest.mark.parametrize("content", ["user-dir", "catalog", "file"])
def test_overwrite_refuses_what_is_not_an_export(run_dir, tmp_path, capsys, content):
    out = tmp_path / "target"
    if content == "user-dir":
        out.mkdir()
        (out / "thesis.tex").write_text("chapter 1\n")
    elif content == "catalog":
        import sqlite3

        out.mkdir()
        sqlite3.connect(out / "c.db").execute("CREATE TABLE t (x)").connection.commit()
    else:
        out.write_text("hello\n")
    before = tree_hashes(out)
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, "--overwrite", *FAST)
    assert_refused(code, err, str(out))
    assert tree_hashes(out) == before


def test_overwrite_replaces_an_export(run_dir, export_dir, tmp_path, capsys):
    out = tmp_path / "again"
    out.mkdir()
    for p in export_dir.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    code, _, err = run_cli(capsys, "export", run_dir, "--largest", "--out", out, "--overwrite", *FAST)
    assert code == 0, err
    assert json.loads((out / "model.json").read_text())["subnet_text"].startswith("76-76")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


def test_export_dirs_get_the_umask(run_dir, tmp_path):
    out = tmp_path / "perm"
    saved = os.umask(0o022)
    try:
        assert main(["export", str(run_dir), "--smallest", "--out", str(out), *FAST]) == 0
    finally:
        os.umask(saved)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "model.json").stat().st_mode & 0o777 == 0o644


_RACE = """
import sys
from ofa_deploy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_exports_to_one_out_one_wins(run_dir, tmp_path):
    """Two processes export to one new --out at once: exactly one succeeds, the other says
    why and replaced nothing; the result is one complete export."""
    out = tmp_path / "race"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, "export", str(run_dir), which, "--out", str(out), *FAST],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for which in ("--smallest", "--largest")]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for code, err in results if code != 0)
    assert "Traceback" not in loser and loser.strip().startswith("ofa-deploy: error: "), loser
    assert "appeared while this command ran" in loser or "already exists" in loser, loser
    from ofa_deploy.export import read_sidecar, verify_files

    verify_files(out, read_sidecar(out))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_only_what_it_checked(export_dir, tmp_path):
    """With --overwrite, an export that another writer put in place meanwhile is not replaced."""
    import shutil

    from ofa_deploy.errors import OfaError
    from ofa_deploy.export.staging import staged_directory

    out = tmp_path / "x"
    shutil.copytree(export_dir, out)
    with pytest.raises(OfaError, match="appeared while this command ran"):
        with staged_directory(out, overwrite=True) as tmp:
            (tmp / "model.json").write_text("{}")
            shutil.rmtree(out)
            shutil.copytree(export_dir, out)  # the other writer's export
    assert {Path(k).name: v for k, v in tree_hashes(out).items()} == \
        {Path(k).name: v for k, v in tree_hashes(export_dir).items()}
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_new_out_that_appears_meanwhile_is_not_replaced(tmp_path):
    from ofa_deploy.errors import OfaError
    from ofa_deploy.export.staging import staged_directory

    out = tmp_path / "y"
    with pytest.raises(OfaError, match="appeared while this command ran"):
        with staged_directory(out) as tmp:
            (tmp / "model.json").write_text("{}")
            out.mkdir()  # an empty directory: a plain rename would silently replace it
    assert out.is_dir() and not any(out.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["y"]
