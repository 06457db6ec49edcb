"""Property-based side of the bad-input campaign (issue 12): for any text, any profile TOML
and any results file, the library either accepts the input with every number finite and in
range, or refuses it with ``OfaError`` - never another exception - and a refused import
leaves the catalog as it was."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ofa_deploy.errors import OfaError  # noqa: E402
from ofa_deploy.space import SearchSpace, Subnet  # noqa: E402
from ofa_deploy.validate import LIMITS, MAX_SEED, finite, integer, json_depth, loads_json, seed  # noqa: E402

SPACE = SearchSpace(in_channels=1)
# Derandomized (the same examples on every CI run) and without an example database in the tree.
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- subnet specs ---------------------------------------------------------------------------
SPEC_ALPHABET = st.sampled_from(list("0123456789_-{}[]\":, ksedabc٣３\x00 /.") + ["json"])


@FAST
@given(st.one_of(st.text(max_size=400), st.lists(SPEC_ALPHABET, max_size=200).map("".join)))
def test_any_text_parses_to_a_subnet_or_ofa_error(text):
    try:
        subnet = Subnet.parse(text, SPACE)
    except OfaError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    assert Subnet.parse(str(subnet), SPACE) == subnet
    assert all(c in "0123456789_-" for c in str(subnet))


@FAST
@given(text=st.one_of(st.text(max_size=300), st.lists(SPEC_ALPHABET, min_size=250, max_size=400).map("".join)))
def test_any_spec_argument_is_never_an_os_error(text, tmp_path, monkeypatch):
    """``load_subnet`` tries a spec as a path only when it could be one (no traceback for a
    300-character spec, a NUL or a directory)."""
    from ofa_deploy.specs import load_subnet

    monkeypatch.chdir(tmp_path)
    try:
        load_subnet(text, SPACE)
    except OfaError:
        pass


SUBNETS = st.builds(
    lambda ks, e, d: SPACE.subnet(ks, e, d),
    st.lists(st.sampled_from(SPACE.kernel_choices), min_size=20, max_size=20),
    st.lists(st.sampled_from(SPACE.expand_choices), min_size=20, max_size=20),
    st.lists(st.sampled_from(SPACE.depth_choices), min_size=5, max_size=5),
)


@FAST
@given(SUBNETS)
def test_every_subnet_round_trips_through_text_and_json(subnet):
    assert Subnet.parse(str(subnet), SPACE) == subnet
    assert Subnet.parse(json.dumps(subnet.to_dict()), SPACE) == subnet


@FAST
@given(st.text(max_size=300))
def test_json_reader_refuses_or_parses(text):
    try:
        loads_json(text, "x")
    except OfaError:
        return


@FAST
@given(st.integers(1, 5000), st.sampled_from("[{"))
def test_deep_json_is_refused_before_parsing(depth, opener):
    closer = "]" if opener == "[" else "}"
    body = "1" if opener == "[" else ""
    text = opener * depth + body + closer * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth
    assert json_depth(text) == depth
    if depth > 64:
        with pytest.raises(OfaError, match="nested"):
            loads_json(text, "x")
    else:
        loads_json(text, "x")


@FAST
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                 st.text(max_size=20), st.booleans(), st.none()))
def test_numbers_are_finite_and_in_range_or_refused(value):
    for name, (lo, hi) in LIMITS.items():
        try:
            x = finite(value, name, lo=lo, hi=hi) if isinstance(lo, float) else integer(value, name, lo=lo, hi=hi)
        except OfaError as exc:
            assert name in str(exc)
            continue
        assert math.isfinite(x) and lo <= x <= hi
    try:
        s = seed(value)
    except OfaError:
        return
    assert 0 <= s <= MAX_SEED


# -- target profiles --------------------------------------------------------------------------
MEASURE_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                           st.text(max_size=5), st.booleans())


@FAST
@given(measure=st.dictionaries(st.sampled_from(["warmup_s", "min_iterations", "min_time_s", "cov_threshold",
                                               "max_retries"]), MEASURE_VALUES, max_size=5),
       threads=st.one_of(st.none(), st.integers(-10**6, 10**6)))
def test_any_profile_toml_gives_a_bounded_target_or_ofa_error(measure, threads, tmp_path):
    """Whatever a profile's [measure] table and threads say, the result is a target whose
    protocol finishes in bounded time, or one ``OfaError`` naming the key."""
    import tomli_w

    from ofa_deploy.profile import Protocol
    from ofa_deploy.targets import read_target

    doc = {"backend": "onnxruntime", "precision": "fp32", "measure": measure}
    if threads is not None:
        doc["threads"] = threads
    path = tmp_path / "t.toml"
    path.write_text(tomli_w.dumps(doc))
    try:
        target = read_target(path)
        protocol = Protocol.from_target(target)
    except OfaError as exc:
        assert "\n" not in str(exc)
        assert any(k in str(exc) for k in [*measure, "threads"]), str(exc)
        return
    m = target.measure
    assert math.isfinite(m.warmup_s) and 0 <= m.warmup_s <= LIMITS["warmup_s"][1]
    assert math.isfinite(m.min_time_s) and 0 <= m.min_time_s <= LIMITS["min_time_s"][1]
    assert 2 <= m.min_iterations <= LIMITS["min_iterations"][1] and 0 <= m.max_retries <= LIMITS["max_retries"][1]
    assert 0 <= target.threads <= LIMITS["threads"][1]
    assert math.isfinite(protocol.max_time_s) and protocol.max_time_s >= protocol.min_time_s


# -- catalog import -------------------------------------------------------------------------
LATENCY = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6), st.text(max_size=3),
                    st.none())


@pytest.fixture(scope="module")
def one_result(tmp_path_factory) -> dict:
    """A real ``profile --json`` result, shaped as ``catalog import`` takes it (the subnet
    and space as an export's sidecar records them)."""
    return {
        "target": "cpu", "batch": 1, "backend": "onnxruntime", "precision": "fp32", "unstable": False,
        "latency_ms": {"min": 1.0, "mean": 1.2, "std": 0.1, "p50": 1.1, "p90": 1.4, "p95": 1.5, "p99": 1.9,
                       "max": 2.0},
        "latency_kind": "host", "n": 200, "cov": 0.02, "host_latency_ms": None, "device_latency_ms": None,
        "environment": {"hostname": "h"},
        "model": {"subnet": SPACE.smallest().to_dict(), "space": SPACE.to_dict(), "path": "model.onnx",
                  "format": "onnx", "sha256": None},
    }


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.dictionaries(st.sampled_from(["min", "mean", "std", "p50", "p90", "p99"]), LATENCY,
                                      max_size=3), min_size=1, max_size=3),
       n=st.one_of(st.just(None), st.integers(-3, 10), st.floats(allow_nan=True)))
def test_any_results_file_imports_completely_or_not_at_all(edits, n, one_result, tmp_path):
    from ofa_deploy.catalog import Catalog
    from ofa_deploy.cli import main

    results = []
    for i, edit in enumerate(edits):
        r = json.loads(json.dumps(one_result))
        r["model"]["subnet"] = SPACE.sample(i).to_dict()
        r["latency_ms"].update(edit)
        if n is not None and i == len(edits) - 1:
            r["n"] = n
        results.append(r)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results, allow_nan=True))
    good = tmp_path / "good.db"
    if not good.exists():
        first = tmp_path / "first.json"
        first.write_text(json.dumps(one_result))
        assert main(["catalog", "import", str(first), "--catalog", str(good)]) == 0
    before = hashlib.sha256(good.read_bytes()).hexdigest()
    code = main(["catalog", "import", str(path), "--catalog", str(good)])
    valid = all(_valid(r) for r in results)
    if not valid:
        assert code == 2
        assert hashlib.sha256(good.read_bytes()).hexdigest() == before, "a refused import changed the catalog"
        return
    assert code == 0
    with Catalog(good, create=False) as cat:
        for row in cat.latency_rows("cpu"):
            stats = json.loads(row["stats"])["latency_ms"]
            assert all(math.isfinite(stats[k]) and stats[k] > 0 for k in ("min", "p50", "p90", "p99"))


def _valid(r: dict) -> bool:
    lat = r["latency_ms"]
    for k in ("min", "mean", "std", "p50", "p90", "p99"):
        v = lat.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if v < 0 or (v == 0 and k != "std"):
            return False
    n = r["n"]
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1
