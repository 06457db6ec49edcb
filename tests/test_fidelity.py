"""The six released-code switches of ``train`` and the presets ofa / released-code (issue 15).

Oracles: the released code's formulas recomputed by hand (its PS learning rate, OFA's
channel sort), raw IDX bytes for the data protocol, the MACs of a 3-channel stem conv, and
fresh seeded initialisations for the random teacher.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FMNIST_DIR, assert_one_line_error, one_torch_thread, run_cli

torch = pytest.importorskip("torch")

from ofa_deploy.errors import OfaError  # noqa: E402
from ofa_deploy.space import SearchSpace  # noqa: E402
from ofa_deploy.train import TrainConfig  # noqa: E402
from ofa_deploy.train.fidelity import FIDELITY_PRESETS, SWITCHES, resolve_fidelity  # noqa: E402
from ofa_deploy.train.schedules import ProgressiveShrinking  # noqa: E402

GREY = SearchSpace(in_channels=1, num_classes=10)
FMNIST_TABLE1 = [25, 17, 3, 17, 3, 17]
DIVISORS = [2.7, 32.5, 10.8, 32.5, 10.8]


def _trainer(tmp_path: Path, **kw):
    """A set-up trainer (data, space, schedule, net) of a small digits PS run, nothing trained."""
    from ofa_deploy.train.trainer import _Trainer

    cfg = TrainConfig(dataset="digits", method="ps", ps_epochs=[1, 1, 1, 1, 1, 1], train_subset=128, device="cpu",
                      quiet=True, **kw)
    t = _Trainer(tmp_path / "run", cfg, progress=False)
    t._setup()
    t._build()
    return t


# -- presets and resolution ------------------------------------------------------------------
def test_presets_set_all_six_choices():
    assert set(SWITCHES) == {"ps_lr", "teacher", "sort", "warmup_epochs", "data_protocol", "macs_stem"}
    assert FIDELITY_PRESETS["released-code"].switches() == {
        "ps_lr": "tail", "teacher": "random", "sort": "none", "warmup_epochs": 0, "data_protocol": "released",
        "macs_stem": 3}
    assert resolve_fidelity().preset == "ofa"
    assert resolve_fidelity(None, teacher="random").preset == "custom"
    assert resolve_fidelity(None, teacher="trained").preset == "ofa"  # agrees with the default: still ofa
    assert resolve_fidelity("released-code", sort="none", ps_lr="tail") == FIDELITY_PRESETS["released-code"]
    with pytest.raises(OfaError, match="--sort full contradicts --fidelity released-code"):
        resolve_fidelity("released-code", sort="full")
    with pytest.raises(OfaError, match="unknown --fidelity preset"):
        resolve_fidelity("paper")
    with pytest.raises(OfaError, match="unknown --teacher value"):
        resolve_fidelity(None, teacher="teacherless")
    with pytest.raises(OfaError, match="unknown fidelity switch"):
        resolve_fidelity("ofa", lr_tail=True)


def test_ofa_default_resolves_to_todays_config_and_schedule():
    """Without switches a run is the ofa preset, and its [train] values and PS phases are what
    they were before the switches existed (lr, warm-up, fresh optimizer, full sort, kd)."""
    cfg = TrainConfig(dataset="fmnist", method="ps", preset="paper").resolved()
    assert (cfg.fidelity, cfg.ps_lr, cfg.teacher, cfg.sort, cfg.data_protocol, cfg.macs_stem) == \
        ("ofa", "restart", "trained", "full", "ofa-deploy", None)
    assert cfg.warmup_epochs == 5 and cfg.augment == "default"
    assert TrainConfig(dataset="digits", epochs=10).resolved().warmup_epochs == 2  # min(5, 10 // 5)
    phases = cfg.schedule(GREY).phases
    assert [p.epochs for p in phases] == FMNIST_TABLE1
    assert [p.lr for p in phases] == [0.01] + [0.01 / d for d in DIVISORS]
    assert [p.sort_channels for p in phases] == [False, False, False, False, True, True]
    assert all(p.lr_span is None and not p.carry_momentum and p.sort_keep == () for p in phases)
    assert [p.kd for p in phases] == [False] + [True] * 5
    assert "macs_in_channels" not in SearchSpace(in_channels=1).to_dict()


def test_released_preset_config_and_contradictions():
    cfg = TrainConfig(dataset="digits", method="rss", epochs=10, fidelity="released-code").resolved()
    assert cfg.warmup_epochs == 0 and cfg.augment == "released" and cfg.macs_stem == 3
    assert cfg.train_table()["fidelity"] == "released-code"
    assert cfg.resolved().train_table() == cfg.train_table()  # resolving twice changes nothing
    with pytest.raises(OfaError, match="--warmup-epochs 2 contradicts --fidelity released-code"):
        TrainConfig(dataset="digits", epochs=10, fidelity="released-code", warmup_epochs=2).resolved()
    with pytest.raises(OfaError, match="--warmup-epochs 3 contradicts --fidelity ofa"):
        TrainConfig(dataset="digits", epochs=10, fidelity="ofa", warmup_epochs=3).resolved()
    assert TrainConfig(dataset="digits", epochs=10, warmup_epochs=3).resolved().fidelity == "custom"
    with pytest.raises(OfaError, match="1-channel datasets only"):
        TrainConfig(dataset="cifar10", epochs=10, data_protocol="released").resolved()


# -- 1. PS learning rate ---------------------------------------------------------------------
def test_tail_lr_at_first_step_of_each_ps_phase_by_hand():
    """The released code: phase j runs epochs s_j .. T_j - 1 of a cosine of T_j epochs,
    T_j cumulative (42, 45, 62, 65, 82 on F-MNIST); s = 25 for the kernel phase (the
    supernet saved its last epoch index, 24, and resumes at +1), s = T_{j-1} + 1 after it
    (each phase saved epoch = n_epochs)."""
    cfg = TrainConfig(dataset="fmnist", method="ps", preset="paper", fidelity="released-code")
    phases = cfg.schedule(GREY).phases
    starts, totals = [25, 43, 46, 63, 66], [42, 45, 62, 65, 82]
    steps = 782  # 50,000 / 64
    for phase, s, total, divisor in zip(phases[1:], starts, totals, DIVISORS):
        by_hand = 0.5 * (0.01 / divisor) * (1 + math.cos(math.pi * (s * steps) / (total * steps)))
        assert phase.tail_lr(0, steps) == pytest.approx(by_hand, rel=1e-12)
        assert phase.carry_momentum
    factors = [p.tail_lr(0, steps) / p.lr for p in phases[1:]]
    assert factors == pytest.approx([0.35, 0.005, 0.16, 0.002, 0.09], abs=0.006)
    assert [p.epochs for p in phases] == [25, 17, 2, 16, 2, 16]
    # the last step of a phase stays on the same cosine: kernel ends one step before epoch 42
    last = phases[1].tail_lr(17 * steps - 1, steps)
    assert last == pytest.approx(0.5 * (0.01 / 2.7) * (1 + math.cos(math.pi * (42 * steps - 1) / (42 * steps))))


def test_tail_lr_in_a_trained_run_and_momentum_carried(tmp_path):
    from ofa_deploy.train import train

    with one_torch_thread():
        out = train(TrainConfig(dataset="digits", method="ps", ps_epochs=[1, 1, 2, 1, 2, 1], ps_lr="tail",
                                train_subset=128, device="cpu", quiet=True, out=str(tmp_path / "tail")),
                    progress=False)
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["largest", "kernel", "depth-1", "expand-1"]  # 1, 1, 2-1, 2-1 epochs
    steps = 2  # 128 / 64; the logged lr is the epoch's last step
    totals, starts = {"kernel": 2, "depth-1": 4, "expand-1": 7}, {"kernel": 1, "depth-1": 3, "expand-1": 6}
    divisor = {"kernel": 2.7, "depth-1": 32.5, "expand-1": 32.5}
    for r in rows[1:]:
        t = starts[r["phase"]] * steps + steps - 1
        assert r["lr"] == pytest.approx(0.5 * 0.01 / divisor[r["phase"]]
                                        * (1 + math.cos(math.pi * t / (totals[r["phase"]] * steps))), rel=1e-12)

    restart, tail = _trainer(tmp_path / "a"), _trainer(tmp_path / "b", ps_lr="tail")
    for t, carried in ((restart, False), (tail, True)):
        before = t.optimizer
        t._start_phase(t.schedule.phases[1])
        assert (t.optimizer is before) == carried


# -- 2. teacher ------------------------------------------------------------------------------
def test_random_teacher_loads_no_weights(tmp_path):
    from ofa_deploy.nn import StaticSubnet
    from ofa_deploy.train.trainer import _step_seed

    t = _trainer(tmp_path, teacher="random")
    t._start_phase(t.schedule.phases[1])
    teacher = t.teacher
    assert teacher.training and all(not p.requires_grad for p in teacher.parameters())
    torch.manual_seed(_step_seed(0, "teacher"))
    space0 = replace(t.space, dropout=0.0)
    fresh = StaticSubnet(space0, space0.largest()).state_dict()
    trained = t.net.extract(t.space.largest()).state_dict()
    state = teacher.state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in fresh)
    assert not all(torch.equal(state[k], trained[k]) for k in trained if state[k].dtype.is_floating_point)

    t2 = _trainer(tmp_path / "trained")
    t2._start_phase(t2.schedule.phases[1])
    assert not t2.teacher.training
    extracted = t2.net.extract(t2.space.largest()).state_dict()
    assert all(torch.equal(t2.teacher.state_dict()[k], extracted[k]) for k in extracted)


def test_teacher_none_turns_distillation_off():
    phases = TrainConfig(dataset="digits", method="ps", epochs=8, teacher="none").resolved().schedule(GREY).phases
    assert not any(p.kd for p in phases)


# -- 3. channel sorting ----------------------------------------------------------------------
def test_sort_none_leaves_channel_order_untouched(tmp_path):
    t = _trainer(tmp_path, sort="none")
    expand = [p for p in t.schedule.phases if p.name.startswith("expand")]
    assert expand and not any(p.sort_channels for p in expand)
    before = {k: v.clone() for k, v in t.net.state_dict().items()}
    for phase in expand:
        t._start_phase(phase)
    assert all(torch.equal(before[k], v) for k, v in t.net.state_dict().items())

    full = _trainer(tmp_path / "full")
    for phase in [p for p in full.schedule.phases if p.name.startswith("expand")]:
        full._start_phase(phase)
    assert not all(torch.equal(before[k], v) for k, v in full.net.state_dict().items())


def test_sort_ofa_matches_ofas_reorganize_by_hand():
    """OFA's re_organize_middle_weights(expand_ratio_stage=1): importance of channels
    [w(4), w(6)) lowered by 2e5, then one descending sort - the e=4 prefix stays first.
    (In float64: OFA adds 2e5 in float32, which rounds the lowered importances to steps of
    ~0.016 and can reorder near-ties inside that group; the intent is an exact sort.)"""
    torch.manual_seed(1)
    from ofa_deploy.nn import Supernet

    net = Supernet(GREY)
    phases = ProgressiveShrinking.build(GREY, [1] * 6, 0.01, 0, 0, sort="ofa").phases
    assert [p.sort_keep for p in phases[4:]] == [(), (4,)]
    block = net.blocks[5]
    importance = block.project.weight.detach().abs().sum(dim=(0, 2, 3))
    w4 = GREY.mid_channels(block.in_ch, 4)
    ofa = importance.double()
    ofa[w4:] += -2e5
    expected = ofa.argsort(descending=True, stable=True)
    old = block.expand.weight.detach().clone()
    with torch.no_grad():
        net.sort_channels(phases[5].sort_keep)
    assert torch.equal(block.expand.weight, old[expected])
    assert set(expected[:w4].tolist()) == set(range(w4))


def test_full_sort_is_the_plain_importance_sort():
    torch.manual_seed(2)
    from ofa_deploy.nn import Supernet

    net = Supernet(GREY)
    block = net.blocks[0]
    order = block.project.weight.detach().abs().sum(dim=(0, 2, 3)).argsort(descending=True, stable=True)
    old = block.dw_bn.weight.detach().clone()
    with torch.no_grad():
        net.sort_channels()
    assert torch.equal(block.dw_bn.weight, old[order])


# -- 4. warm-up ------------------------------------------------------------------------------
def test_released_preset_has_no_warmup(tmp_path):
    cfg = TrainConfig(dataset="fmnist", method="rss", preset="paper", fidelity="released-code").resolved()
    assert cfg.warmup_epochs == 0
    assert TrainConfig(dataset="fmnist", method="rss", preset="paper").resolved().warmup_epochs == 5
    t = _trainer(tmp_path, warmup_epochs=0)
    largest = t.schedule.phases[0]
    assert largest.warmup_epochs == 0
    assert t._lr(largest, 0, 0) == pytest.approx(0.01)  # the cosine's start, no ramp


# -- 5. data protocol ------------------------------------------------------------------------
def _idx_images(path: Path):
    import numpy as np

    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_released_fmnist_split_no_normalisation_native_test():
    import numpy as np

    from ofa_deploy.data import load_dataset

    common = dict(data_dir=str(FMNIST_DIR), protocol="released")
    train = load_dataset("fmnist", "train", **common)
    val = load_dataset("fmnist", "val", val_size=10000, **common)
    test = load_dataset("fmnist", "test", **common)
    assert (len(train), len(val), len(test)) == (50000, 10000, 10000)
    assert tuple(train.images.shape[1:]) == (1, 32, 32)
    assert tuple(val.images.shape[1:]) == tuple(test.images.shape[1:]) == (1, 28, 28)
    # the released code's random_sample_valid_set: first 10,000 of randperm(60000) seeded 2147483647
    g = torch.Generator()
    g.manual_seed(2147483647)
    valid_idx = torch.randperm(60000, generator=g).tolist()[:10000]
    name = next(p for p in FMNIST_DIR.iterdir() if p.name.startswith("train-images"))
    raw_train = _idx_images(name)
    assert np.array_equal((val.images[:, 0].numpy() * 255).round().astype(np.uint8), raw_train[valid_idx])
    raw_test = _idx_images(next(p for p in FMNIST_DIR.iterdir() if p.name.startswith("t10k-images")))
    assert torch.equal(test.images[:, 0], torch.from_numpy(raw_test.astype(np.float32) / 255.0))  # no mean/std
    assert train.images.min() >= 0 and train.images.max() <= 1 and train.mean == (0.0,) and train.std == (1.0,)
    # the same held-out images whatever the run's seed
    assert torch.equal(load_dataset("fmnist", "val", val_size=5, seed=7, **common).images, val.images[:5])


def test_released_digits_split_and_network_at_native_size():
    from ofa_deploy.data import load_dataset
    from ofa_deploy.nn import Supernet

    train = load_dataset("digits", "train", protocol="released")
    test = load_dataset("digits", "test", protocol="released")
    assert len(train) == 1437 - 1437 // 6 and tuple(test.images.shape[1:]) == (1, 8, 8)
    with pytest.raises(OfaError, match="exceeds the 239 images"):
        load_dataset("digits", "val", val_size=240, protocol="released")
    net = Supernet(GREY).eval()
    for size in (28, 8):  # fully convolutional with a global pool: any input size reaches the head
        with torch.no_grad():
            assert net(torch.rand(2, 1, size, size)).shape == (2, 10)


def test_evaluation_reads_the_runs_protocol_and_counts_buckets_at_training_size(tmp_path):
    """eval/catalog/export reload a run's data with its protocol: calibration images at the
    training 32x32, measured images at their native size; buckets come from [space], whose
    image_size (32) and macs_in_channels (3) are what the run trained and counted with."""
    from ofa_deploy.evaluate.runs import load_eval_data

    t = _trainer(tmp_path, fidelity="released-code")
    assert t.space.macs_in_channels == 3 and t.space.image_size == 32
    config = {"data": {"dataset": "digits"}, "space": t.space.to_dict(), "train": t.cfg.train_table()}
    calib, measured, labels = load_eval_data(config, split="test", seed=0)
    assert tuple(calib.shape[1:]) == (1, 32, 32) and tuple(measured.shape[1:]) == (1, 8, 8)
    assert float(measured.max()) <= 1.0 and len(labels) == 360
    assert SearchSpace.from_dict(config["space"]) == t.space


def test_released_augmentation_is_batched_and_adds_brightness():
    from ofa_deploy.data.augment import POLICIES, apply, sample_params

    policy = POLICIES["released"]
    assert policy.scale == (0.08, 1.0) and policy.flip and policy.brightness == pytest.approx(32 / 255)
    theta = sample_params(policy, 256, torch.Generator().manual_seed(0))
    assert theta.shape == (256, 3, 3)
    factors = theta[:, 2, 0]
    assert factors.min() >= 1 - 32 / 255 - 1e-6 and factors.max() <= 1 + 32 / 255 + 1e-6
    images = torch.full((256, 1, 32, 32), 0.99)
    out = apply(images, theta)
    assert out.max() <= 1.0 and torch.allclose(out[:, :, 16, 16], (0.99 * factors).clamp(max=1).view(-1, 1))
    # a policy without brightness draws exactly what it drew before
    plain = sample_params(POLICIES["fmnist"], 8, torch.Generator().manual_seed(0))
    assert plain.shape == (8, 2, 3)


# -- 6. MACs of the stem ---------------------------------------------------------------------
def test_macs_stem_3_moves_every_subnet_by_0074_mflops():
    import random

    from ofa_deploy.cost import macs, params

    three = SearchSpace(in_channels=1, num_classes=10, macs_in_channels=3)
    rng = random.Random(0)
    subnets = [GREY.smallest(), GREY.largest(), GREY.middle()] + [GREY.sample(rng) for _ in range(20)]
    stem_extra = 2 * 9 * 16 * 16 * 16  # two more input channels x 3x3 x 16 outputs x 16x16 positions
    for s in subnets:
        assert macs(three, s) - macs(GREY, s) == stem_extra
        assert params(three, s) == params(GREY, s)
    assert stem_extra / 1e6 == pytest.approx(0.074, abs=5e-4)
    assert SearchSpace.from_dict(three.to_dict()) == three and three.to_dict()["macs_in_channels"] == 3


# -- CLI: one clear line, nothing written; records and resume ---------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--fidelity", "released-code", "--teacher", "trained"], "--teacher trained contradicts --fidelity released-code"),
    (["--fidelity", "released-code", "--macs-stem", "1"], "--macs-stem 1 contradicts"),
    (["--fidelity", "ofa", "--ps-lr", "tail"], "--ps-lr tail contradicts --fidelity ofa"),
    (["--fidelity", "paper"], "--fidelity"),
    (["--sort", "partial"], "--sort"),
    (["--data-protocol", "released", "--dataset", "cifar10"], "1-channel datasets only"),
])
def test_cli_bad_fidelity_is_one_line_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "digits", "--epochs", "1", "--out", out, "--quiet", *args)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in err, err
    if lines[0].startswith("ofa-deploy: error: "):
        assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_cli_records_choices_and_old_runs_resume_as_ofa(tmp_path, capsys):
    """A run written before the switches (no fidelity keys in config.toml or checkpoints)
    reads as ofa, is recognised as the same run, and resumes."""
    from ofa_deploy import run
    from ofa_deploy.train import train
    from ofa_deploy.train.trainer import resume

    out = tmp_path / "old"
    stop = RuntimeError("stop after epoch 1")

    def interrupt(done, total):
        if done == 1:
            raise stop

    cfg = TrainConfig(dataset="digits", method="rss", epochs=2, train_subset=128, device="cpu", quiet=True,
                      out=str(out))
    with one_torch_thread(), pytest.raises(RuntimeError):
        train(cfg, progress=False, on_epoch=interrupt)
    config = run.read_config(out)
    assert config["train"]["fidelity"] == "ofa" and config["train"]["sort"] == "full"
    for key in ("fidelity", *SWITCHES):  # make it a run from before the switches
        if key != "warmup_epochs":
            config["train"].pop(key, None)
    run.write_config(out, config)
    ckpt = torch.load(out / run.LAST, weights_only=False)
    ckpt["train"] = {k: v for k, v in ckpt["train"].items() if k == "warmup_epochs" or k not in (
        "fidelity", *SWITCHES)}
    torch.save(ckpt, out / run.LAST)
    assert TrainConfig.from_tables(run.read_config(out)).resolved().fidelity == "ofa"
    with one_torch_thread():
        assert train(cfg, progress=False) == out  # the same run: resumed, not refused
    assert (out / "final.pt").is_file()
    assert resume(out, progress=False) == out  # complete: returned as is

    code, _, err = run_cli(capsys, "train", "--resume", out, "--fidelity", "released-code")
    assert code == 2 and "--fidelity" in err and "cannot be changed" in err


def test_train_help_documents_every_switch(capsys):
    code, text, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for flag in ("--fidelity", "--ps-lr", "--teacher", "--sort", "--warmup-epochs", "--data-protocol", "--macs-stem"):
        assert flag in text
