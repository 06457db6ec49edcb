"""``ofa-deploy search`` over torchrun ranks and resumed after an interruption (issue 33,
item 3): two gloo ranks pick exactly what one process picks for the same seed, a search
stopped by ``SIGTERM`` in the middle, or whose rank 1 is killed, continues from its journal
and ends with the history of an uninterrupted one, and the journal is recognisably ours (a foreign directory at its
path, a damaged journal and a second concurrent search are refused in one line).

Small on purpose: a random-weight digits run, 20 evaluations on 100 test images; each
command takes a few seconds on two cores (torchrun about 10 s)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, make_fake_run, run_cli

from ofa_deploy.search.journal import Journal, journal_path
from ofa_deploy.search.scale import shard

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--target", "cpu", "--evaluations", "20", "--max-mflops", "8", "--max-mflops", "11", "--calib-images", "64",
        "--test-images", "100", "--generations", "3", "--seed", "3"]
HOW = {"execution", "seconds", "command"}  # how it ran, not what it found


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("scale") / "run")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _search(run_dir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ofa_deploy", "search", str(run_dir), *ARGS, "--out", str(out)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _found(out: Path) -> dict:
    history = json.loads((out / "history.json").read_text())
    return {k: v for k, v in history.items() if k not in HOW}


@pytest.fixture(scope="module")
def uninterrupted(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "search"
    proc = _search(run_dir, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not journal_path(out).exists()  # the journal goes once the output is in place
    return out


def test_shards_are_balanced_by_cost_and_the_same_on_every_rank():
    costs = [9.0, 1.0, 5.0, 4.0, 3.0, 3.0]
    parts = shard(costs, 2)
    assert sorted(i for p in parts for i in p) == list(range(6))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 2 and parts == shard(costs, 2)
    assert shard(costs, 1) == [list(range(6))] and shard([], 2) == [[], []]


def test_two_torchrun_ranks_pick_what_one_process_picks(run_dir: Path, uninterrupted: Path, tmp_path: Path):
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "two"
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "ofa_deploy", "search",
                           str(run_dir), *ARGS, "--out", str(out)], env=_env(), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("subnets evaluated") == 1  # rank 0 reports, rank 1 prints nothing
    assert _found(out) == _found(uninterrupted)
    execution = json.loads((out / "history.json").read_text())["execution"]
    assert execution["ranks"] == 2 and 0 < execution["evaluated_on_rank0"] < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # no journal, nothing else beside it


def test_a_search_stopped_by_sigterm_continues_from_its_journal(run_dir: Path, uninterrupted: Path, tmp_path: Path):
    out = tmp_path / "search"
    lines = journal_path(out) / "evaluations.jsonl"
    proc = _search(run_dir, out)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if lines.is_file() and len(lines.read_text().splitlines()) >= 12:  # the design round and more
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "run the same search command again" in err and "Traceback" not in err
    assert not out.exists() and 12 <= len(lines.read_text().splitlines()) < 20
    # a kill in the middle of a write leaves a torn last line: it is ignored
    with open(lines, "a") as f:
        f.write('{"subnet": "33-3')
    proc = _search(run_dir, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _found(out) == _found(uninterrupted)
    assert json.loads((out / "history.json").read_text())["execution"]["from_journal"] >= 12
    assert not journal_path(out).exists()


def test_ctrl_c_says_where_the_evaluations_are_kept(run_dir: Path, tmp_path: Path):
    out = tmp_path / "search"
    lines = journal_path(out) / "evaluations.jsonl"
    proc = _search(run_dir, out)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if lines.is_file() and len(lines.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    said = [line for line in err.splitlines() if line.strip()]
    assert len(said) == 1, err
    assert said[0].startswith("ofa-deploy: interrupted; the evaluations so far are journaled in "), err
    assert "run the same search command again" in said[0] and not out.exists() and lines.is_file()


def _rank_pids(out: Path, rank: int) -> list[int]:
    """Processes of a torchrun search writing ``out`` whose environment says RANK=``rank``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if str(out).encode() not in cmdline or b"search" not in cmdline:
                continue
            if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _torchrun_search_until(run_dir: Path, out: Path, evaluated: int) -> tuple[subprocess.Popen, Path]:
    """A 2-rank torchrun search writing ``out``, once its journal holds ``evaluated`` lines:
    (the torchrun process, the journal's lines file)."""
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    lines = journal_path(out) / "evaluations.jsonl"
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "ofa_deploy", "search",
                             str(run_dir), *ARGS, "--out", str(out)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if lines.is_file() and len(lines.read_text().splitlines()) >= evaluated:
            break
        time.sleep(0.02)
    return proc, lines


def _signal_rank(proc: subprocess.Popen, out: Path, rank: int, signum: int) -> str:
    """Send ``signum`` to the one process of ``rank`` in the search writing ``out``; wait for
    torchrun to end (non-zero) and return its stderr."""
    pids = _rank_pids(out, rank)
    assert len(pids) == 1
    os.kill(pids[0], signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    return err


def test_a_killed_rank_stops_the_group_in_one_line_and_the_search_resumes(run_dir: Path, uninterrupted: Path,
                                                                          tmp_path: Path):
    out = tmp_path / "search"
    proc, lines = _torchrun_search_until(run_dir, out, 12)
    err = _signal_rank(proc, out, 1, signal.SIGKILL)
    # rank 0 says it in one line: from the collective that lost its peer, or - when torchrun's
    # agent, which stops the other workers with SIGTERM once one dies, gets there first (a
    # race, seen under load) - from that SIGTERM
    said = [line for line in err.splitlines()
            if line.startswith(("ofa-deploy: error: rank 0: ", "ofa-deploy: terminated by SIGTERM"))]
    assert len(said) == 1, err
    assert ("another worker has stopped" in said[0] and "continues from its journal" in said[0]) or \
        ("another worker failed" in said[0] and "run the same search command again" in said[0]), said[0]
    assert not out.exists() and lines.is_file()
    rerun = _search(run_dir, out)  # one process now: the journal does not care how many measured
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert _found(out) == _found(uninterrupted)


def test_sigterm_to_rank0_under_torchrun_says_a_worker_may_have_failed(run_dir: Path, tmp_path: Path):
    """What rank 0 says when torchrun's agent stops it (the other side of the race above)."""
    out = tmp_path / "search"
    proc, lines = _torchrun_search_until(run_dir, out, 6)
    err = _signal_rank(proc, out, 0, signal.SIGTERM)
    said = [line for line in err.splitlines() if line.startswith("ofa-deploy: terminated by SIGTERM")]
    assert len(said) == 1, err
    assert "another worker failed" in said[0] and "run the same search command again" in said[0]
    # rank 1 says which it is, whether torchrun's SIGTERM or rank 0's exit reached it first
    # (torchrun's agent prints its own ChildFailedError traceback for the failed worker)
    others = [line for line in err.splitlines() if line.startswith("ofa-deploy: ") and line not in said]
    assert all(line.startswith(("ofa-deploy: rank 1: ", "ofa-deploy: error: rank 1: ")) for line in others), err
    assert "terminate called" not in err and "SIGABRT" not in err
    assert not out.exists() and lines.is_file()


def test_sigterm_to_torchrun_stops_every_rank_in_one_line_each(run_dir: Path, tmp_path: Path):
    """A scheduler stops the job: torchrun passes SIGTERM to every worker. Each says one line
    (rank 0 where the evaluations are kept), none hangs or aborts in its teardown."""
    out = tmp_path / "search"
    proc, lines = _torchrun_search_until(run_dir, out, 6)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    said = [line for line in err.splitlines() if line.startswith("ofa-deploy: ")]
    assert len(said) == 2, err
    assert any(line.startswith("ofa-deploy: terminated by SIGTERM") and "run the same search command again" in line
               for line in said), err
    assert any(line.startswith("ofa-deploy: rank 1: terminated by SIGTERM") for line in said), err
    assert "terminate called" not in err and "SIGABRT" not in err
    assert not out.exists() and lines.is_file()


def test_the_journal_is_recognisably_ours(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "search"
    path = journal_path(out)
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "search", run_dir, *ARGS, "--out", out)
    assert_one_line_error(code, err, "not a search journal", str(path))
    assert (path / "notes.txt").read_text() == "mine" and not out.exists()
    shutil.rmtree(path)
    # another identity (another run, split or calibration): its accuracies are discarded
    with Journal(out, {"checkpoint_sha256": "other"}) as journal:
        journal.record("33-33_33-33_33-33_33-33_33-33", 0.99)
    with Journal(out, {"checkpoint_sha256": "this"}) as journal:
        assert journal.done == {} and journal.discarded
        journal.record("33-33_33-33_33-33_33-33_33-33", 0.5)
        # a second search writing the same --out is refused while the first holds the journal
        with pytest.raises(Exception, match="another search is writing the same --out"):
            Journal(out, {"checkpoint_sha256": "this"}).__enter__()
    with Journal(out, {"checkpoint_sha256": "this"}) as journal:
        assert journal.done == {"33-33_33-33_33-33_33-33_33-33": 0.5}
    (path / "evaluations.jsonl").write_text('garbage\n{"subnet": "x", "accuracy": 0.1}\n')
    with pytest.raises(Exception, match="damaged at line 1"):
        Journal(out, {"checkpoint_sha256": "this"}).__enter__()
