"""Schedules, presets, learning rate, histogram: pure logic, no training."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from ofa_deploy.cost import macs
from ofa_deploy.errors import OfaError
from ofa_deploy.space import SearchSpace
from ofa_deploy.train import TrainConfig
from ofa_deploy.train.histogram import SamplingHistogram
from ofa_deploy.train.schedules import FlopsBalancedSampler, UniformSampler, ps_phase_epochs, scale_epochs

SPACE = SearchSpace(in_channels=1, num_classes=10)


def schedule(**kw):
    return TrainConfig(**kw).resolved().schedule(SPACE)


def test_rss_one_subnet_per_epoch_pure_function_of_seed():
    s = schedule(method="rss", epochs=6, seed=3)
    per_epoch = [s.subnets(e, 0) for e in range(6)]
    assert all(len(x) == 1 for x in per_epoch)
    assert all(s.subnets(e, 57) == per_epoch[e] for e in range(6))
    assert len({x[0] for x in per_epoch}) == 6
    again = schedule(method="rss", epochs=6, seed=3)
    assert [again.subnets(e, 0) for e in range(6)] == per_epoch
    assert schedule(method="rss", epochs=6, seed=4).subnets(0, 0) != per_epoch[0]


def test_rss_per_batch_draws_k_per_step():
    s = schedule(method="rss", per_batch=2, epochs=2)
    a, b = s.subnets(0, 0), s.subnets(0, 1)
    assert len(a) == 2 and a != b and a[0] != a[1]
    assert s.subnets(0, 1) == b and s.phases[0].subnets_per_step == 2


def test_ps_paper_phases_match_table_1():
    assert ps_phase_epochs(25) == [25, 17, 3, 17, 3, 17] and sum(ps_phase_epochs(25)[1:]) == 57
    assert sum(ps_phase_epochs(180)[1:]) == 410
    for dataset, (b, rest) in {"mnist": (10, 27), "fmnist": (25, 57), "cifar10": (180, 410),
                               "cifar100": (180, 410)}.items():
        cfg = TrainConfig(dataset=dataset, method="ps", preset="paper").resolved()
        assert cfg.ps_epochs[0] == b and sum(cfg.ps_epochs[1:]) == rest
        assert cfg.warmup_epochs == 5 and cfg.lr_schedule == "cosine"
    assert TrainConfig(dataset="fmnist", method="rss", preset="paper").resolved().epochs == 82
    assert TrainConfig(dataset="fmnist", method="rss", preset="paper-short").resolved().epochs == 25
    assert TrainConfig(dataset="cifar100", method="rss", preset="paper").resolved().epochs == 590


def test_ps_phase_settings():
    s = schedule(method="ps", ps_epochs=[1, 1, 1, 1, 1, 1], seed=0)
    names = [p.name for p in s.phases]
    assert names == ["largest", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    lrs = [p.lr for p in s.phases]
    assert lrs == pytest.approx([0.01, 0.01 / 2.7, 0.01 / 32.5, 0.01 / 10.8, 0.01 / 32.5, 0.01 / 10.8])
    assert [p.subnets_per_step for p in s.phases] == [1, 1, 2, 2, 4, 4]
    assert [p.kd for p in s.phases] == [False] + [True] * 5
    assert [p.sort_channels for p in s.phases] == [False] * 4 + [True] * 2
    assert [p.warmup_epochs for p in s.phases][1:] == [0] * 5
    assert s.subnets(0, 0) == [SPACE.largest()]
    seen = {e: Counter() for e in range(1, 6)}
    for e in range(1, 6):
        for step in range(40):
            for sub in s.subnets(e, step):
                seen[e].update(("d", x) for x in sub.d)
                seen[e].update(("e", x) for s_, dd in enumerate(sub.d) for x in sub.e[s_ * 4:s_ * 4 + dd])
                seen[e].update(("k", x) for s_, dd in enumerate(sub.d) for x in sub.ks[s_ * 4:s_ * 4 + dd])
    keys = lambda e, kind: {x for (k, x) in seen[e] if k == kind}  # noqa: E731
    assert keys(1, "k") == {3, 5, 7} and keys(1, "e") == {6} and keys(1, "d") == {4}
    assert keys(2, "d") == {3, 4} and keys(2, "e") == {6}
    assert keys(3, "d") == {2, 3, 4} and keys(3, "e") == {6}
    assert keys(4, "e") == {4, 6} and keys(5, "e") == {3, 4, 6}
    assert len(s.subnets(4, 0)) == 4


def test_epochs_scale_multi_phase_schedules():
    assert scale_epochs([25, 17, 3, 17, 3, 17], 82) == [25, 17, 3, 17, 3, 17]
    assert sum(scale_epochs([25, 17, 3, 17, 3, 17], 10)) == 10
    assert scale_epochs([25, 17, 3, 17, 3, 17], 1)[0] == 1
    cfg = TrainConfig(dataset="fmnist", method="ps", epochs=2).resolved()
    assert sum(cfg.ps_epochs) == 2 and cfg.ps_epochs[0] >= 1
    with pytest.raises(OfaError, match="disagrees"):
        TrainConfig(method="ps", epochs=3, ps_epochs=[1, 1, 0, 0, 0, 0]).resolved()
    with pytest.raises(OfaError, match="largest-network"):
        TrainConfig(method="ps", ps_epochs=[0, 1, 0, 0, 0, 0]).resolved().schedule(SPACE)


def test_fixed_and_two_subnet_sequences():
    assert schedule(method="fixed", subnet="middle").subnets(3, 2) == [SPACE.middle()]
    spec = str(SPACE.smallest())
    assert schedule(method="fixed", subnet=spec).subnets(0, 0) == [SPACE.smallest()]
    big, small = SPACE.largest(), SPACE.smallest()
    seq = lambda m: [schedule(method=m, epochs=5).subnets(e, 0)[0] for e in range(5)]  # noqa: E731
    assert seq("max-then-min") == [big, big, big, small, small]
    assert seq("min-then-max") == [small, small, small, big, big]
    assert seq("alternating") == [small, big, small, big, small]
    cfg = TrainConfig(method="alternating", epochs=5).resolved()
    assert cfg.lr_schedule == "constant" and cfg.warmup_epochs == 0
    with pytest.raises(OfaError):
        TrainConfig(method="fixed", subnet="nonsense").resolved().schedule(SPACE)


def test_sandwich():
    s = schedule(method="sandwich", epochs=2)
    subs = s.subnets(1, 4)
    assert len(subs) == 4 and subs[:2] == [SPACE.largest(), SPACE.smallest()]
    assert schedule(method="sandwich", per_batch=0, epochs=1).subnets(0, 0) == [SPACE.largest(), SPACE.smallest()]


def test_flops_balance_flattens_the_mflops_distribution():
    import random

    balanced, uniform = FlopsBalancedSampler(SPACE), UniformSampler(SPACE)
    rng = random.Random(0)
    n = 600
    b = Counter(round(macs(SPACE, balanced(rng)) / 1e6) for _ in range(n))
    u = Counter(round(macs(SPACE, uniform(rng)) / 1e6) for _ in range(n))
    centres = balanced.centres
    assert centres[0] == 4 and centres[-1] == 15
    expected = n / len(centres)
    assert all(0.5 * expected < b[c] < 1.6 * expected for c in centres), b
    assert u[4] + u[14] + u[15] < 0.02 * n  # uniform per-setting sampling almost never reaches the extremes
    s = schedule(method="rss", balance="flops", per_batch=3, epochs=1)
    assert len(s.subnets(0, 0)) == 3


def test_config_validation():
    for kw, msg in [
        ({"method": "bogus"}, "unknown method"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"method": "ps", "per_batch": 2}, "per-batch"),
        ({"method": "ps", "balance": "flops"}, "balance"),
        ({"method": "rss", "subnet": "largest"}, "--subnet"),
        ({"preset": "paper-short", "method": "ps"}, "paper-short"),
        ({"lr_schedule": "step"}, "lr schedule"),
        ({"epochs": 0}, "epochs"),
    ]:
        with pytest.raises(OfaError, match=msg):
            TrainConfig(**kw).resolved()


def test_learning_rate_warmup_then_cosine():
    from ofa_deploy.train.schedules import Phase
    from ofa_deploy.train.trainer import _Trainer

    t = _Trainer.__new__(_Trainer)
    t.steps = 10
    t.cfg = TrainConfig(epochs=20).resolved()
    phase = Phase("rss", 20, 0.01, warmup_epochs=4)
    lrs = [t._lr(phase, e, s) for e in range(20) for s in range(10)]
    assert lrs[0] == pytest.approx(0.01 / 40) and lrs[39] == pytest.approx(0.01)
    assert lrs[40] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.005 * (1 + math.cos(math.pi * 159 / 160)))
    assert all(a >= b for a, b in zip(lrs[40:], lrs[41:]))
    t.cfg = TrainConfig(method="alternating", epochs=20).resolved()
    assert {t._lr(Phase("x", 20, 0.01), e, 3) for e in range(20)} == {0.01}


def test_histogram_counts_active_blocks_only():
    h = SamplingHistogram(SPACE)
    small, big = SPACE.smallest(), SPACE.largest()
    h.add(small, 3)
    h.add(big)
    data = h.to_json()
    assert data["total"] == 4 and data["unit"] == "subnet-steps"
    assert data["d"][0] == [3, 0, 1]
    assert data["ks"][0] == [3, 0, 1] and data["ks"][2] == [0, 0, 1]  # block 2 runs only in the largest
    assert data["e"][3] == [0, 0, 1]
    assert sum(data["mflops_counts"]) == 4 and data["buckets"]["4"] == 3
    assert data["buckets"]["14"] == 0  # the largest is at 15.1 MFLOPs, outside 14 +- 0.5
    assert data["mflops_edges"][0] <= macs(SPACE, small) / 1e6 <= data["mflops_edges"][1]
