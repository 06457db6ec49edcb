"""``ofa-deploy profile DIR`` without ``--target`` measures on the target the export was
made for (the definition its ``model.json`` records, as ``build-engine`` uses it);
``--target`` still overrides it, and a bare ``.onnx`` without a ``model.json`` is ``cpu``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_fake_run, run_cli

EXPORT = ["--bn-images", "64", "--no-accuracy", "--parity-images", "16", "--calibration-images", "8"]
MEASURE = ["--warmup-s", "0.02", "--min-iterations", "5", "--min-time-s", "0.02", "--max-retries", "0", "--json"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    from ofa_deploy.cli import main

    root = tmp_path_factory.mktemp("recorded")
    run_dir = make_fake_run(root / "run")
    custom = root / "my-2t.toml"  # a target of the user's own, given to export as a path
    custom.write_text((REPO / "profiles" / "cpu-2t.toml").read_text().replace('name = "cpu-2t"', 'name = "my-2t"'))
    assert 'name = "my-2t"' in custom.read_text()
    out = {}
    for key, target in (("cpu-2t", "cpu-2t"), ("custom", str(custom))):
        out[key] = root / key
        assert main(["export", str(run_dir), "--smallest", "--target", target, "--out", str(out[key]), *EXPORT]) == 0
    custom.unlink()  # the export's record is the definition: the .toml is not needed afterwards
    return out


def _profile(capsys, *args) -> dict:
    code, stdout, err = run_cli(capsys, "profile", *args, *MEASURE)
    assert code == 0, err
    return json.loads(stdout)


def test_profile_without_target_uses_the_exports_recorded_target(exports, capsys):
    result = _profile(capsys, exports["cpu-2t"])
    assert result["target"] == "cpu-2t" and result["threads"] == 2


def test_profile_without_target_uses_a_recorded_custom_definition(exports, capsys):
    assert _profile(capsys, exports["custom"])["target"] == "my-2t"


def test_profile_of_the_exports_onnx_uses_its_model_json(exports, capsys):
    assert _profile(capsys, exports["cpu-2t"] / "model.onnx")["target"] == "cpu-2t"


def test_profile_target_overrides_the_recorded_one(exports, capsys):
    assert _profile(capsys, exports["cpu-2t"], "--target", "cpu")["target"] == "cpu"


def test_profile_of_a_bare_onnx_defaults_to_cpu(exports, capsys, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(exports["cpu-2t"] / "model.onnx", bare)
    assert _profile(capsys, bare)["target"] == "cpu"
