"""Elastic resolution in training (``train --resolutions``): which sizes are accepted, the
per-step draw, the resize, what the run records, and that resume stays bit-exact while a
run without ``--resolutions`` is the run it always was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from test_train_resume import ARGS, _kill_during_epoch, _metric_lines, _resume_and_compare, _train

from ofa_deploy import run, weights
from ofa_deploy.errors import OfaError
from ofa_deploy.resolution import check_resolution, minimum_resolution, parse_resolutions, space_at
from ofa_deploy.space import SearchSpace

BASE = ["--dataset", "digits", "--method", "rss", "--per-batch", "1", "--epochs", "3", "--train-subset", "64",
        "--batch-size", "8", "--seed", "5", "--device", "cpu", "--quiet"]


def test_sizes_the_space_can_downsample():
    space = SearchSpace(in_channels=1)
    # five stride-2 layers (stem + stages 1, 2, 3, 5): 17 -> 9 -> 5 -> 3 -> 2 -> 2 -> 1 still halves at each
    assert minimum_resolution(space) == 17
    for ok in (17, 24, 28, 32, 224):
        check_resolution(space, ok)
        sizes = space_at(space, ok).feature_sizes()
        assert all(b < a for a, b, st in zip(sizes[:-1], sizes[1:], space.stages) if st.stride == 2)
    with pytest.raises(OfaError, match=r"16 is too small .* stage 5 .* at least 17"):
        check_resolution(space, 16)
    with pytest.raises(OfaError, match="from 8 to"):
        check_resolution(space, 7)
    assert parse_resolutions(" 32,24 ,28") == (24, 28, 32)
    for bad, needle in (("24,24", "twice"), ("24,,32", "comma-separated"), ("24,2x", "whole number"),
                        ("", "comma-separated")):
        with pytest.raises(OfaError, match=needle):
            parse_resolutions(bad)


@pytest.mark.parametrize("value, needles", [
    ("24,abc", ["--resolutions", "whole number"]),
    ("16,32", ["16 is too small", "at least 17"]),
])
def test_bad_resolutions_one_line_and_nothing_written(capsys, tmp_path, value, needles):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *BASE, "--resolutions", value, "--out", out)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_sampler_is_a_pure_function_of_seed_epoch_step():
    from ofa_deploy.train.resolution import ResolutionSampler

    a, b = ResolutionSampler([32, 24, 28], seed=3), ResolutionSampler([24, 28, 32], seed=3)
    picks = [a.pick(e, s) for e in range(3) for s in range(40)]
    assert picks == [b.pick(e, s) for e in range(3) for s in range(40)]
    assert set(picks) == {24, 28, 32}
    assert picks != [ResolutionSampler([24, 28, 32], seed=4).pick(e, s) for e in range(3) for s in range(40)]
    counts = a.epoch_counts(1, 40)["resolution_steps"]
    assert sum(counts.values()) == 40 and counts == {str(r): picks[40:80].count(r) for r in (24, 28, 32)}
    none = ResolutionSampler(None, seed=3)
    x = torch.randn(2, 1, 32, 32)
    assert none.apply(x, 0, 0) is x and none.epoch_counts(0, 5) == {}


def test_resize_is_pils_antialiased_bilinear():
    """Oracle: PIL's bilinear resize (what OFA's torchvision pipeline used), float mode."""
    from PIL import Image

    from ofa_deploy.data.resize import resize

    rng = np.random.default_rng(0)
    image = rng.standard_normal((32, 32)).astype(np.float32)
    for size in (24, 17, 40):
        ours = resize(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
        pil = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR))
        assert ours.shape == (size, size)
        assert np.abs(ours - pil).max() < 1e-4, size
    x = torch.randn(3, 1, 32, 32)
    assert resize(x, 32) is x


def _weights(out: Path) -> dict:
    return weights.load_checkpoint(out / run.FINAL)["model"]


def test_without_resolutions_nothing_changes_and_with_them_the_set_is_recorded(tmp_path):
    plain, same_size, elastic = tmp_path / "plain", tmp_path / "r32", tmp_path / "elastic"
    for out, extra in ((plain, []), (same_size, ["--resolutions", "32"]), (elastic, ["--resolutions", "24,28,32"])):
        done = _train(*BASE, *extra, "--out", str(out))
        assert done.returncode == 0, done.stderr
    # the size draw uses a generator of its own: at the data's own size nothing differs, bit for bit
    a, b = _weights(plain), _weights(same_size)
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = run.read_config(plain)
    assert "resolutions" not in config["train"] and config["space"]["image_size"] == 32
    assert all("resolution_steps" not in row for row in _metric_lines(plain))

    config = run.read_config(elastic)
    assert config["train"]["resolutions"] == [24, 28, 32] and config["space"]["image_size"] == 32
    rows = _metric_lines(elastic)
    steps = 64 // 8
    assert all(sum(r["resolution_steps"].values()) == steps for r in rows)
    assert sum(1 for r in (24, 28, 32) if sum(row["resolution_steps"][str(r)] for row in rows) > 0) >= 2
    c = _weights(elastic)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # smaller batches did train differently


def test_kill9_mid_epoch_then_resume_with_resolutions_is_bit_identical(tmp_path):
    """The existing kill -9 test's PS run (teacher, distillation) with three sizes."""
    args = [*ARGS, "--resolutions", "20,26,32"]
    killed = tmp_path / "killed"
    _kill_during_epoch([*args, "--out", str(killed)], killed, 2)
    reference = _resume_and_compare(killed, args, tmp_path)
    assert run.read_config(killed)["train"]["resolutions"] == [20, 26, 32]
    assert [r["resolution_steps"] for r in _metric_lines(killed)] == \
        [r["resolution_steps"] for r in _metric_lines(reference)]
    assert json.loads((killed / "summary.json").read_text())["epochs"] == 4
