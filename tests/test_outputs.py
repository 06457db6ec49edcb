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
from conftest import make_fake_run, one_torch_thread

from ofa_deploy.cli import main

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


# -- catalogs --------------------------------------------------------------------------------

def _result(p50: float, subnet: str, **model) -> dict:
    from ofa_deploy.space import SearchSpace

    lat = {"min": p50 * 0.9, "mean": p50, "std": p50 / 30, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2}
    return {"latency_ms": lat, "n": 100, "cov": 0.02, "unstable": False, "backend": "onnxruntime", "batch": 1,
            "target": "cpu", "environment": {"hostname": "h", "date": "2026-01-01T00:00:00+00:00"},
            "model": {"subnet": subnet, "space": SearchSpace(in_channels=1).to_dict(),
                      "accuracy": {"top1": 0.5 + p50 / 10, "images": 360},
                      "source": {"run_dir": "/runs/r", "checkpoint_sha256": "ab" * 32, "dataset": "digits"}, **model}}


@pytest.fixture
def catalog(tmp_path) -> Path:
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    results = tmp_path / "good.json"
    results.write_text(json.dumps([_result(1.0, str(space.smallest())), _result(2.0, str(space.largest()))]))
    db = tmp_path / "c.db"
    assert main(["catalog", "import", str(results), "--catalog", str(db)]) == 0
    return db


READERS = [["list"], ["pareto"], ["select", "--max-latency-ms", "5"], ["plot"]]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_read_only_commands_leave_the_catalog_alone(catalog, capsys, args):
    before = sorted(p.name for p in catalog.parent.iterdir())
    hashes = tree_hashes(catalog)
    catalog.chmod(0o444)  # a read-only catalog can still be read
    try:
        code, out, err = run_cli(capsys, "catalog", *args, "--catalog", catalog, "--target", "cpu")
    finally:
        catalog.chmod(0o644)
    assert code == 0 or (args[0] == "select" and code == 1 and "no usable entry" in err), err  # no ONNX files
    assert tree_hashes(catalog) == hashes
    after = sorted(p.name for p in catalog.parent.iterdir())
    assert after == sorted(before + (["catalog-cpu.png"] if args[0] == "plot" else []))  # no -wal/-shm


def test_show_is_read_only(catalog, capsys):
    from ofa_deploy.space import SearchSpace

    hashes = tree_hashes(catalog)
    code, _, err = run_cli(capsys, "catalog", "show", str(SearchSpace(in_channels=1).smallest()), "--catalog",
                           catalog, "--target", "cpu")
    assert code == 0, err
    assert tree_hashes(catalog) == hashes and sorted(p.name for p in catalog.parent.iterdir()) == ["c.db", "good.json"]


@pytest.mark.parametrize("args", [*READERS, ["import", "RESULTS"]], ids=lambda a: a[0])
def test_foreign_sqlite_file_is_refused_untouched(catalog, tmp_path, capsys, args):
    import sqlite3

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()
    before, names = tree_hashes(other), sorted(p.name for p in tmp_path.iterdir())
    args = [str(tmp_path / "good.json") if a == "RESULTS" else a for a in args]
    code, _, err = run_cli(capsys, "catalog", *args, "--catalog", other, *(["--target", "cpu"] if args[0] != "import"
                                                                         else []))
    assert_refused(code, err, "not an ofa-deploy catalog", "users")
    assert tree_hashes(other) == before and sorted(p.name for p in tmp_path.iterdir()) == names
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("args", [*READERS, ["import", "RESULTS"]], ids=lambda a: a[0])
def test_non_database_file_is_refused_untouched(tmp_path, capsys, args):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n")
    results = tmp_path / "good.json"
    from ofa_deploy.space import SearchSpace

    results.write_text(json.dumps(_result(1.0, str(SearchSpace(in_channels=1).smallest()))))
    before = tree_hashes(tmp_path)
    args = [str(results) if a == "RESULTS" else a for a in args]
    code, _, err = run_cli(capsys, "catalog", *args, "--catalog", notes, *(["--target", "cpu"] if args[0] != "import"
                                                                         else []))
    assert_refused(code, err, "not an SQLite database")
    assert tree_hashes(tmp_path) == before


def test_plot_over_the_catalog_is_refused(catalog, capsys):
    hashes = tree_hashes(catalog)
    code, _, err = run_cli(capsys, "catalog", "plot", "--catalog", catalog, "--target", "cpu", "--out", catalog)
    assert_refused(code, err, "catalog")
    assert tree_hashes(catalog) == hashes


def test_plot_over_a_foreign_file_is_refused(catalog, tmp_path, capsys):
    mine = tmp_path / "holiday.png"
    mine.write_text("not really a png\n")
    hashes = tree_hashes(catalog, mine)
    code, _, err = run_cli(capsys, "catalog", "plot", "--catalog", catalog, "--target", "cpu", "--out", mine)
    assert_refused(code, err, "not a PNG")
    assert tree_hashes(catalog, mine) == hashes


@pytest.mark.parametrize("bad", ["nan", "negative", "zero", "inf"])
def test_import_is_all_or_nothing_and_refuses_bad_latencies(catalog, tmp_path, capsys, bad):
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1)
    good, broken = _result(3.0, str(space.middle())), _result(1.0, str(space.middle()))
    broken["latency_ms"]["p90"] = {"nan": float("nan"), "negative": -1.0, "zero": 0.0, "inf": float("inf")}[bad]
    results = tmp_path / "mixed.json"
    results.write_text(json.dumps([good, broken]))  # json writes NaN/Infinity as Python reads them
    hashes = tree_hashes(catalog)
    code, _, err = run_cli(capsys, "catalog", "import", results, "--catalog", catalog)
    # NaN and Infinity may already be refused as JSON by the reader: either way, named
    assert_refused(code, err, "mixed.json", *(("latency_ms.p90", "positive") if bad in ("negative", "zero") else ()))
    assert tree_hashes(catalog) == hashes


def test_import_failing_late_commits_nothing(catalog, tmp_path, capsys):
    """The second result fails only once the first would have been written (unknown subnet)."""
    from ofa_deploy.space import SearchSpace

    results = tmp_path / "late.json"
    results.write_text(json.dumps([_result(3.0, str(SearchSpace(in_channels=1).middle())),
                                   _result(1.0, "not-a-subnet")]))
    hashes = tree_hashes(catalog)
    code, _, err = run_cli(capsys, "catalog", "import", results, "--catalog", catalog)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert tree_hashes(catalog) == hashes
    from ofa_deploy.catalog import Catalog

    with Catalog(catalog, readonly=True) as cat:
        assert cat.count("latency") == 2


def test_failed_first_import_leaves_no_catalog(tmp_path, capsys):
    results = tmp_path / "anon.json"
    results.write_text(json.dumps({**_result(1.0, "x"), "model": {}}))  # names no subnet and no space
    code, _, err = run_cli(capsys, "catalog", "import", results, "--catalog", tmp_path / "new" / "c.db")
    assert_refused(code, err, "search space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon.json"]


@pytest.fixture(scope="module")
def large_export(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "large"
    assert main(["export", str(run_dir), "--largest", "--out", str(out), *FAST]) == 0
    return out


def test_profile_of_a_swapped_model_is_not_imported(export_dir, large_export, tmp_path, capsys):
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(export_dir, swapped)
    shutil.copy(large_export / "model.onnx", swapped / "model.onnx")  # model.json still says smallest
    result = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "profile", swapped / "model.onnx", "--warmup-s", "0", "--min-time-s", "0.01",
                           "--min-iterations", "5", "--out", result)
    assert code == 0, err
    code, _, err = run_cli(capsys, "catalog", "import", result, "--catalog", tmp_path / "c.db")
    assert_refused(code, err, "not the file exported")
    assert not (tmp_path / "c.db").exists()
    # the same measurement named by the export's model.json from elsewhere is refused too
    bare = tmp_path / "bare.onnx"
    shutil.copy(large_export / "model.onnx", bare)
    code, _, err = run_cli(capsys, "profile", bare, "--warmup-s", "0", "--min-time-s", "0.01",
                           "--min-iterations", "5", "--out", tmp_path / "b.json")
    assert code == 0, err
    code, _, err = run_cli(capsys, "catalog", "import", tmp_path / "b.json", "--catalog", tmp_path / "c.db",
                           "--model-json", export_dir / "model.json")
    assert_refused(code, err, "not the file exported")
    assert not (tmp_path / "c.db").exists()


# -- eval ------------------------------------------------------------------------------------

EVAL = ["--per-bucket", "1", "--calib-n", "32", "--test-subset", "40", "--device", "cpu", "--quiet", "--json"]


def test_second_eval_with_other_buckets_gets_its_own_name(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run")
    assert run_cli(capsys, "eval", run, "--buckets", "8", *EVAL)[0] == 0
    first = tree_hashes(run / "eval")
    code, _, err = run_cli(capsys, "eval", run, "--buckets", "6", *EVAL)
    assert code == 0, err
    assert sorted(p.name for p in (run / "eval").glob("*.json")) == ["test-s0-n1-b6-c32-t40.json",
                                                                     "test-s0-n1-b8-c32-t40.json"]
    assert {k: v for k, v in tree_hashes(run / "eval").items() if k in first} == first


def test_eval_name_holding_another_evaluation_is_refused(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run")
    assert run_cli(capsys, "eval", run, "--buckets", "8", "--name", "mine", *EVAL)[0] == 0
    first = tree_hashes(run)
    code, _, err = run_cli(capsys, "eval", run, "--buckets", "6", "--name", "mine", *EVAL)
    assert_refused(code, err, "mine.json", "different evaluation", "buckets")
    assert tree_hashes(run) == first
    (run / "eval" / "notes.json").write_text('["my own file"]\n')
    code, _, err = run_cli(capsys, "eval", run, "--buckets", "6", "--name", "notes", "--overwrite", *EVAL)
    assert_refused(code, err, "notes.json", "not an evaluation")
    assert (run / "eval" / "notes.json").read_text() == '["my own file"]\n'
    code, _, err = run_cli(capsys, "eval", run, "--buckets", "6", "--name", "mine", "--overwrite", *EVAL)
    assert code == 0, err
    assert json.loads((run / "eval" / "mine.json").read_text())["params"]["buckets"] == [6.0]


# -- leftovers of killed writers ----------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_next_export_removes_what_a_killed_one_left(run_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    dead = tmp_path / f".exp.{_dead_pid()}.abcd1234.partial"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    alive_proc = subprocess.Popen(["sleep", "60"])
    try:
        alive = tmp_path / f".exp.{alive_proc.pid}.efgh5678.partial"  # a writer still at work: kept
        alive.mkdir()
        legacy = tmp_path / ".exp.q1w2e3r4.partial"  # pid-less name of an older version, fresh: kept
        legacy.mkdir()
        code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, *FAST)
        assert code == 0, err
        assert not dead.exists() and alive.is_dir() and legacy.is_dir()
        old = 2 * 3600
        os.utime(legacy, (legacy.stat().st_atime - old, legacy.stat().st_mtime - old))
        code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, "--overwrite", *FAST)
        assert code == 0, err
        assert not legacy.exists() and alive.is_dir()
    finally:
        alive_proc.kill()
        alive_proc.wait()


def test_next_write_of_a_file_removes_its_stale_temp_files(export_dir, tmp_path, capsys):
    result = tmp_path / "r.json"
    stale = tmp_path / f".r.json.{_dead_pid()}.zz9_ab12.tmp"
    stale.write_bytes(b"{\"half\":")
    other = tmp_path / f".other.json.{_dead_pid()}.zz9_ab12.tmp"  # another output's: not this command's to clean
    other.write_bytes(b"x")
    code, _, err = run_cli(capsys, "profile", export_dir, "--warmup-s", "0", "--min-time-s", "0.01",
                           "--min-iterations", "5", "--out", result)
    assert code == 0, err
    assert not stale.exists() and other.exists() and json.loads(result.read_text())["n"] >= 5


def test_killed_training_leaves_temp_that_the_resume_removes(tmp_path):
    """SIGKILL while checkpoints are written, then --resume: no .tmp file of ours remains."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "ofa_deploy", "train", "--dataset", "digits", "--epochs", "3", "--train-subset",
            "64", "--test-subset", "32", "--device", "cpu", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # what a kill in the middle of the checkpoint write leaves (the window is too short to hit reliably)
    (out / f".last.pt.{proc.pid}.k1ll3d00.tmp").write_bytes(b"half a checkpoint")
    done = subprocess.run([sys.executable, "-m", "ofa_deploy", "train", "--resume", str(out), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "final.pt").is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_train_out_refuses_a_folder_of_user_files(tmp_path, capsys):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "cv.pdf").write_bytes(b"%PDF")
    before = tree_hashes(mine)
    code, _, err = run_cli(capsys, "train", "--dataset", "digits", "--epochs", "1", "--train-subset", "32",
                           "--device", "cpu", "--quiet", "--out", mine)
    assert_refused(code, err, "cv.pdf")
    assert tree_hashes(mine) == before and [p.name for p in mine.iterdir()] == ["cv.pdf"]


# -- other writing commands --------------------------------------------------------------------

def _user_dir(tmp_path: Path) -> Path:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1\n")
    return mine


def test_report_replaces_only_a_report(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run")
    assert run_cli(capsys, "eval", run, "--buckets", "8", *EVAL)[0] == 0
    before = tree_hashes(run)
    for out, needle in ((run, "run directory"), (tmp_path, "contains the run directory"),
                        (_user_dir(tmp_path), "thesis.tex")):
        mine = tree_hashes(out)
        code, _, err = run_cli(capsys, "report", run, "--out", out)
        assert_refused(code, err, needle)
        assert tree_hashes(out) == mine
    assert tree_hashes(run) == before
    report = tmp_path / "report"
    assert run_cli(capsys, "report", run, "--out", report)[0] == 0
    assert json.loads((report / "report.json").read_text())["format"] == "ofa-deploy/report"
    assert run_cli(capsys, "report", run, "--out", report)[0] == 0  # a rerun replaces its own report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_profile_out_never_replaces_the_model_or_a_foreign_file(export_dir, tmp_path, capsys):
    before = tree_hashes(export_dir)
    code, _, err = run_cli(capsys, "profile", export_dir / "model.onnx", "--out", export_dir / "model.onnx")
    assert_refused(code, err, "model")
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}\n')
    code, _, err = run_cli(capsys, "profile", export_dir, "--out", mine)
    assert_refused(code, err, "not a profile result")
    assert tree_hashes(export_dir) == before and mine.read_text() == '{"my": "notes"}\n'


def test_quickstart_and_predictor_refuse_a_folder_of_user_files(run_dir, tmp_path, capsys):
    mine = _user_dir(tmp_path)
    before = tree_hashes(mine)
    code, _, err = run_cli(capsys, "quickstart", "--out", mine, "--fast", "--quiet")
    assert_refused(code, err, "thesis.tex")
    code, _, err = run_cli(capsys, "predictor", "build", "--target", "cpu", "--run", run_dir, "--n", "10",
                           "--out", mine)
    assert_refused(code, err, "thesis.tex")
    code, _, err = run_cli(capsys, "predictor", "build", "--target", "cpu", "--run", run_dir, "--n", "10",
                           "--out", run_dir)
    assert_refused(code, err, "run directory")
    assert tree_hashes(mine) == before


def test_catalog_build_never_clears_user_files_in_artifacts(run_dir, tmp_path, capsys):
    db = tmp_path / "c.db"
    build = ["catalog", "build", run_dir, "--target", "cpu", "--catalog", db, "--n", "2", "--finalists", "1",
             "--calib-images", "32", "--test-images", "40", "--warmup-s", "0", "--min-iterations", "5",
             "--min-time-s", "0.01", "--json"]
    code, _, err = run_cli(capsys, *build)
    assert code == 0, err
    (tmp_path / "artifacts" / "readme.txt").write_text("my notes about these models\n")
    (export,) = [p for p in (tmp_path / "artifacts" / "cpu").iterdir()]
    (export / "notes.txt").write_text("measured by hand: 1.2 ms\n")
    (export / "model.onnx").write_bytes(b"damaged")  # the catalog's hash no longer matches: re-export wanted
    before = tree_hashes(tmp_path / "artifacts")
    code, _, err = run_cli(capsys, *build)
    assert_refused(code, err, "notes.txt")
    assert tree_hashes(tmp_path / "artifacts") == before
    (export / "notes.txt").unlink()
    code, _, err = run_cli(capsys, *build)  # an export of its own (damaged) is replaced
    assert code == 0, err
    assert (tmp_path / "artifacts" / "readme.txt").read_text() == "my notes about these models\n"
    assert (export / "model.onnx").read_bytes() != b"damaged"


def test_an_empty_directory_may_be_replaced(run_dir, tmp_path, capsys):
    """Nothing to lose: --overwrite (and a report, which always rewrites its own) takes it."""
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, *FAST)
    assert_refused(code, err, "already exists", "--overwrite")
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", out, "--overwrite", *FAST)
    assert code == 0, err
    assert (out / "model.json").is_file()


def test_rename_noreplace_refuses_an_existing_target_with_and_without_renameat2(tmp_path, monkeypatch):
    from ofa_deploy import outputs_fs

    for native in (True, False):
        if not native:  # a system or filesystem without a no-replace rename: checked just before
            monkeypatch.setattr(outputs_fs, "_renameat2_noreplace", lambda src, dst: None)
        src, dst = tmp_path / f"src{native}", tmp_path / f"dst{native}"
        src.mkdir()
        dst.mkdir()  # empty: a plain rename() would silently replace it
        with pytest.raises(FileExistsError):
            outputs_fs.rename_noreplace(src, dst)
        assert src.is_dir() and dst.is_dir()
        dst.rmdir()
        outputs_fs.rename_noreplace(src, dst)
        assert dst.is_dir() and not src.exists()
