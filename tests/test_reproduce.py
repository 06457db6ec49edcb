"""reproduce: Table 1 epochs x scale, and an interrupted reproduction that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import one_torch_thread

from ofa_deploy.errors import OfaError
from ofa_deploy.reproduce import ReproduceOptions, plan, reproduce, scaled_epochs

EVAL_FILE = "test-s0-n1-b8-c32-t40.json"  # the default eval name: buckets, calib-n and test subset in it
TINY = ReproduceOptions(dataset="digits", scale=0.2, train_subset=64, test_subset=40, per_bucket=1,
                        buckets=(8.0,), calib_n=32)


def test_table1_epochs_and_plan():
    assert scaled_epochs("fmnist", 1.0) == {"ps": [25, 17, 3, 17, 3, 17], "rss": 82, "rss-short": 25}
    assert scaled_epochs("fmnist", 0.1) == {"ps": [2, 2, 1, 2, 1, 2], "rss": 10, "rss-short": 2}
    assert scaled_epochs("cifar10", 1.0)["rss"] == 590 and scaled_epochs("mnist", 1.0)["rss-short"] == 10
    with pytest.raises(OfaError, match="positive"):
        scaled_epochs("fmnist", 0)
    with pytest.raises(OfaError, match="no Table 1"):
        scaled_epochs("imagenet", 1)
    runs = plan("fmnist", 1.0, ablations=True)
    assert [r.key for r in runs[:3]] == ["ps", "rss", "rss-short"] and len(runs) == 11
    assert len({r.key for r in runs}) == 11
    assert {r.train["method"] for r in runs if r.figure == "fig7"} == {"max-then-min", "min-then-max", "alternating"}
    assert all(r.train["epochs"] == 82 for r in runs if r.figure.startswith("fig"))


def _cli_args(out):
    return [sys.executable, "-m", "ofa_deploy", "reproduce", "--dataset", "digits", "--scale", "0.2",
            "--train-subset", "64", "--test-subset", "40", "--per-bucket", "1", "--buckets", "8",
            "--calib-n", "32", "--device", "cpu", "--quiet", "--out", str(out)]


@pytest.fixture
def one_thread():
    """Bit-identity holds for one thread count: the killed subprocess and this process use 1
    (other tests may have left torch at another count)."""
    with one_torch_thread():
        yield {**os.environ, "OMP_NUM_THREADS": "1"}


def test_interrupted_reproduce_resumes(tmp_path, one_thread):
    out = tmp_path / "repro"
    proc = subprocess.Popen(_cli_args(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=one_thread)
    rss_last = out / "runs" / "rss" / "last.pt"
    deadline = time.monotonic() + 600
    while not rss_last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the reproduction ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup runs
    proc.wait()
    ps_final, ps_eval = out / "runs" / "ps" / "final.pt", out / "runs" / "ps" / "eval" / EVAL_FILE
    stamps = {p: p.stat().st_mtime_ns for p in (ps_final, ps_eval)}
    assert not (out / "runs" / "rss" / "final.pt").exists()

    with pytest.raises(OfaError, match="other options"):
        reproduce(ReproduceOptions(**{**TINY.__dict__, "per_bucket": 2}), out, device="cpu", progress=False)
    verdict = reproduce(TINY, out, device="cpu", progress=False)

    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished run and its eval reused
    metrics = (out / "runs" / "rss" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2, 3, 4, 5, 6]
    # the resumed RSS run ends with exactly the weights of an uninterrupted one
    from ofa_deploy.train import TrainConfig, train

    fresh = train(TrainConfig(dataset="digits", method="rss", epochs=6, train_subset=64, test_subset=40,
                              device="cpu", out=str(tmp_path / "fresh"), name="rss", quiet=True), progress=False)
    resumed_sd = torch.load(out / "runs" / "rss" / "final.pt", weights_only=False)["model"]
    fresh_sd = torch.load(fresh / "final.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed_sd[k], fresh_sd[k]) for k in fresh_sd)

    assert verdict["n_buckets"] == 1 and set(verdict["time_ratio_vs_ps"]) == {"rss", "rss-short"}
    assert json.loads((out / "verdict.json").read_text())["buckets"] == verdict["buckets"]
    manifest = json.loads((out / "reproduce.json").read_text())
    assert manifest["finished"] and manifest["wall_time_s"] > 0 and manifest["commands"][0]["argv"][1] == "reproduce"
    md = (out / "report" / "report.md").read_text()
    assert "## Verdict" in md and "1.9x" in md and "6.1x" in md and "RSS-short, 1 ep" in md
    assert (out / "report" / "accuracy.png").is_file() and (out / "report" / "train_time.svg").is_file()
    # the same subnets were measured for every run
    texts = {k: [s["text"] for s in json.loads((out / "runs" / k / "eval" / EVAL_FILE).read_text())["subnets"]]
             for k in ("ps", "rss", "rss-short")}
    assert texts["ps"] == texts["rss"] == texts["rss-short"]


def test_reproduce_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("mine")
    with pytest.raises(OfaError, match="other.txt and no reproduce.json, not an ofa-deploy reproduction directory"):
        reproduce(TINY, tmp_path / "x", device="cpu", progress=False)


def test_seeds_train_every_method_per_seed_on_the_same_subnets(tmp_path, one_thread):
    out = tmp_path / "repro"
    options = ReproduceOptions(**{**TINY.__dict__, "seeds": (0, 1), "fidelity": "ofa"})
    verdict = reproduce(options, out, device="cpu", progress=False)

    keys = ("ps", "rss", "rss-short", "ps-s1", "rss-s1", "rss-short-s1")
    evals = {k: json.loads((out / "runs" / k / "eval" / EVAL_FILE).read_text()) for k in keys}
    assert len({tuple(s["text"] for s in e["subnets"]) for e in evals.values()}) == 1  # the same subnets
    assert {e["params"]["seed"] for e in evals.values()} == {0}  # drawn by the first seed, not the training seed
    from ofa_deploy import run
    assert [run.read_config(out / "runs" / k)["run"]["seed"] for k in keys] == [0, 0, 0, 1, 1, 1]

    # oracle: the seed-1 RSS-short run trained and evaluated directly, outside reproduce, by the
    # code path from before --seeds and --fidelity existed: --fidelity ofa changes no number
    from ofa_deploy.evaluate.runs import evaluate_run
    from ofa_deploy.train import TrainConfig, train

    fresh = train(TrainConfig(dataset="digits", method="rss", epochs=1, seed=1, train_subset=64, test_subset=40,
                              device="cpu", out=str(tmp_path / "fresh"), name="rss-short-s1", quiet=True),
                  progress=False)
    _, direct = evaluate_run(fresh, buckets=(8.0,), per_bucket=1, seed=0, calib_n=32, test_subset=40, device="cpu",
                             progress=False)
    assert [s["accuracy"] for s in direct["subnets"]] == [s["accuracy"] for s in evals["rss-short-s1"]["subnets"]]

    row = verdict["buckets"][0]
    assert verdict["seeds"] == [0, 1] and verdict["fidelity"] == "ofa" and len(verdict["per_seed"]) == 2
    assert row["seed_means"]["rss"] == [evals["rss"]["subnets"][0]["accuracy"],
                                        evals["rss-s1"]["subnets"][0]["accuracy"]]
    lo, hi = row["rss_minus_ps"]["interval"]
    assert lo <= row["rss_minus_ps"]["mean"] <= hi
    assert row["rss_minus_ps"]["verdict"] in ("holds", "fails", "inside the noise")
    md = (out / "verdict.md").read_text()
    assert "Fidelity preset **ofa**" in md and "seed 1" in md and "bootstrap interval" in md
    assert md.strip() in (out / "report" / "report.md").read_text()

    # a rerun reuses everything; the first seed (the evaluation seed) may not change
    stamps = {k: (out / "runs" / k / "eval" / EVAL_FILE).stat().st_mtime_ns for k in keys}
    assert reproduce(options, out, device="cpu", progress=False)["buckets"] == verdict["buckets"]
    assert {k: (out / "runs" / k / "eval" / EVAL_FILE).stat().st_mtime_ns for k in keys} == stamps
    with pytest.raises(OfaError, match="other options"):
        reproduce(ReproduceOptions(**{**TINY.__dict__, "seeds": (1, 0)}), out, device="cpu", progress=False)
    for bad in ((), (0, 0), (-1,)):
        with pytest.raises(OfaError, match="seeds"):
            ReproduceOptions(seeds=bad)
