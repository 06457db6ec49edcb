"""A target given as a ``.toml`` path travels with what was made for it (issue 34).

``model.json``, ``engine.json`` and ``predictor.json`` record the target's whole definition
and its SHA-256; ``build-engine`` without ``--target`` and ``predictor check`` use that
definition (not a re-resolved name, which for a custom target is unknown and for one named
like a built-in is the wrong one); a ``--target`` of the recorded name but another
definition is refused in one line naming the keys that differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trt_fake
from conftest import assert_one_line_error, make_fake_run, one_torch_thread, run_cli
from test_predictor_transfer import PROTOCOL, _fake_measuring, saved_source, source  # noqa: F401 - fixtures

from ofa_deploy.errors import OfaError
from ofa_deploy.targets import from_record, list_targets, load_target, target_for

# a TensorRT target named like the built-in `cuda`, but with another workspace and batch range
CUDA_LOOKALIKE = ('name = "cuda"\nbackend = "tensorrt"\nprecision = "fp32"\nbatch_sizes = [1, 4]\n'
                  "[tensorrt]\nworkspace_mb = 256\n")
MY_DEVICE = ('name = "my-device"\nbackend = "onnxruntime"\nprecision = "fp32"\nthreads = 1\n'
             "[measure]\npredictor_statistic = \"min\"\n")


def test_every_builtin_target_round_trips_through_its_record():
    for target in list_targets():
        back = from_record(json.loads(json.dumps(target.record())), "x.json")
        assert back.sha256 == target.sha256 and back.to_dict() == {**target.to_dict(), "source": back.source}
        assert from_record(target.to_dict(), "x.json").sha256 == target.sha256  # older artefacts: no hash


def test_a_damaged_or_edited_record_is_refused():
    record = load_target("cuda").record()
    with pytest.raises(OfaError, match="does not match its recorded sha256"):
        from_record({**record, "workspace_mb": 2}, "e/model.json")
    with pytest.raises(OfaError, match="e/model.json: the recorded target is damaged .*opset"):
        from_record({**record, "opset": 3, "sha256": None}, "e/model.json")
    with pytest.raises(OfaError, match="not a table"):
        from_record("cuda", "e/model.json")


def test_a_given_target_of_the_recorded_name_must_be_the_recorded_definition(tmp_path: Path):
    (tmp_path / "cuda.toml").write_text(CUDA_LOOKALIKE)
    mine = load_target(str(tmp_path / "cuda.toml"))
    recorded = from_record(mine.record(), "m.json")
    assert target_for(None, recorded, "cuda", "export m.json") is recorded  # not the built-in cuda
    assert target_for(str(tmp_path / "cuda.toml"), recorded, "cuda", "export m.json").sha256 == mine.sha256
    with pytest.raises(OfaError) as info:
        target_for("cuda", recorded, "cuda", "export m.json")  # the built-in: same name, other definition
    message = str(info.value)
    assert "batch_sizes" in message and "workspace_mb" in message and "leave out --target" in message
    assert target_for("jetson-orin", recorded, "cuda", "export m.json").name == "jetson-orin"  # another target
    with pytest.raises(OfaError, match="was made for target cuda, not jetson-orin"):
        target_for("jetson-orin", recorded, "cuda", "predictor p.json", same_name=True)
    with pytest.raises(OfaError, match="not a built-in target here.*pass --target with the target's .toml"):
        target_for(None, None, "my-device", "predictor p.json")


def _export(tmp_path: Path, profile: str, name: str) -> Path:
    from ofa_deploy.data import load_dataset
    from ofa_deploy.export import export_subnet
    from ofa_deploy.weights import load_supernet

    supernet, _ = load_supernet(make_fake_run(tmp_path / "run"))
    (tmp_path / f"{name}.toml").write_text(profile)
    images = load_dataset("digits", "train").images[:16]
    with one_torch_thread():
        export_subnet(supernet, supernet.space.smallest(), str(tmp_path / f"{name}.toml"), tmp_path / "export",
                      calib_images=images, parity_images=images[:4], recalibrate=False, calibration_count=8)
    return tmp_path / "export"


def test_build_engine_without_target_uses_the_exports_recorded_definition(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    fake = trt_fake.install(monkeypatch, "10.3")
    export = _export(tmp_path, CUDA_LOOKALIKE, "cuda")
    model = json.loads((export / "model.json").read_text())
    assert model["target"]["sha256"] == load_target(str(tmp_path / "cuda.toml")).sha256
    (tmp_path / "cuda.toml").unlink()  # the profile need not travel: the export carries it
    code = trt_fake_cli(["build-engine", str(export), "--out", str(tmp_path / "e"), "--json"])
    assert code == 0
    config = fake.built_configs[-1]
    # the recorded lookalike, not the built-in cuda (1024 MB, batches 1/8/64)
    assert config.workspace == 256 << 20 and config.profiles[0].shapes[3][0] == 4
    engine = json.loads((tmp_path / "e" / "engine.json").read_text())
    assert engine["target"]["sha256"] == model["target"]["sha256"] and engine["workspace_mb"] == 256
    assert engine["rebuild_command"] == f"ofa-deploy build-engine {export}"  # rebuilds with the record again


def test_build_engine_refuses_a_target_of_the_same_name_with_another_definition(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    trt_fake.install(monkeypatch, "10.3")
    export = _export(tmp_path, CUDA_LOOKALIKE, "cuda")
    (tmp_path / "cuda.toml").write_text(CUDA_LOOKALIKE.replace("256", "512"))  # edited since the export
    for given in (str(tmp_path / "cuda.toml"), "cuda"):
        code, _, err = run_cli(capsys, "build-engine", export, "--target", given, "--out", tmp_path / "e")
        assert_one_line_error(code, err, "differs from the target export", "workspace_mb", "leave out --target")
        assert not (tmp_path / "e").exists()


def trt_fake_cli(args: list[str]) -> int:
    from ofa_deploy.cli import main

    return main(args)


def test_a_predictor_adapted_for_a_toml_target_is_checked_without_the_file(capsys, monkeypatch, fake_run: Path,
                                                                          saved_source: Path,  # noqa: F811
                                                                          tmp_path: Path):
    _fake_measuring(monkeypatch, 1.0)
    profile = tmp_path / "my-device.toml"
    profile.write_text(MY_DEVICE)
    out = tmp_path / "adapted"
    code, stdout, err = run_cli(capsys, "predictor", "adapt", "--from", saved_source, "--target", profile, "--run",
                                fake_run, "--budget", "4", "--step", "4", "--out", out, *PROTOCOL, "--json")
    assert code == 0, err
    saved = json.loads((out / "predictor.json").read_text())
    assert saved["target"] == "my-device" and saved["target_definition"]["sha256"] == load_target(str(profile)).sha256
    profile.unlink()  # checked later, elsewhere: the predictor carries its target
    check = ["predictor", "check", "--predictor", out, "--run", fake_run, "--n", "3", *PROTOCOL, "--json"]
    code, stdout, err = run_cli(capsys, *check)
    assert code == 0, err
    assert json.loads(stdout)["target"] == "my-device"
    profile.write_text(MY_DEVICE.replace("threads = 1", "threads = 3"))  # edited since
    code, _, err = run_cli(capsys, *check, "--target", profile)
    assert_one_line_error(code, err, "differs from the target predictor", "threads")
    code, _, err = run_cli(capsys, *check, "--target", "cpu")
    assert_one_line_error(code, err, "was made for target my-device, not cpu")


def test_an_older_predictor_of_a_custom_target_says_how_to_check_it(capsys, monkeypatch, fake_run: Path,
                                                                   saved_source: Path,  # noqa: F811
                                                                   tmp_path: Path):
    _fake_measuring(monkeypatch, 1.0)
    profile = tmp_path / "my-device.toml"
    profile.write_text(MY_DEVICE)
    out = tmp_path / "adapted"
    code, _, err = run_cli(capsys, "predictor", "adapt", "--from", saved_source, "--target", profile, "--run",
                           fake_run, "--budget", "4", "--step", "4", "--out", out, *PROTOCOL, "--json")
    assert code == 0, err
    saved = json.loads((out / "predictor.json").read_text())
    del saved["target_definition"]  # as an ofa-deploy before this one wrote it
    (out / "predictor.json").write_text(json.dumps(saved))
    check = ["predictor", "check", "--predictor", out, "--run", fake_run, "--n", "3", *PROTOCOL, "--json"]
    code, _, err = run_cli(capsys, *check)
    assert_one_line_error(code, err, "target 'my-device', which is not a built-in", "pass --target")
    code, stdout, err = run_cli(capsys, *check, "--target", profile)
    assert code == 0, err


def test_export_names_no_target_path_in_the_device_command(tmp_path: Path):
    from ofa_deploy.export.workflow import device_command

    cuda = load_target("cuda")
    assert device_command(tmp_path, cuda, "cuda") == f"ofa-deploy build-engine {tmp_path} --target cuda"
    assert device_command(tmp_path, cuda, "/home/me/gpu.toml") == f"ofa-deploy build-engine {tmp_path}"


def test_catalog_select_bounds_a_custom_targets_entries_with_its_predictor(capsys, saved_source: Path,  # noqa: F811
                                                                          tmp_path: Path):
    import sqlite3

    from test_catalog import fill

    from ofa_deploy.catalog.db import Catalog

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, tmp_path, n=8)
    with sqlite3.connect(db) as conn:  # measured on a device that has no profile here
        conn.execute("UPDATE latency SET target = 'my-device'")
        conn.execute("UPDATE artifacts SET target = 'my-device'")
    predictor = json.loads(saved_source.read_text())
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "predictor.json").write_text(json.dumps({**predictor, "target": "my-device"}))
    code, stdout, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--max-latency-ms", "1000",
                                "--predictor", tmp_path / "p", "--confidence", "0.9", "--json")
    assert code == 0, err
    assert json.loads(stdout)["confidence"] == 0.9
    code, _, err = run_cli(capsys, "catalog", "select", "--catalog", db, "--max-latency-ms", "1000",
                           "--predictor", saved_source, "--confidence", "0.9")
    assert_one_line_error(code, err, "was fitted for target cpu, not my-device")
