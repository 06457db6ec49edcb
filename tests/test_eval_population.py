"""Population evaluation: seeded bucket sampling, recalibrated measurement, eval CLI files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from eval_fixtures import trained_run

from ofa_deploy.cost import macs
from ofa_deploy.errors import OfaError
from ofa_deploy.evaluate import evaluate_accuracy, recalibrated_subnet
from ofa_deploy.evaluate.population import bucket_statistics, evaluate_subnet, sample_population
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1)


def test_population_is_inside_buckets_distinct_and_seeded():
    pop = sample_population(SPACE, (4, 8, 14), per_bucket=6, tolerance=0.5, seed=3)
    assert [b for b, _ in pop] == [4.0] * 6 + [8.0] * 6 + [14.0] * 6
    for bucket, subnet in pop:
        assert abs(macs(SPACE, subnet) / 1e6 - bucket) <= 0.5
    for bucket in (4.0, 8.0, 14.0):
        assert len({s for b, s in pop if b == bucket}) == 6
    assert pop == sample_population(SPACE, (4, 8, 14), per_bucket=6, tolerance=0.5, seed=3)
    assert pop != sample_population(SPACE, (4, 8, 14), per_bucket=6, tolerance=0.5, seed=4)
    # a bucket's subnets do not depend on which other buckets are evaluated
    assert [s for b, s in pop if b == 8.0] == [s for _, s in sample_population(SPACE, (8,), 6, 0.5, 3)]


def test_same_seed_same_subnets_in_another_process():
    code = (
        "import json; from ofa_deploy.space import SearchSpace; "
        "from ofa_deploy.evaluate.population import sample_population; "
        "print(json.dumps([str(s) for _, s in sample_population(SearchSpace(in_channels=1), (6, 12), 4, 0.5, 11)]))"
    )
    other = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    assert other == [str(s) for _, s in sample_population(SPACE, (6, 12), 4, 0.5, 11)]


def test_sampling_errors():
    with pytest.raises(OfaError, match="no subnet has 40"):
        sample_population(SPACE, (40,), 1)
    with pytest.raises(OfaError, match="at least 1"):
        sample_population(SPACE, (8,), 0)
    tiny = SearchSpace(in_channels=1, kernel_choices=(3,), expand_choices=(3,), depth_choices=(2,))
    only = macs(tiny, tiny.smallest()) / 1e6
    assert len(sample_population(tiny, (only,), 1)) == 1
    with pytest.raises(OfaError, match="only 1 distinct"):
        sample_population(tiny, (only,), 2)


def test_bucket_statistics_oracle():
    results = [{"bucket": 4.0, "accuracy": a} for a in (0.5, 0.7, 0.9)] + [{"bucket": 6.0, "accuracy": 0.25}]
    stats = bucket_statistics(results, (4, 6, 8))
    acc = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64)
    assert stats[0]["n"] == 3 and stats[0]["min"] == 0.5 and stats[0]["max"] == 0.9
    assert stats[0]["mean"] == pytest.approx(acc.mean().item())
    assert stats[0]["std"] == pytest.approx(acc.std(unbiased=False).item())
    assert stats[1] == {"mflops": 6.0, "n": 1, "mean": 0.25, "std": 0.0, "min": 0.25, "max": 0.25}
    assert stats[2]["n"] == 0 and stats[2]["mean"] is None


def test_evaluate_subnet_matches_independent_path_and_leaves_supernet_alone():
    torch.manual_seed(0)
    net = Supernet(SPACE).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calib, images, labels = torch.randn(96, 1, 32, 32), torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,))
    subnet = SPACE.sample(5)
    got = evaluate_subnet(net, subnet, calib_images=calib, test_images=images, test_labels=labels, calib_n=96)
    oracle = recalibrated_subnet(net, subnet, calib, n=96)
    acc, loss = evaluate_accuracy(oracle, images, labels)
    assert got["accuracy"] == pytest.approx(acc) and got["loss"] == pytest.approx(loss, rel=1e-4)
    assert got["macs"] == macs(SPACE, subnet) and got["text"] == str(subnet)
    raw = evaluate_subnet(net, subnet, calib_images=calib, test_images=images, test_labels=labels,
                          recalibrate=False)
    acc_raw, loss_raw = evaluate_accuracy(net.extract(subnet), images, labels)
    assert raw["loss"] == pytest.approx(loss_raw, rel=1e-4) and raw["loss"] != pytest.approx(got["loss"], rel=1e-4)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_recalibration_not_worse_on_a_trained_run(tmp_path_factory):
    from ofa_deploy.data import load_dataset
    from ofa_deploy.weights import load_supernet

    net, _ = load_supernet(trained_run(tmp_path_factory))
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    pop = sample_population(net.space, (5, 11), per_bucket=2, seed=1)
    common = dict(calib_images=train.images, test_images=test.images, test_labels=test.labels, calib_n=200)
    recal = [evaluate_subnet(net, s, **common)["accuracy"] for _, s in pop]
    shared = [evaluate_subnet(net, s, recalibrate=False, **common)["accuracy"] for _, s in pop]
    assert sum(recal) / len(recal) >= sum(shared) / len(shared)
    assert sum(recal) / len(recal) > 0.13  # above chance (0.1): the run learned something


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "ofa_deploy", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_eval_cli_json_csv_buckets_and_seed(tmp_path_factory):
    run_dir = trained_run(tmp_path_factory)
    args = ("eval", str(run_dir), "--buckets", "4,9,14", "--per-bucket", "2", "--calib-n", "200",
            "--test-subset", "150", "--seed", "7", "--quiet", "--json")
    first = json.loads(_cli(*args).stdout)
    assert first["params"]["seed"] == 7 and first["test_images"] == 150 and first["subnets_per_minute"] > 0
    assert [b["mflops"] for b in first["buckets"]] == [4.0, 9.0, 14.0]
    for s in first["subnets"]:
        assert abs(s["macs"] / 1e6 - s["bucket"]) <= 0.5
        assert s["macs"] == macs(SearchSpace(in_channels=1), SearchSpace(in_channels=1).subnet(**s["subnet"]))
    for b in first["buckets"]:
        accs = [s["accuracy"] for s in first["subnets"] if s["bucket"] == b["mflops"]]
        assert b["n"] == 2 and b["min"] == min(accs) and b["max"] == max(accs)
    stored = json.loads((run_dir / "eval" / "test-s7-n2-b4_9_14-c200-t150.json").read_text())
    assert stored["subnets"] == first["subnets"]
    with open(run_dir / "eval" / "test-s7-n2-b4_9_14-c200-t150.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == [s["text"] for s in first["subnets"]]
    for r, s in zip(rows, first["subnets"]):
        assert int(r["macs"]) == s["macs"] and float(r["accuracy"]) == s["accuracy"]
        assert float(r["loss"]) == s["loss"] and float(r["bucket"]) == s["bucket"]
    second = json.loads(_cli(*args).stdout)  # another process, same seed
    assert [s["text"] for s in second["subnets"]] == [s["text"] for s in first["subnets"]]
    assert [s["accuracy"] for s in second["subnets"]] == [s["accuracy"] for s in first["subnets"]]


def test_eval_cli_single_subnet_and_errors(tmp_path_factory, tmp_path):
    run_dir = trained_run(tmp_path_factory)
    one = json.loads(_cli("eval", str(run_dir), "--subnet", "middle", "--calib-n", "100", "--quiet",
                          "--json").stdout)
    assert len(one["subnets"]) == 1 and one["subnets"][0]["text"] == str(SearchSpace(in_channels=1).middle())
    for args, message in [
        (("eval", str(run_dir), "--buckets", "40"), "no subnet has 40"),
        (("eval", str(tmp_path / "nope")), "does not exist"),
        (("eval", str(run_dir), "--subnet", "99"), "stages"),
        (("eval", str(run_dir), "--split", "val"), "no validation images"),
        (("eval", str(run_dir), "--buckets", "a,b"), "comma-separated"),
    ]:
        proc = _cli(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.toml").write_text((run_dir / "config.toml").read_text())
    (tmp_path / "broken" / "final.pt").write_bytes(b"not a checkpoint")
    proc = _cli("eval", str(tmp_path / "broken"), check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr
    assert not (tmp_path / "broken" / "eval").exists()
