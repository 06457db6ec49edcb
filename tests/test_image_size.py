"""``--image-size N``: MACs stay exact against torch's FlopCounterMode at 64x64 and 96x96,
the data are resized to N, and a size the space's strides cannot downsample is refused
with one line before anything is written."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from torch.utils.flop_counter import FlopCounterMode

from ofa_deploy.buckets import PAPER_BUCKETS, at_paper_size, macs_range, paper_buckets, paper_scale, sample_in_bucket
from ofa_deploy.cost import cost
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("in_channels, num_classes", [(1, 4), (3, 10)])
def test_macs_and_params_equal_flop_counter_at_larger_sizes(size, in_channels, num_classes):
    space = SearchSpace(in_channels=in_channels, num_classes=num_classes, image_size=size)
    net = Supernet(space).eval()
    rng = random.Random(size)
    subnets = [space.smallest(), space.largest(), space.sample(rng)]
    x = torch.randn(1, in_channels, size, size)
    for s in subnets:
        static = net.extract(s)
        with FlopCounterMode(display=False) as counter:
            out = static(x)
        assert out.shape == (1, num_classes)
        macs, params = cost(space, s)
        assert counter.get_total_flops() == 2 * macs, (size, str(s))
        assert sum(p.numel() for p in static.parameters()) == params, str(s)


def test_macs_grow_with_the_input_and_odd_sizes_count_exactly():
    small, big = SearchSpace(in_channels=1, image_size=32), SearchSpace(in_channels=1, image_size=64)
    s = small.middle()
    assert cost(big, s)[0] > 3 * cost(small, s)[0] and cost(big, s)[1] == cost(small, s)[1]
    odd = SearchSpace(in_channels=3, image_size=45)
    static = Supernet(odd).eval().extract(odd.largest())
    with FlopCounterMode(display=False) as counter:
        static(torch.randn(1, 3, 45, 45))
    assert counter.get_total_flops() == 2 * cost(odd, odd.largest())[0]


def test_builtin_data_are_resized_to_the_image_size():
    from ofa_deploy.data import load_dataset

    ds = load_dataset("digits", "test", image_size=48, subset=10)
    assert ds.images.shape == (10, 1, 48, 48)


@pytest.mark.parametrize("size", ["16", "8"])
def test_an_image_size_too_small_for_the_strides_is_one_line(tmp_path, capsys, size):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "digits", "--image-size", size, "--epochs", 1, "--out", out)
    assert_one_line_error(code, err, f"--image-size {size}", "too small")
    assert not out.exists()


def test_train_at_48_records_the_size_and_everything_follows(tmp_path, capsys):
    from ofa_deploy.run import read_config, space_from_config
    from ofa_deploy.weights import load_supernet

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "digits", "--image-size", 48, "--epochs", 1,
                           "--train-subset", 128, "--batch-size", 64, "--device", "cpu", "--quiet", "--out", out)
    assert code == 0, err
    config = read_config(out)
    assert config["data"]["image_size"] == 48 and space_from_config(config).image_size == 48
    net, _ = load_supernet(out)
    assert net.space.image_size == 48
    from ofa_deploy.export.images import export_images

    data = export_images(config, train_images=8, parity_images=4, accuracy=False)
    assert data.train.shape[1:] == (1, 48, 48) and data.parity.shape[1:] == (1, 48, 48)

    # --all-buckets: the paper's six buckets where they sit at 48x48, each subnet inside its bucket
    code, out, err = run_cli(capsys, "export", out, "--all-buckets", "--no-recalibrate", "--no-accuracy",
                             "--parity-images", 4, "--out", tmp_path / "buckets", "--json")
    assert code == 0, err
    space = net.space
    rows = json.loads(out)["exports"]
    assert [r["bucket_mflops"] for r in rows] == list(paper_buckets(space))
    for r in rows:
        assert abs(r["mflops"] - r["bucket_mflops"]) <= 0.5 * paper_scale(space)
        assert r["sidecar"]["input"]["shape"] == ["batch", 1, 48, 48]


@pytest.mark.parametrize("size", [64, 96])
def test_paper_buckets_move_with_the_image_size_and_keep_their_expand_locks(size):
    from ofa_deploy.cost import macs

    assert paper_buckets(SearchSpace(in_channels=1)) == PAPER_BUCKETS
    space = SearchSpace(in_channels=1, num_classes=4, image_size=size)
    buckets = paper_buckets(space)
    lo, hi = macs_range(space)
    assert lo / 1e6 < buckets[0] < buckets[-1] < hi / 1e6
    for b in buckets:
        assert abs(at_paper_size(space, b) - PAPER_BUCKETS[buckets.index(b)]) < 0.05
        tolerance = 0.5 * paper_scale(space)  # as wide as the paper's 0.5 MFLOPs at 32x32
        s = sample_in_bucket(space, b, tolerance, rng=size)
        assert abs(macs(space, s) / 1e6 - b) <= tolerance
        active = [s.e[i] for i in s.active_blocks()]
        if b == buckets[0]:  # as at 32x32: the smallest bucket is sampled with the smallest expand ratio
            assert set(active) == {space.expand_choices[0]}
        if b == buckets[-1]:
            assert set(active) == {space.expand_choices[-1]}
