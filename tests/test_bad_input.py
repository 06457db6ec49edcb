"""The bad-input campaign (issue 12): hundreds of malformed or hostile inputs across every
command, each of which must end in a non-zero exit with exactly one clear line on stderr
naming the flag, file or key at fault - no traceback, no hang, and no file created or
changed outside what the command owns (the good artefacts keep their hashes).

The good artefacts (a run, an export, a profile result, a catalog) are built once per
session; cases run in-process through ``ofa_deploy.cli.main`` with click's stream
isolation (stdout and stderr apart) under a per-case alarm, a few through a subprocess.
The table lives in ``bad_input_cases.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_cases import GOOD_SPEC, Case, all_cases
from click.testing import CliRunner
from conftest import make_fake_run

from ofa_deploy.cli import main

CASE_SECONDS = 30  # far above any refusal; a case that runs this long is a hang
CASES = all_cases()


def _invoke(argv: list[str], seconds: int = CASE_SECONDS) -> tuple[int, str, str]:
    """``main(argv)`` with stdout/stderr captured apart, bounded by SIGALRM."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"ofa-deploy {' '.join(argv)[:200]} ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        with CliRunner().isolation() as (out, err, _):
            try:
                code = main(argv)
            finally:
                sys.stdout.flush()  # the isolated streams are buffered text wrappers over these bytes
                sys.stderr.flush()
            return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _snapshot(root: Path, hash_limit: int = 1 << 30) -> dict[str, object]:
    """Every file and folder under ``root``: a content hash for files up to ``hash_limit``
    bytes, (size, mtime, inode) above it, a marker for folders and links."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            found[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            st = os.lstat(path)
            if os.path.islink(path):
                found[os.path.relpath(path, root)] = "link"
            elif st.st_size > hash_limit:
                found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, st.st_ino)
            else:
                with open(path, "rb") as fh:
                    found[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def _good_unchanged(good: dict) -> bool:
    """Per case: hashes of the small good files, size/mtime/inode of the large ONNX file (its
    full hash is compared at the end, in ``test_good_artefacts_still_work``)."""
    return _snapshot(good["root"], hash_limit=1 << 20) == good["quick"]


@pytest.fixture(scope="session")
def good(tmp_path_factory) -> dict:
    """A run (random weights, real config), an export of its smallest subnet, a profile
    result of that export and a catalog holding it - made once, never to be changed."""
    root = tmp_path_factory.mktemp("good")
    run = make_fake_run(root / "run")
    (run / "summary.json").write_text(json.dumps({"completed": True, "train_wall_time_s": 1.0, "epochs": 1,
                                                  "method": "rss", "dataset": "digits", "final_train_loss": 2.3,
                                                  "final_train_acc": 0.1, "images_per_s": 10.0}))
    exp, prof, cat = root / "exp", root / "prof.json", root / "cat.db"
    steps = [
        ["export", str(run), "--smallest", "--out", str(exp), "--bn-images", "16", "--calibration-images", "4",
         "--parity-images", "4", "--no-accuracy"],
        ["profile", str(exp), "--warmup-s", "0", "--min-iterations", "5", "--min-time-s", "0", "--max-retries", "0",
         "--out", str(prof)],
        ["catalog", "import", str(prof), "--catalog", str(cat)],
    ]
    for argv in steps:
        code, out, err = _invoke(argv, 300)
        assert code == 0, (argv, err)
    paths = {"root": root, "run": run, "exp": exp, "prof": prof, "cat": cat}
    paths["hashes"] = _snapshot(root)
    paths["quick"] = _snapshot(root, hash_limit=1 << 20)
    return paths


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    """Each case's own folder for the hostile files it sets up (``{bad}``) and the working
    directory commands run in, so a default output path would show up there."""
    return tmp_path_factory.mktemp("bad")


def _fill(arg: str, good: dict, bad: Path) -> str:
    for key in ("run", "exp", "prof", "cat"):
        arg = arg.replace("{" + key + "}", str(good[key]))
    return arg.replace("{bad}", str(bad))


def check_refused(case: Case, good: dict, bad: Path, code: int, out: str, err: str) -> None:
    assert code != 0, f"accepted: exit 0\nstdout: {out[-500:]}\nstderr: {err[-500:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err[-2000:]}"
    line = lines[0]
    assert line.startswith("ofa-deploy: "), line
    assert len(line) < 600, f"an error line of {len(line)} characters: {line[:300]}"
    wanted = [_fill(n, good, bad).lower() for n in case.names]
    assert any(n in line.lower() for n in wanted), f"the error line names none of {case.names}: {line}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, good: dict, scratch: Path, monkeypatch) -> None:
    bad = scratch / case.id.replace("/", "_")[:120]
    bad.mkdir()
    if case.setup is not None:
        case.setup(bad, good)
    cwd = bad / "cwd"
    cwd.mkdir(exist_ok=True)  # a setup may have put the user's files there
    before = _snapshot(bad)
    monkeypatch.chdir(cwd)
    argv = [_fill(a, good, bad) for a in case.argv]
    code, out, err = _invoke(argv)
    check_refused(case, good, bad, code, out, err)
    after = _snapshot(bad)
    assert after == before, f"files created or changed: {sorted(set(after.items()) ^ set(before.items()))[:10]}"
    assert _good_unchanged(good), "a good artefact was changed"


def test_campaign_size():
    assert len(CASES) >= 300
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


SUBPROCESS_CASES = [
    # (id, argv, names): the hangs and recursion of the issue, end to end in a fresh interpreter
    ("profile-min-time-inf", ["profile", "{exp}", "--min-time-s", "inf"], ("--min-time-s",)),
    ("profile-warmup-inf", ["profile", "{exp}", "--warmup-s", "inf"], ("--warmup-s",)),
    ("profile-threads-huge", ["profile", "{exp}", "--threads", "100000"], ("--threads",)),
    ("subnet-deep-json", ["subnet", "show", "{" * 100_000], ("subnet json",)),
    ("subnet-long-spec", ["subnet", "show", "x" * 300], ("malformed",)),
    ("train-lr-nan", ["train", "--lr", "nan", "--out", "{bad}/r"], ("--lr",)),
]


@pytest.mark.parametrize("cid, argv, names", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_input_in_a_fresh_process(cid, argv, names, good: dict, scratch: Path) -> None:
    bad = scratch / f"proc-{cid}"
    bad.mkdir()
    argv = [_fill(a, good, bad) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "ofa_deploy", *argv], capture_output=True, text=True,
                          timeout=120, cwd=bad)
    check_refused(Case(cid, argv, names), good, bad, proc.returncode, proc.stdout, proc.stderr)
    assert sorted(p.name for p in bad.iterdir()) == [], "the refused command left files behind"


# Unreadable files and read-only folders. Root reads and writes anything, so these run with
# the two capabilities that let it ignore permission bits dropped (setpriv).
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
PERMISSION_CASES = [  # (id, argv, names)
    ("spec-file", ["subnet", "show", "{bad}/locked/s.json"], ("s.json",)),
    ("results-file", ["catalog", "import", "{bad}/locked/r.json", "--catalog", "{bad}/new.db"], ("r.json",)),
    ("target-toml", ["targets", "{bad}/locked/t.toml"], ("t.toml",)),
    ("run-config", ["eval", "{bad}/locked-run", "--quiet"], ("config.toml",)),
    ("catalog-file", ["catalog", "list", "--catalog", "{bad}/locked/c.db", "--target", "cpu"], ("c.db",)),
    ("profile-out-ro-dir", ["profile", "{exp}", "--out", "{bad}/ro/r.json", "--warmup-s", "0", "--min-iterations",
                            "2", "--min-time-s", "0"], ("ro",)),
    ("import-into-ro-dir", ["catalog", "import", "{prof}", "--catalog", "{bad}/ro/c.db"], ("ro",)),
    ("report-out-ro-dir", ["report", "{run}", "--out", "{bad}/ro/rep", "--allow-missing-eval"], ("ro",)),
]


def _permission_setup(bad: Path, good: dict) -> None:
    import shutil

    locked = bad / "locked"
    locked.mkdir()
    (locked / "s.json").write_text(json.dumps({"subnet": {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}}))
    shutil.copy(good["prof"], locked / "r.json")
    (locked / "t.toml").write_text('backend = "onnxruntime"\nprecision = "fp32"\n')
    shutil.copy(good["cat"], locked / "c.db")
    for f in locked.iterdir():
        f.chmod(0)
    shutil.copytree(good["run"], bad / "locked-run")
    (bad / "locked-run" / "config.toml").chmod(0)
    (bad / "ro").mkdir()
    (bad / "ro").chmod(0o555)


def _can_drop_dac() -> bool:
    if os.geteuid() != 0:
        return True  # an ordinary user meets permission bits anyway
    try:
        return subprocess.run([*NO_DAC, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def locked(good: dict, scratch: Path) -> Path:
    if not _can_drop_dac():
        pytest.skip("running as root without setpriv: permission bits cannot be made to apply")
    bad = scratch / "permissions"
    bad.mkdir()
    _permission_setup(bad, good)
    return bad


@pytest.mark.parametrize("cid, argv, names", PERMISSION_CASES, ids=[c[0] for c in PERMISSION_CASES])
def test_unreadable_files_and_read_only_folders(cid, argv, names, good: dict, locked: Path) -> None:
    before = _snapshot(locked)
    prefix = NO_DAC if os.geteuid() == 0 else []
    argv = [_fill(a, good, locked) for a in argv]
    proc = subprocess.run([*prefix, sys.executable, "-m", "ofa_deploy", *argv], capture_output=True, text=True,
                          timeout=120, cwd=locked / "ro")
    check_refused(Case(cid, argv, names), good, locked, proc.returncode, proc.stdout, proc.stderr)
    assert _snapshot(locked) == before
    assert _good_unchanged(good)


def test_a_read_only_catalog_can_be_listed(good: dict, locked: Path) -> None:
    """Reading needs no write access: a catalog in a read-only folder lists (issue 12)."""
    import shutil

    ro = locked / "ro-cat"
    ro.mkdir()
    shutil.copy(good["cat"], ro / "c.db")
    (ro / "c.db").chmod(0o444)
    ro.chmod(0o555)
    before = _snapshot(ro)
    prefix = NO_DAC if os.geteuid() == 0 else []
    proc = subprocess.run([*prefix, sys.executable, "-m", "ofa_deploy", "catalog", "list", "--catalog",
                           str(ro / "c.db"), "--target", "cpu", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["text"] == GOOD_SPEC
    assert _snapshot(ro) == before


def test_a_diverging_run_stops_with_one_line(scratch: Path, monkeypatch) -> None:
    """A loss that stops being finite (an lr in range that still diverges) ends the run with
    one line; no summary.json with a NaN loss is written (issue 12: `--lr nan` "completed")."""
    from ofa_deploy.train import trainer

    def diverged(self, epoch, phase, in_phase, bar):
        return {"loss": float("nan")}

    monkeypatch.setattr(trainer._Trainer, "_train_epoch", diverged)
    out = scratch / "diverged"
    code, _, err = _invoke(["train", "--epochs", "1", "--train-subset", "64", "--batch-size", "32", "--lr", "10",
                            "--out", str(out), "--quiet"], 120)
    check_refused(Case("diverged", [], ("diverged",)), {"run": "", "exp": "", "prof": "", "cat": ""}, out, code, "",
                  err)
    assert not (out / "summary.json").exists() and not (out / "final.pt").exists()


def test_good_artefacts_still_work(good: dict) -> None:
    """The artefacts the campaign ran against are still good: the control for every case."""
    code, out, err = _invoke(["catalog", "list", "--catalog", str(good["cat"]), "--target", "cpu", "--json"])
    assert code == 0 and json.loads(out)[0]["text"] == GOOD_SPEC, err
    code, out, err = _invoke(["subnet", "show", str(good["exp"] / "model.json"), "--json"])
    assert code == 0 and json.loads(out)["text"] == GOOD_SPEC, err
    assert _snapshot(good["root"]) == good["hashes"]
