"""Write faults: a full disk (ENOSPC), an I/O error (EIO) or a read-only file system (EROFS)
under a writer gives one line naming the file and the cause and a non-zero exit, leaves the
previous artefacts byte for byte (SHA-256) and no temporary file, and the same command run
again once the fault is gone completes - for training, bit-identical to a run never
interrupted.

Two ways in: an ``OSError`` injected at the write sites of ``ofa_deploy.io.atomic_write``
(the bytes, the fsync, the rename) in a subprocess (``_INJECT``), and - when running as root,
as CI does - a small ``tmpfs`` mounted for the test that really fills up."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_resume import ARGS, _assert_same_run, _env, _metric_lines, _train

from ofa_deploy import run, weights
from ofa_deploy.errors import OfaError, Terminated
from ofa_deploy.io import atomic_write, atomic_write_text
from ofa_deploy.outputs_fs import is_leftover_name

ROOT = Path(__file__).resolve().parents[1]

# python -c _INJECT ERRNO SITE NAME SKIP <ofa-deploy argv...>: the ofa-deploy command, with
# the (SKIP+1)-th and later writes of a file whose name contains NAME failing at SITE:
# "write" (the bytes), "fsync" (the flush to disk) or "replace" (the rename over the old file)
_INJECT = r"""
import errno, os, sys
from ofa_deploy import io as _io
err, site, name, skip = getattr(errno, sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
del sys.argv[1:5]
count = [0]
def hit(path, writer=None):
    # the (skip+1)-th file of that name and later ones fail; a file's many writes count once
    if name not in os.path.basename(str(path)):
        return False
    if writer is None or "fault_no" not in writer.__dict__:
        number, count[0] = count[0], count[0] + 1
        if writer is not None:
            writer.__dict__["fault_no"] = number
    else:
        number = writer.__dict__["fault_no"]
    return number >= skip
def fault():
    return OSError(err, os.strerror(err))
if site == "write":
    write = _io._Recorder.write
    def failing_write(self, data):
        if hit(self.path, self):
            self.error = fault()
            raise self.error
        return write(self, data)
    _io._Recorder.write = failing_write
elif site == "fsync":
    fsync = os.fsync
    def failing_fsync(fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(".tmp") and hit(target):
            raise fault()
        return fsync(fd)
    os.fsync = failing_fsync
elif site == "replace":
    replace = os.replace
    def failing_replace(src, dst, **kw):
        if hit(dst):
            raise fault()
        return replace(src, dst, **kw)
    os.replace = failing_replace
from ofa_deploy.cli import main
sys.exit(main(sys.argv[1:]))
"""

CAUSE = {"ENOSPC": "No space left on device", "EIO": "Input/output error", "EROFS": "Read-only file system"}


def _faulty(err: str, site: str, name: str, skip: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _INJECT, err, site, name, str(skip), *argv], env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def _one_line(done: subprocess.CompletedProcess, path: Path, err: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0] == f"ofa-deploy: error: could not write {path}: {CAUSE[err]}", lines[0]


def _tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (by relative path)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    return [p.as_posix() for p in root.rglob("*") if is_leftover_name(p.name)]


# -- atomic_write itself ----------------------------------------------------------------------

@pytest.mark.parametrize("err", sorted(CAUSE))
@pytest.mark.parametrize("site", ["write", "flush", "fsync", "replace"])
def test_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, err, site):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old\n")
    code = getattr(errno, err)

    def boom(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if site == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif site == "replace":
        monkeypatch.setattr(os, "replace", boom)

    def write(f):
        if site == "write":
            f.write(b"half")
            f._f.write = boom  # the next write meets the fault (as a file filling up)
            f.write(b"the rest")
        elif site == "flush":
            f.write(b"x" * 100)
            f._f.flush = boom
            f.flush()
        else:
            f.write(b"new\n")

    with pytest.raises(OfaError) as info:
        atomic_write(target, write)
    assert str(info.value) == f"could not write {target}: {CAUSE[err]}"
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_library_that_hides_the_os_error_still_gets_the_cause(tmp_path, monkeypatch):
    """torch.save reports a failed write as "unexpected pos", numpy as "requested and
    written": the cause the OS gave is what the line says."""
    import numpy as np
    import torch

    def full(self, data):
        self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise self.error

    from ofa_deploy import io as oio

    monkeypatch.setattr(oio._Recorder, "write", full)
    for name, write in [("c.pt", lambda f: torch.save({"w": torch.zeros(1000)}, f)),
                        ("a.npy", lambda f: np.save(f, np.zeros(1000)))]:
        with pytest.raises(OfaError, match=f"could not write .*{name}: No space left on device$"):
            atomic_write(tmp_path / name, write, verify=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signal_error", [KeyboardInterrupt, Terminated])
def test_a_signal_in_the_middle_of_torch_save_is_the_signal_not_torchs_complaint(tmp_path, signal_error):
    """Ctrl-C (or SIGTERM outside training's deferral) inside torch.save: its zip writer then
    fails in its own clean-up ("unexpected pos", a RuntimeError chained to the signal) - the
    caller sees the signal (one line in the CLI, not a traceback), the old file and no temp."""
    import torch

    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")
    written = [0]

    class Cut:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            written[0] += len(memoryview(data))
            if written[0] > 100_000:
                raise signal_error("terminated by SIGTERM")
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    with pytest.raises(signal_error):
        atomic_write(target, lambda f: torch.save({"w": torch.zeros(100_000)}, Cut(f)), verify=True)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_verify_refuses_a_file_that_reads_back_different(tmp_path, monkeypatch):
    """Checkpoints are read back and checked before they replace the previous one."""
    import torch

    target = tmp_path / "last.pt"
    atomic_write(target, lambda f: torch.save({"epoch": 1}, f), verify=True)
    before = target.read_bytes()

    def corrupting(f):
        torch.save({"epoch": 2}, f)
        f._f.flush()
        with open(f"/proc/self/fd/{f._f.fileno()}", "r+b") as g:  # a bit flipped under the writer
            g.seek(10)
            byte = g.read(1)
            g.seek(10)
            g.write(bytes([byte[0] ^ 1]))

    with pytest.raises(OfaError, match="read back differs"):
        atomic_write(target, corrupting, verify=True)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# -- training ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "reference"
    done = _train(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_training_checkpoint_faults_keep_the_last_good_one_and_the_rerun_is_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    argv = ["train", *ARGS, "--out", str(out)]
    # the disk fills while the epoch-3 checkpoint is written
    done = _faulty("ENOSPC", "write", run.LAST, 2, *argv)
    _one_line(done, out / run.LAST, "ENOSPC")
    assert weights.load_checkpoint(out / run.LAST)["epoch"] == 2 and len(_metric_lines(out)) == 2
    assert not _leftovers(out) and not (out / run.FINAL).exists()
    before = _tree(out)
    # the same command: it resumes, and the disk reports an I/O error on the first checkpoint's fsync
    done = _faulty("EIO", "fsync", run.LAST, 0, *argv)
    _one_line(done, out / run.LAST, "EIO")
    assert _tree(out) == before and not _leftovers(out)
    # the file system turned read-only under the logs written after a checkpoint
    done = _faulty("EROFS", "replace", run.METRICS, 0, *argv)
    _one_line(done, out / run.METRICS, "EROFS")
    assert _tree(out) == before and not _leftovers(out)
    # the fault gone, the same command finishes: the run never interrupted
    done = _train(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    _assert_same_run(out, reference)
    assert not _leftovers(out)


def test_a_fault_before_the_first_checkpoint_leaves_no_run_and_the_rerun_starts_clean(tmp_path):
    out = tmp_path / "run"
    done = _faulty("EROFS", "replace", run.CONFIG, 0, "train", *ARGS, "--out", str(out))
    _one_line(done, out / run.CONFIG, "EROFS")
    assert not out.exists()


# -- other writers -------------------------------------------------------------------------------

def test_report_fault_publishes_nothing_and_the_rerun_completes(tmp_path):
    from test_report import _run, _script

    made = _run(_script(f'''
        make("{tmp_path}/a", "rss", 10, 60.0, 0.8, 1)
    ''', block_torch=True))
    assert made.returncode == 0, made.stderr
    runs = _tree(tmp_path / "a")
    out = tmp_path / "rep"
    done = _faulty("ENOSPC", "write", "report.md", 0, "report", str(tmp_path / "a"), "--out", str(out))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "report.md: No space left on device" in done.stderr
    assert not out.exists() and not _leftovers(tmp_path) and _tree(tmp_path / "a") == runs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    ok = subprocess.run([sys.executable, "-m", "ofa_deploy", "report", str(tmp_path / "a"), "--out", str(out)],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr


def test_export_fault_leaves_the_previous_export(tmp_path):
    from conftest import make_fake_run

    fake = make_fake_run(tmp_path / "run")
    fast = ["--bn-images", "64", "--no-accuracy", "--parity-images", "16", "--calibration-images", "8"]
    out = tmp_path / "exp"
    first = subprocess.run([sys.executable, "-m", "ofa_deploy", "export", str(fake), "--smallest", "--out",
                            str(out), *fast], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert first.returncode == 0, first.stderr
    before = _tree(out)
    done = _faulty("ENOSPC", "write", "model.json", 0, "export", str(fake), "--smallest", "--out", str(out),
                   "--overwrite", *fast)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "model.json: No space left on device" in done.stderr
    assert _tree(out) == before and not _leftovers(tmp_path)


# -- a real full disk (root only) ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of ``size`` MiB mounted at tmp_path/disk; ``resize(mib)`` frees space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where = tmp_path / "disk"
    where.mkdir()

    class Disk:
        path = where

        def mount(self, mib: int) -> None:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

        def resize(self, mib: int) -> None:
            subprocess.run(["mount", "-o", f"remount,size={mib}m", str(where)], check=True)

    disk = Disk()
    yield disk
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_training_on_a_disk_that_fills_up(small_disk, reference):
    """A 120 MiB disk holds one 78 MB checkpoint, not a second beside it: the run stops at its
    second checkpoint with the first intact; given room, the same command finishes it,
    bit-identical."""
    small_disk.mount(120)
    out = small_disk.path / "run"
    done = _train(*ARGS, "--out", str(out))
    _one_line(done, out / run.LAST, "ENOSPC")
    assert weights.load_checkpoint(out / run.LAST)["epoch"] == 1 and not _leftovers(small_disk.path)
    small_disk.resize(400)
    done = _train(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    _assert_same_run(out, reference)


def test_catalog_import_on_a_full_disk_rolls_back(small_disk, tmp_path):
    from test_catalog import SPACE, fake_result

    from ofa_deploy.catalog import Catalog

    small_disk.mount(1)
    db = small_disk.path / "c.db"
    with Catalog(db) as cat:
        cat.set_space(SPACE.to_dict())
    results = tmp_path / "results.json"
    subnets = [str(SPACE.sample(__import__("random").Random(i))) for i in range(300)]
    results.write_text(json.dumps([fake_result(1.0 + i, subnet=s) for i, s in enumerate(subnets)]))
    filler = small_disk.path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # the rest of the disk
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    done = subprocess.run([sys.executable, "-m", "ofa_deploy", "catalog", "import", str(results), "--catalog",
                           str(db)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"could not write catalog {db}: No space left on device" in done.stderr, done.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    # SQLite's own -wal/-shm may stay beside the catalog when the disk is too full to remove
    # them through a checkpoint; they hold no change (an empty -wal) and the next writer uses them
    wal = small_disk.path / "c.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert {p.name for p in small_disk.path.iterdir()} <= {"c.db", "c.db-wal", "c.db-shm", "filler"}
    filler.unlink()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    ok = subprocess.run([sys.executable, "-m", "ofa_deploy", "catalog", "import", str(results), "--catalog",
                         str(db), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["added"] == len(set(subnets))
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["c.db"]

