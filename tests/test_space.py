"""The search space and subnets: forms, canonicalisation, validation, samplers (no torch)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from ofa_deploy.buckets import PAPER_BUCKETS, sample_in_bucket
from ofa_deploy.cost import macs
from ofa_deploy.errors import OfaError
from ofa_deploy.space import SearchSpace, Subnet, make_divisible

SPACE = SearchSpace()


def test_paper_space_shape():
    assert SPACE.num_stages == 5 and SPACE.max_depth == 4 and SPACE.num_blocks == 20
    assert [s.width for s in SPACE.stages] == [24, 40, 80, 112, 160]
    assert [s.stride for s in SPACE.stages] == [2, 2, 2, 1, 2]
    assert [s.se for s in SPACE.stages] == [False, True, False, True, True]
    assert SPACE.feature_sizes() == [16, 8, 4, 2, 2, 1]
    assert SPACE.population_size == 7371**5


def test_make_divisible_matches_ofa_rule():
    assert make_divisible(30) == 32
    assert make_divisible(84) == 88
    assert make_divisible(3) == 8
    assert make_divisible(60) == 64
    assert make_divisible(120) == 120


def test_middle_smallest_largest():
    mid = SPACE.middle()
    assert mid.d == (3,) * 5
    assert {mid.ks[b] for b in mid.active_blocks()} == {5}
    assert {mid.e[b] for b in mid.active_blocks()} == {4}
    assert SPACE.smallest() == SPACE.subnet([3] * 20, [3] * 20, [2] * 5)
    assert SPACE.largest() == SPACE.subnet([7] * 20, [6] * 20, [4] * 5)


def test_inactive_settings_do_not_matter():
    rng = random.Random(1)
    ks = [rng.choice((3, 5, 7)) for _ in range(20)]
    e = [rng.choice((3, 4, 6)) for _ in range(20)]
    d = [2, 3, 2, 4, 3]
    a = Subnet(ks, e, d)
    ks2, e2 = list(ks), list(e)
    ks2[2], ks2[3], e2[3] = 7, 5, 6  # stage 0 runs 2 blocks: blocks 2, 3 are inert
    b = Subnet(ks2, e2, d)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert str(a) == str(b)
    ks3 = list(ks)
    ks3[0] = 7 if ks[0] != 7 else 3  # an active block differs
    assert Subnet(ks3, e, d) != a


def test_forms_round_trip():
    rng = random.Random(0)
    for _ in range(300):
        s = SPACE.sample(rng)
        assert Subnet.parse(str(s)) == s
        assert Subnet.from_dict(s.to_dict()) == s
        assert Subnet.parse(json.dumps(s.to_dict())) == s
        assert Subnet.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict() == s.to_dict()


def test_text_form_reads_kernel_then_expand():
    s = Subnet.parse("36-54_73-33-54_33-33_33-33_33-33")
    assert s.ks[:2] == (3, 5) and s.e[:2] == (6, 4) and s.d[:2] == (2, 3)
    assert s.ks[4:7] == (7, 3, 5) and s.e[4:7] == (3, 3, 4)


def test_subnet_is_immutable():
    s = SPACE.middle()
    with pytest.raises(AttributeError):
        s.ks = (3,) * 20


@pytest.mark.parametrize(
    "data, message",
    [
        ({"ks": [3] * 7 + [4] + [3] * 12, "e": [3] * 20, "d": [2] * 5}, "ks[7]=4 not in (3, 5, 7)"),
        ({"ks": [3] * 20, "e": [3] * 19 + [5], "d": [2] * 5}, "e[19]=5 not in (3, 4, 6)"),
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 1, 2, 2]}, "d[2]=1 not in (2, 3, 4)"),
        # issue 30: the value's stage and block, counted from 1
        ({"ks": [3] * 7 + [4] + [3] * 12, "e": [3] * 20, "d": [2] * 5}, "the kernel size of stage 2, block 4 "
                                                                         "(counting from 1)"),
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 1, 2, 2]}, "the depth of stage 3 (counting from 1)"),
        ({"ks": [3] * 19, "e": [3] * 20, "d": [2] * 5}, "ks has 19 entries, the space needs 20"),
        ({"ks": [3] * 20, "e": [3] * 20}, "subnet is missing d"),
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 1}, "unknown keys: w"),
        ({"ks": "3" * 20, "e": [3] * 20, "d": [2] * 5}, "ks must be a list of integers"),
        ({"ks": [3.5] + [3] * 19, "e": [3] * 20, "d": [2] * 5}, "ks[0]=3.5 is not an integer"),
        ([3, 3], "must be an object"),
    ],
)
def test_validation_names_field_and_value(data, message):
    with pytest.raises(
        OfaError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        Subnet.from_dict(data)


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello", "malformed"),
        ("33-33_33-33", "2 stages, the space has 5"),
        # issue 30: stages counted from 1, as the text form reads
        ("33_33-33_33-33_33-33_33-33", r"stage 1 of 5 \('33'\) has 1 block; a stage has 2, 3 or 4 blocks"),
        ("33-33_33-33_33-33_33-33_33-38", r"e\[17\]=8 not in \(3, 4, 6\): the expand ratio of stage 5, block 2 "
                                          r"\(counting from 1\)"),
        ("93-33_33-33_33-33_33-33_33-33", r"ks\[0\]=9 not in"),
        ('{"ks": [3]', "not valid JSON"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(OfaError, match=message):
        Subnet.parse(text)


def test_same_seed_same_subnets_and_independent_streams():
    a = [SPACE.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng1, rng2 = random.Random(3), random.Random(3)
    assert [SPACE.sample(rng1) for _ in range(50)] == [SPACE.sample(rng2) for _ in range(50)]
    assert SPACE.sample(1) != SPACE.sample(2)


def test_same_seed_same_subnets_across_processes():
    code = (
        "import random; from ofa_deploy.space import SearchSpace; from ofa_deploy.buckets import sample_in_bucket;"
        "s=SearchSpace(); r=random.Random(42);"
        "print([str(s.sample(r)) for _ in range(20)]);"
        "print([str(sample_in_bucket(s, b, 0.5, r)) for b in (4, 8, 14)])"
    )
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(outs) == 1


@pytest.mark.parametrize("bucket", PAPER_BUCKETS)
def test_sample_in_bucket_within_tolerance(bucket):
    rng = random.Random(int(bucket))
    for _ in range(20):
        s = sample_in_bucket(SPACE, bucket, 0.5, rng)
        assert abs(macs(SPACE, s) / 1e6 - bucket) <= 0.5
        if bucket == 4.0:
            assert all(s.e[b] == 3 for b in s.active_blocks())
        if bucket == 14.0:
            assert all(s.e[b] == 6 for b in s.active_blocks())


@pytest.mark.parametrize("space", [SPACE, SearchSpace(in_channels=3, num_classes=100, image_size=24)])
def test_draw_macs_equals_macs_of_the_subnet(space):
    from ofa_deploy.cost import draw_macs

    rng = random.Random(7)
    for _ in range(300):
        ks, e, d = space.draw(rng)
        assert draw_macs(space, ks, e, d) == macs(space, space.subnet(ks, e, d))


@pytest.mark.parametrize("bucket", [4.0, 9.0, 14.0])
def test_sample_in_bucket_same_subnet_as_plain_rejection(bucket):
    """The fast loop keeps the draw that resampling with ``sample`` + ``macs`` keeps, and
    leaves the generator in the same state."""
    fast, plain = random.Random(11), random.Random(11)
    lock = {4.0: (3,), 14.0: (6,)}.get(bucket)
    for _ in range(5):
        got = sample_in_bucket(SPACE, bucket, 0.5, fast)
        while True:
            want = SPACE.sample(plain, expand_choices=lock)
            if abs(macs(SPACE, want) - bucket * 1e6) <= 0.5e6:
                break
        assert got == want
    assert fast.random() == plain.random()


def test_sample_in_bucket_unreachable_fails_fast():
    with pytest.raises(OfaError, match="no subnet has 2"):
        sample_in_bucket(SPACE, 2.0, 0.5, 0)
    with pytest.raises(OfaError, match="no subnet has 20"):
        sample_in_bucket(SPACE, 20.0, 0.5, 0)
    with pytest.raises(OfaError, match="found in 5 draws"):
        sample_in_bucket(SPACE, 15.1, 0.05, 0, max_tries=5)
    with pytest.raises(OfaError, match="lock_width"):
        sample_in_bucket(SPACE, 8.0, 0.5, 0, lock_width="wide")


def test_unreachable_bucket_names_the_whole_span_and_why_a_lock_applies():
    """Issue 30: `--mflops 40` named the span with expand ratios locked to 6 (6.7-15.1) as if
    it were the space's (3.9-15.1)."""
    from ofa_deploy.buckets import macs_range

    lo, hi = (m / 1e6 for m in macs_range(SPACE))
    with pytest.raises(OfaError) as info:
        sample_in_bucket(SPACE, 40.0, 0.5, 0)
    assert str(info.value) == f"no subnet has 40 +- 0.5 MFLOPs: the space's subnets span {lo:.2f} to {hi:.2f} MFLOPs"
    with pytest.raises(OfaError) as info:  # reachable, but not with the lock
        sample_in_bucket(SPACE, 5.0, 0.5, 0, lock_width="max")
    text = str(info.value)
    locked_lo = macs_range(SPACE, expand_choices=(6,))[0] / 1e6
    assert f"locked to its maximum, 6 (lock_width='max'): those subnets span {locked_lo:.2f}" in text
    assert f"the whole space {lo:.2f} to {hi:.2f}" in text and "uniform draws almost never land" in text


def test_restricted_sampling_respects_choices():
    rng = random.Random(0)
    for _ in range(50):
        s = SPACE.sample(rng, kernel_choices=(7,), expand_choices=(4, 6), depth_choices=(3, 4))
        assert all(s.ks[b] == 7 and s.e[b] in (4, 6) for b in s.active_blocks())
        assert set(s.d) <= {3, 4}


def test_space_round_trips_through_dict_and_rejects_bad_values():
    space = SearchSpace(in_channels=1, num_classes=100)
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(OfaError, match="unknown search-space keys: bogus"):
        SearchSpace.from_dict({"bogus": 1})
    with pytest.raises(OfaError, match="num_classes"):
        SearchSpace(num_classes=1)
    with pytest.raises(OfaError, match="kernel_choices"):
        SearchSpace(kernel_choices=(3, 4))


def test_subnet_from_another_space_is_rejected():
    small = SearchSpace(depth_choices=(1, 2))
    with pytest.raises(OfaError):
        SPACE.block_specs(small.smallest())


def test_seed_must_be_an_integer():
    with pytest.raises(OfaError, match="seed must be an integer"):
        SPACE.sample("0")
