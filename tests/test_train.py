"""Training runs end to end on tiny digits subsets: the run-directory contract, every
method, distillation, refusing to overwrite, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import one_torch_thread

from ofa_deploy import run, weights
from ofa_deploy.cli import main
from ofa_deploy.errors import OfaError
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace, Subnet
from ofa_deploy.train import TrainConfig, read_summary, train

SPACE = SearchSpace(in_channels=1, num_classes=10)
TINY = dict(dataset="digits", train_subset=16, batch_size=8, device="cpu", quiet=True)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batches gain nothing from a second thread, and on a shared 2-core machine the
    spinning OpenMP workers make each step several times slower."""
    with one_torch_thread():
        yield


def tiny(out: Path, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **kw})


def test_run_directory_contract(tmp_path):
    out = train(tiny(tmp_path / "rss", method="rss", epochs=2, val_size=40, seed=1))
    config = run.read_config(out)
    assert config["run"]["method"] == "rss" and config["run"]["seed"] == 1 and config["run"]["completed"] is True
    assert config["run"]["device"] == "cpu" and config["run"]["name"] == "rss"
    assert set(config["run"]["versions"]) == {"ofa_deploy", "torch", "python"} and "created" in config["run"]
    assert config["data"] == {"dataset": "digits", "train_subset": 16, "val_size": 40}
    assert config["space"] == SPACE.to_dict()
    train_table = config["train"]
    assert train_table["epochs"] == 2 and train_table["lr"] == 0.01 and train_table["batch_size"] == 8
    assert train_table["kd_ratio"] == 1.0 and train_table["lr_schedule"] == "cosine"
    assert train_table["momentum"] == 0.9 and train_table["nesterov"] and train_table["weight_decay"] == 3e-5

    lines = [json.loads(x) for x in (out / run.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert {"phase", "lr", "loss", "train_acc", "subnets", "epoch_time_s", "images_per_s", "val_acc"} <= set(m)
        assert len(m["subnets"]) == 1 and m["subnets"][0]["macs"] > 3_000_000
        Subnet.parse(m["subnets"][0]["subnet"], SPACE)
        assert 0 <= m["val_acc"] <= 1 and m["epoch_time_s"] > 0

    hist = json.loads((out / run.HISTOGRAM).read_text())
    assert hist["total"] == 4 and sum(hist["d"][0]) == 4 and sum(hist["mflops_counts"]) == 4
    assert set(hist) >= {"unit", "choices", "ks", "e", "d", "mflops_edges", "mflops_counts", "buckets", "total"}
    assert len(hist["ks"]) == 20 and len(hist["d"]) == 5

    summary = read_summary(out)
    assert summary["completed"] and summary["epochs"] == 2 and summary["method"] == "rss"
    assert summary["dataset"] == "digits" and summary["train_wall_time_s"] > 0
    assert summary["final_train_loss"] == lines[-1]["loss"] and summary["images_per_s"] > 0

    ckpt = weights.load_checkpoint(out / run.FINAL)
    net = Supernet(run.space_from_config(config))
    net.load_state_dict(ckpt["model"])
    assert {"optimizer", "rng", "histogram", "epoch", "wall_time_s", "schedule"} <= set(ckpt)
    assert (out / run.LAST).is_file()
    fresh = Supernet(SPACE).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in ckpt["model"].items())
    assert not list(out.glob(".*tmp"))


@pytest.mark.parametrize("kw,per_step", [
    (dict(method="rss", per_batch=2, balance="flops"), 2),
    (dict(method="sandwich", per_batch=1), 3),
    (dict(method="fixed", subnet="smallest"), 1),
    (dict(method="max-then-min", epochs=2), 1),
])
def test_methods_train(tmp_path, kw, per_step):
    out = train(tiny(tmp_path / "run", **{"epochs": 1, **kw}))
    lines = [json.loads(x) for x in (out / run.METRICS).read_text().splitlines()]
    hist = json.loads((out / run.HISTOGRAM).read_text())
    assert hist["total"] == per_step * 2 * len(lines)
    assert all(m["subnet_steps"] == per_step * 2 for m in lines)
    if kw["method"] == "fixed":
        assert {s["subnet"] for s in lines[0]["subnets"]} == {str(SPACE.smallest())}
    if kw["method"] == "max-then-min":
        assert [m["subnets"][0]["subnet"] for m in lines] == [str(SPACE.largest()), str(SPACE.smallest())]
        assert {m["lr"] for m in lines} == {0.01}  # the paper's constant lr for Fig. 7


def test_progressive_shrinking_distils_from_the_trained_largest(tmp_path):
    supernet_only = train(tiny(tmp_path / "b", method="ps", ps_epochs=[1, 0, 0, 0, 0, 0]))
    full = train(tiny(tmp_path / "ps", method="ps", ps_epochs=[1, 1, 0, 0, 0, 1]))
    lines = [json.loads(x) for x in (full / run.METRICS).read_text().splitlines()]
    assert [m["phase"] for m in lines] == ["largest", "kernel", "expand-2"]
    assert [m["subnet_steps"] for m in lines] == [2, 2, 8]
    teacher = weights.load_checkpoint(full / run.FINAL)["teacher"]
    net, _ = weights.load_supernet(supernet_only)
    expected = net.extract(SPACE.largest()).state_dict()
    assert teacher.keys() == expected.keys()
    assert all(torch.equal(teacher[k], expected[k]) for k in expected)
    assert lines[1]["loss"] > lines[0]["loss"] * 0.5  # cross-entropy plus the distillation term


def test_refuses_a_different_run_and_keeps_a_finished_one(tmp_path):
    out = train(tiny(tmp_path / "r", epochs=1))
    stamp = (out / run.FINAL).stat().st_mtime_ns
    assert train(tiny(tmp_path / "r", epochs=1)) == out
    assert (out / run.FINAL).stat().st_mtime_ns == stamp
    with pytest.raises(OfaError, match="different run"):
        train(tiny(tmp_path / "r", epochs=1, seed=5))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(OfaError, match="not an ofa-deploy training run directory"):
        train(tiny(tmp_path / "junk", epochs=1))


def test_bad_input_leaves_nothing(tmp_path):
    with pytest.raises(OfaError, match="fewer than one batch"):
        train(tiny(tmp_path / "a", train_subset=4))
    with pytest.raises(OfaError, match="divide evenly"):
        train(tiny(tmp_path / "b", batch_size=9, grad_accum=2))
    with pytest.raises(OfaError, match="CUDA"):
        train(tiny(tmp_path / "c", amp=True))
    assert not any(tmp_path.iterdir())


def test_cli_choices_match_the_library():
    from ofa_deploy.cli import cmd_train
    from ofa_deploy.data.datasets import DATASET_NAMES
    from ofa_deploy.train import METHODS

    assert cmd_train.METHODS == METHODS and cmd_train.DATASETS == DATASET_NAMES


def test_cli_json_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["train", "--dataset", "digits", "--method", "alternating", "--epochs", "1", "--train-subset", "16",
                 "--batch-size", "8", "--device", "cpu", "--out", str(out), "--quiet", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "alternating" and summary["epochs"] == 1 and summary["run_dir"] == str(out)
    capsys.readouterr()
    code = main(["train", "--resume", str(out), "--json", "--quiet"])
    assert code == 0 and json.loads(capsys.readouterr().out)["completed"]
    for args, message in [
        (["--method", "fixed"], "--subnet"),
        (["--method", "fixed", "--subnet", "99-99"], "subnet"),
        (["--dataset", "fmnist", "--data-dir", str(tmp_path)], "looked in"),
        (["--ps-epochs", "1,2"], "six"),
    ]:
        code = main(["train", "--out", str(tmp_path / "bad"), "--quiet", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    code = main(["train", "--resume", str(tmp_path / "nothing")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_cpu_threads_default_explicit_and_restored(tmp_path, monkeypatch):
    """One torch thread on a CPU by default, ``threads`` (``--threads``) or $OMP_NUM_THREADS
    when given; the caller's own count is back after ``train``; fused SGD recorded."""
    from ofa_deploy.train.threads import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads(None) == 1 and cpu_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(None) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    train(tiny(tmp_path / "default", method="rss", epochs=1))
    assert torch.get_num_threads() == 2
    ckpt = weights.load_checkpoint(tmp_path / "default" / run.FINAL)
    assert ckpt["threads"] == 1 and ckpt["sgd"] == "fused"
    torch.set_num_threads(1)
    cfg = tiny(tmp_path / "two", method="rss", epochs=1)
    cfg.threads = 2
    train(cfg)
    assert torch.get_num_threads() == 1
    assert weights.load_checkpoint(tmp_path / "two" / run.FINAL)["threads"] == 2


def test_cli_threads_option_is_checked(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--threads", "0", "--out", str(tmp_path / "r")])
    assert code == 2 and "--threads" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
