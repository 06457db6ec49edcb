"""analyze: interference (gradient cosines, loss changes) checked against finite differences;
sampling bias against hand-computed histograms."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ofa_deploy.analyze.bias import _spearman, choice_unevenness, sampling_bias
from ofa_deploy.analyze.interference import analyze_interference, gradients, shared_cosines
from ofa_deploy.errors import OfaError
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1)


@pytest.fixture(scope="module")
def net_and_batch():
    torch.manual_seed(0)
    net = Supernet(SPACE).double()  # float64 so that finite differences of the loss are exact enough
    return net, torch.randn(24, 1, 32, 32, dtype=torch.float64), torch.randint(0, 10, (24,))


def test_cosine_matches_flattened_oracle(net_and_batch):
    net, x, y = net_and_batch
    net.train()
    a, b = SPACE.smallest(), SPACE.sample(1)
    ga, gb = gradients(net, a, x, y), gradients(net, b, x, y)
    got = shared_cosines(ga, gb)
    names = [n for n in ga if n in gb]
    mask = [(ga[n] != 0) & (gb[n] != 0) for n in names]
    va = torch.cat([ga[n][m] for n, m in zip(names, mask)]).double()
    vb = torch.cat([gb[n][m] for n, m in zip(names, mask)]).double()
    assert got["cosine"] == pytest.approx(torch.nn.functional.cosine_similarity(va, vb, dim=0).item(), abs=1e-9)
    assert 0 < got["shared_fraction"] < 1  # the smallest subnet reaches only part of the other's weights
    assert "stem" in got["per_layer"] and "head" in got["per_layer"]
    assert shared_cosines(ga, ga)["cosine"] == pytest.approx(1.0)


def test_loss_changes_match_first_order_prediction(net_and_batch):
    net, x, y = net_and_batch
    lr = 1e-6  # gradients of a random network are large: keep the step in the linear regime
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = analyze_interference(net, x, y, pairs=2, batch_size=24, lr=lr, seed=3)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # works on a copy
    probe = Supernet(SPACE).double()
    probe.load_state_dict(net.state_dict())
    probe.train()
    for m in probe.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    generator = torch.Generator().manual_seed(3)
    order = torch.randperm(24, generator=generator)
    xb, yb = x[order], y[order]
    for pair in result["pairs"]:
        a, b = SPACE.subnet(**_parse(pair["a"])), SPACE.subnet(**_parse(pair["b"]))
        ga, gb = gradients(probe, a, xb, yb), gradients(probe, b, xb, yb)
        dot = sum(float((ga[n] * gb[n]).sum()) for n in ga if n in gb)
        own = sum(float((g**2).sum()) for g in ga.values())
        other = sum(float((g**2).sum()) for g in gb.values())
        # second-order terms are bounded relative to the step sizes, not to the (small) dot product
        assert pair["delta_loss_b_from_a"] == pytest.approx(-lr * dot, abs=1e-3 * lr * (own * other) ** 0.5)
        assert pair["delta_loss_a_from_a"] == pytest.approx(-lr * own, rel=0.1, abs=1e-9)
        assert pair["delta_loss_a_from_a"] < 0
    s = result["summary"]
    assert s["pairs"] == 2 and s["min_cosine"] <= s["mean_cosine"] <= s["max_cosine"]


def _parse(text):
    from ofa_deploy.space import Subnet

    return Subnet.parse(text, SPACE).to_dict()


def test_interference_input_errors(net_and_batch):
    net, x, y = net_and_batch
    with pytest.raises(OfaError, match="lower --batch-size"):
        analyze_interference(net, x, y, batch_size=64)
    with pytest.raises(OfaError, match="at least one pair"):
        analyze_interference(net, x, y, pairs=0, batch_size=8)


def test_choice_unevenness_and_rank_correlation():
    assert choice_unevenness([5, 5, 5])["tv_from_uniform"] == pytest.approx(0.0)
    one = choice_unevenness([9, 0, 0])
    assert one["tv_from_uniform"] == pytest.approx(2 / 3) and one["max_min_ratio"] is None
    assert choice_unevenness([4, 2, 2])["max_min_ratio"] == 2.0
    assert choice_unevenness([0, 0, 0])["tv_from_uniform"] is None
    assert _spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert _spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert _spearman([1, 2], [1, 2]) is None


def _histogram():
    return {"unit": "subnet-steps", "choices": {"ks": [3, 5, 7], "e": [3, 4, 6], "d": [2, 3, 4]},
            "ks": [[10, 10, 10]] * 19 + [[0, 0, 0]], "e": [[30, 0, 0]] * 20, "d": [[10, 10, 10]] * 5,
            "mflops_edges": [3, 4], "mflops_counts": [30], "buckets": {"4": 3, "6": 6, "8": 12, "14": 0}, "total": 30}


def test_sampling_bias_numbers():
    ev = {"name": "e1", "buckets": [{"mflops": 4.0, "n": 2, "mean": 0.5, "min": 0.4, "max": 0.6},
                                    {"mflops": 6.0, "n": 2, "mean": 0.6, "min": 0.55, "max": 0.65},
                                    {"mflops": 8.0, "n": 2, "mean": 0.7, "min": 0.69, "max": 0.71}]}
    r = sampling_bias(SPACE, _histogram(), ev, samples=2000)
    assert r["settings"]["ks"]["mean_tv_from_uniform"] == pytest.approx(0.0)
    assert r["settings"]["ks"]["never_trained_blocks"] == 1
    assert r["settings"]["e"]["mean_tv_from_uniform"] == pytest.approx(2 / 3)
    shares = {row["mflops"]: row["share"] for row in r["buckets"]}
    assert shares == {4.0: 0.1, 6.0: 0.2, 8.0: 0.4, 14.0: 0.0}
    assert r["outside_buckets_share"] == pytest.approx(0.3)
    assert r["rank_correlation_share_vs_accuracy"] == pytest.approx(1.0)
    # uniform sampling lands in the middle buckets far more often than at the ends
    uni = {row["mflops"]: row["uniform_share"] for row in r["buckets"]}
    assert uni[8.0] > uni[6.0] > uni[4.0] and uni[14.0] < 0.01
    with pytest.raises(OfaError, match="empty"):
        sampling_bias(SPACE, {**_histogram(), "total": 0})


def test_analyze_cli(fake_run):
    (fake_run / "histogram.json").write_text(json.dumps(_histogram()))
    cli = [sys.executable, "-m", "ofa_deploy", "analyze"]
    bias = subprocess.run(cli + ["bias", str(fake_run), "--samples", "500", "--json"], capture_output=True, text=True)
    assert bias.returncode == 0, bias.stderr
    assert json.loads(bias.stdout) == json.loads((fake_run / "analysis" / "bias.json").read_text())
    inter = subprocess.run(cli + ["interference", str(fake_run), "--pairs", "1", "--batch-size", "16", "--device",
                                  "cpu"], capture_output=True, text=True)
    assert inter.returncode == 0, inter.stderr
    saved = json.loads((fake_run / "analysis" / "interference-s0.json").read_text())
    assert len(saved["pairs"]) == 2 and saved["pairs"][0]["a_mflops"] < saved["pairs"][0]["b_mflops"]
    (fake_run / "histogram.json").unlink()
    missing = subprocess.run(cli + ["bias", str(fake_run)], capture_output=True, text=True)
    assert missing.returncode == 2 and "histogram.json" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run(cli + ["interference", str(fake_run), "--pair", "smallest"], capture_output=True, text=True)
    assert bad.returncode == 2 and "two subnets" in bad.stderr
