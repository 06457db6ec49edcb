"""``ofa-deploy export`` / ``build-engine`` / ``targets`` from the command line: outputs,
the device hand-off, and bad input (one line, exit 2, nothing left behind)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, make_fake_run, one_torch_thread, run_cli

from ofa_deploy.buckets import PAPER_BUCKETS
from ofa_deploy.export import read_sidecar, verify_files
from ofa_deploy.export.tensorrt import tensorrt_available

FAST = ["--bn-images", "100", "--no-accuracy", "--parity-images", "32", "--calibration-images", "16"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("cli") / "run")


def test_export_for_jetson_hands_off_to_the_device(run_dir, tmp_path, capsys):
    out = tmp_path / "orin"
    code, stdout, err = run_cli(capsys, "export", run_dir, "--mflops", 8, "--seed", 2, "--target", "jetson",
                                "--out", out, "--parity-images", 64)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["calibration.npy", "model.json", "model.onnx"]
    sidecar = read_sidecar(out)
    verify_files(out, sidecar)
    assert abs(sidecar["mflops"] - 8) <= 0.5
    assert sidecar["target"]["name"] == "jetson-orin" and sidecar["bn"]["recalibrated"]
    assert sidecar["accuracy"]["images"] == 360 and 0 <= sidecar["accuracy"]["top1"] <= 1
    assert sidecar["input"]["normalization"]["dataset"] == "digits"
    assert sidecar["parity"]["images"] == 64 and sidecar["parity"]["passed"]
    assert sidecar["calibration"]["images"] == 512 and np.load(out / "calibration.npy").shape == (512, 1, 32, 32)
    assert f"ofa-deploy build-engine {out} --target jetson" in stdout

    # same seed, same subnet
    code, stdout2, err = run_cli(capsys, "export", run_dir, "--mflops", 8, "--seed", 2, "--target", "cpu", "--out",
                                 tmp_path / "again", "--json", *FAST)
    assert code == 0, err
    result = json.loads(stdout2)
    assert result["exports"][0]["subnet"] == sidecar["subnet_text"] and result["device_command"] is None
    assert not (tmp_path / "again" / "calibration.npy").exists()


def test_subnet_choices_and_default_out(run_dir, tmp_path, capsys):
    code, stdout, err = run_cli(capsys, "export", run_dir, "--smallest", "--json", *FAST)
    assert code == 0, err
    out = Path(json.loads(stdout)["out"])
    assert out.parent == run_dir / "exports" / "cpu" and out.name.startswith("03.")
    code, stdout, err = run_cli(capsys, "export", run_dir, "--subnet", out / "model.json", "--target", "cpu",
                                "--out", tmp_path / "again", "--no-recalibrate", "--json", *FAST)
    assert code == 0, err
    assert json.loads(stdout)["exports"][0]["subnet"] == read_sidecar(out)["subnet_text"]
    assert read_sidecar(tmp_path / "again")["bn"]["recalibrated"] is False
    code, stdout, err = run_cli(capsys, "export", run_dir, "--largest", "--out", tmp_path / "large", *FAST)
    assert code == 0, err
    assert read_sidecar(tmp_path / "large")["mflops"] > 15
    code, _, err = run_cli(capsys, "export", run_dir, "--largest", "--out", tmp_path / "large", *FAST)
    assert_one_line_error(code, err, "already exists")
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--out", tmp_path / "large", "--overwrite", *FAST)
    assert code == 0, err
    assert read_sidecar(tmp_path / "large")["mflops"] < 4


def test_subnet_names_are_accepted_as_in_every_command(run_dir, tmp_path, capsys):
    from ofa_deploy.run import read_config, space_from_config

    space = space_from_config(read_config(run_dir))
    for name in ("middle", "largest"):
        code, stdout, err = run_cli(capsys, "export", run_dir, "--subnet", name, "--out", tmp_path / name,
                                    "--no-recalibrate", "--json", *FAST)
        assert code == 0, err
        assert read_sidecar(tmp_path / name)["subnet_text"] == str(getattr(space, name)())


def test_all_buckets(run_dir, tmp_path, capsys):
    out = tmp_path / "buckets"
    code, stdout, err = run_cli(capsys, "export", run_dir, "--all-buckets", "--target", "jetson-xavier", "--out", out,
                                *FAST)
    assert code == 0, err
    index = json.loads((out / "index.json").read_text())
    names = [f"bucket-{int(b):02d}" for b in PAPER_BUCKETS]
    assert [e["name"] for e in index["exports"]] == names
    for name, bucket in zip(names, PAPER_BUCKETS):
        sidecar = read_sidecar(out / name)
        verify_files(out / name, sidecar)
        assert abs(sidecar["mflops"] - bucket) <= 0.5
        assert sidecar["input"]["shape"][0] == 1  # xavier: static batch for DLA
    assert stdout.count("ofa-deploy build-engine") == 1 and f"build-engine {out} --target jetson-xavier" in stdout


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here, so build-engine does not fail")
def test_build_engine_without_tensorrt_says_what_to_install(run_dir, tmp_path, capsys):
    out = tmp_path / "m"
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--target", "jetson", "--out", out, *FAST)
    assert code == 0, err
    code, _, err = run_cli(capsys, "build-engine", out, "--target", "jetson")
    assert_one_line_error(code, err, "TensorRT is not installed", "pip install 'ofa-deploy[trt]'", "JetPack")
    assert sorted(p.name for p in out.iterdir()) == ["calibration.npy", "model.json", "model.onnx"]


def test_build_engine_bad_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, "build-engine", tmp_path / "nope")
    assert_one_line_error(code, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "build-engine", tmp_path / "empty")
    assert_one_line_error(code, err, "no model.json")


@pytest.mark.parametrize("case", ["unknown-target", "malformed-profile", "outside-space", "bad-spec",
                                  "impossible-mflops", "no-checkpoint", "no-run"])
def test_bad_input_is_one_line_and_leaves_nothing(run_dir, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = ["export", run_dir, "--smallest", "--out", out, *FAST]
    needles: tuple[str, ...] = ()
    if case == "unknown-target":
        args += ["--target", "tpu"]
        needles = ("unknown target 'tpu'",)
    elif case == "malformed-profile":
        profile = tmp_path / "bad.toml"
        profile.write_text('backend = "onnxruntime"\nprecision = "fp32"\n[measure]\nwarmup_s = "long"\n')
        args += ["--target", profile]
        needles = ("measure.warmup_s",)
    elif case == "outside-space":
        args = ["export", run_dir, "--subnet", "96-33_33-33_33-33_33-33_33-33", "--out", out, *FAST]
        needles = ("ks[0]=9",)
    elif case == "bad-spec":
        args = ["export", run_dir, "--subnet", "not-a-subnet", "--out", out, *FAST]
        needles = ("malformed",)
    elif case == "impossible-mflops":
        args = ["export", run_dir, "--mflops", 100, "--out", out, *FAST]
        needles = ("no subnet has 100",)
    elif case == "no-checkpoint":
        bare = make_fake_run(tmp_path / "bare")
        (bare / "final.pt").unlink()
        args = ["export", bare, "--smallest", "--out", out, *FAST]
        needles = ("no checkpoint",)
    elif case == "no-run":
        args = ["export", tmp_path / "missing", "--smallest", "--out", out, *FAST]
        needles = ("does not exist",)
    before = set(tmp_path.iterdir())
    code, stdout, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()
    assert set(tmp_path.iterdir()) == before  # no partial or hidden staging directory either


def test_corrupt_checkpoint(tmp_path, capsys):
    bare = make_fake_run(tmp_path / "bad")
    (bare / "final.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, "export", bare, "--smallest", "--out", tmp_path / "out", *FAST)
    assert_one_line_error(code, err, "corrupt")
    assert not (tmp_path / "out").exists()


def test_selection_must_be_exactly_one(run_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--largest", "--out", tmp_path / "o")
    assert code == 2 and "exactly one" in err
    code, _, err = run_cli(capsys, "export", run_dir, "--out", tmp_path / "o")
    assert code == 2 and "exactly one" in err
    assert not (tmp_path / "o").exists()


def test_targets_command(capsys, tmp_path):
    code, stdout, err = run_cli(capsys, "targets", "--json")
    assert code == 0, err
    names = [t["name"] for t in json.loads(stdout)["targets"]]
    assert {"cpu", "cuda", "jetson-orin", "jetson-xavier"} <= set(names)
    code, stdout, _ = run_cli(capsys, "targets")
    assert code == 0 and "jetson-orin" in stdout and "jetson" in stdout
    code, stdout, _ = run_cli(capsys, "targets", "jetson", "--json")
    assert code == 0 and json.loads(stdout)["name"] == "jetson-orin"
    code, _, err = run_cli(capsys, "targets", "tpu")
    assert_one_line_error(code, err, "unknown target")
