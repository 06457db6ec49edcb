"""Every JSON writer writes valid JSON: NaN and infinities become ``null`` (issue 34, "JSON
writers can still write NaN"); finite values are written exactly as ``json.dumps`` writes
them, so content hashes of existing catalogs and targets do not change."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ofa_deploy.catalog.db import result_hash
from ofa_deploy.cli.common import emit_json
from ofa_deploy.io import atomic_write_json, json_text
from ofa_deploy.profile.collect import LatencyDataset
from ofa_deploy.space import SearchSpace
from ofa_deploy.targets import list_targets
from ofa_deploy.train.trainer import _Trainer as Trainer

BAD = {"loss": float("nan"), "lat": [1.0, float("inf"), (float("-inf"), 2)],
       "deep": {"x": {"y": float("nan")}}, "np32": np.float32("nan"), "np64": np.float64("inf"), "ok": 0.5}
NULLED = {"loss": None, "lat": [1.0, None, [None, 2]], "deep": {"x": {"y": None}}, "np32": None, "np64": None,
          "ok": 0.5}


def _refuse(name: str):
    raise AssertionError(f"{name} is not JSON")


def strict(text: str):
    return json.loads(text, parse_constant=_refuse)


def test_json_text_nulls_every_non_finite_float():
    assert strict(json_text(BAD)) == NULLED
    assert json_text({"a": np.float32(0.5), "b": np.int64(3)}) == '{"a": 0.5, "b": 3}'


@pytest.mark.parametrize("obj", [{"b": [1, 2.5, "x", None, True], "a": {"c": 1e-7}}, [0.1, 3, -2.0]])
def test_finite_input_is_written_as_json_dumps_writes_it(obj):
    for kwargs in ({}, {"sort_keys": True, "separators": (",", ":")}, {"indent": 2}):
        assert json_text(obj, **kwargs) == json.dumps(obj, **kwargs)
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert result_hash(obj) == hashlib.sha256(canonical.encode()).hexdigest()


def test_target_hash_is_unchanged():
    from ofa_deploy.targets import _NOT_HASHED

    target = list_targets()[0]
    data = {k: v for k, v in target.to_dict().items() if k not in _NOT_HASHED}
    assert target.sha256 == hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_atomic_write_json(tmp_path):
    path = atomic_write_json(tmp_path / "s.json", BAD)
    assert strict(path.read_text()) == NULLED


def test_emit_json(capsys):
    emit_json(BAD)
    assert strict(capsys.readouterr().out) == NULLED


def test_trainer_metrics_jsonl(tmp_path):
    histogram = SimpleNamespace(to_json=lambda: {"counts": [float("nan")]})
    fake = SimpleNamespace(out=tmp_path, metrics=[{"epoch": 0, "loss": float("nan")}, {"epoch": 1, "loss": math.inf}],
                           histogram=histogram)
    Trainer._write_logs(fake)  # type: ignore[arg-type]
    from ofa_deploy import run

    lines = (tmp_path / run.METRICS).read_text().splitlines()
    assert [strict(line) for line in lines] == [{"epoch": 0, "loss": None}, {"epoch": 1, "loss": None}]
    assert strict((tmp_path / run.HISTOGRAM).read_text()) == {"counts": [None]}


def test_latency_jsonl_rows(tmp_path):
    data = LatencyDataset(tmp_path / "latency.jsonl", SearchSpace(in_channels=1))
    data.add({"split": "train", "key": "k", "latency_ms": {"p50": float("nan"), "p90": np.float64("inf")}})
    (line,) = Path(tmp_path / "latency.jsonl").read_text().splitlines()
    assert strict(line) == {"split": "train", "key": "k", "latency_ms": {"p50": None, "p90": None}}
