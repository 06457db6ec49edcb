"""The ImageNet-style streaming folder mode (``data.stream``) on imported OFA supernets:
eval, export (int8) and catalog build with ``--data-dir``, the streaming property, OFA's
BN estimator, and one-line refusals of bad folders. A seeded random OFA supernet at 32x32
with 10 classes and a folder of 90 small JPEGs keep it quick."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.stream_fixtures import imported_run, make_imagenet_folder

pytest.importorskip("ofa", reason="MIT's ofa package makes the supernet: pip install --no-deps ofa")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    folder = make_imagenet_folder(tmp / "folder", classes=10, train_per_class=6, val_per_class=3)
    return imported_run(tmp), folder


def _copy(folder: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_eval_streams_val_and_reads_only_the_calibration_subset(setup, capsys, monkeypatch):
    import ofa_deploy.data.stream as stream

    run_dir, folder = setup
    opened, batches = [], []
    load = stream._load_rgb
    monkeypatch.setattr(stream, "_load_rgb", lambda path: opened.append(path) or load(path))
    monkeypatch.setattr(stream, "MAX_BATCH", 7)
    real_batches = stream.FolderStream.batches

    def counting(self, batch_size=200):
        for x, y in real_batches(self, batch_size):
            batches.append(x.shape[0])
            yield x, y

    monkeypatch.setattr(stream.FolderStream, "batches", counting)
    code, out, err = run_cli(capsys, "eval", run_dir, "--subnet", "largest", "--data-dir", folder, "--calib-n", 16,
                             "--workers", 0, "--quiet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "imagenet-folder" and result["val_images"] == 30 and result["train_images"] == 60
    assert result["bn_variance"] == "biased" and result["params"]["bn_variance"] == "biased"
    assert result["calib_n"] == 16 and result["test_images"] == 30 and result["skipped"] == 0
    assert 0.0 <= result["subnets"][0]["accuracy"] <= 1.0
    # 16 of the 60 training images and each val image once: nothing else is decoded
    assert len(opened) == 16 + 30
    assert sum(1 for p in opened if "/train/" in p) == 16
    # and nothing is held whole: batches of at most MAX_BATCH images
    assert max(batches) <= 7 and sum(batches) == 46
    # the same evaluation with PyTorch's estimator is another result
    code, out, err = run_cli(capsys, "eval", run_dir, "--subnet", "largest", "--data-dir", folder, "--calib-n", 16,
                             "--workers", 0, "--quiet", "--json", "--bn-variance", "unbiased", "--name", "unbiased")
    assert code == 0, err
    assert json.loads(out)["bn_variance"] == "unbiased"


def test_loader_workers_give_the_same_accuracy(setup, capsys):
    run_dir, folder = setup
    accs = []
    for workers in (0, 1):
        code, out, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest", "--data-dir", folder,
                                 "--calib-n", 20, "--workers", workers, "--quiet", "--json", "--overwrite")
        assert code == 0, err
        accs.append(json.loads(out)["subnets"][0]["accuracy"])
    assert accs[0] == accs[1]


def test_biased_estimator_is_ofas_set_running_statistics(setup):
    """OFA's ``set_running_statistics`` on its own static subnet vs ``recalibrate_bn(...,
    variance="biased")`` on the imported one, with a smaller last batch: same logits."""
    import copy

    import torch
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from ofa_deploy.evaluate.bn import recalibrate_bn
    from ofa_deploy.weights import load_supernet
    from tests.test_ofa_conformance import make_ofa_supernet

    run_dir, _ = setup
    ofa_net = make_ofa_supernet(1.0, 10, size=32, seed=0)
    ours, _ = load_supernet(run_dir)
    sub = ours.space.largest()
    ofa_net.set_active_subnet(ks=sub.ks, e=sub.e, d=sub.d)
    theirs = copy.deepcopy(ofa_net.get_active_subnet(preserve_weight=True)).eval()
    x = torch.randn(50, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    set_running_statistics(theirs, [(x[i:i + 20], None) for i in range(0, 50, 20)])
    net = recalibrate_bn(ours.extract(sub), x, batch_size=20, variance="biased")
    probe = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        a, b = theirs.eval()(probe), net(probe)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    unbiased = recalibrate_bn(ours.extract(sub), x, batch_size=20, variance="unbiased")
    with torch.no_grad():
        assert (unbiased(probe) - a).abs().max() > (a - b).abs().max()  # the estimators differ, measurably


def test_export_int8_with_data_dir(setup, capsys, tmp_path):
    import onnx

    run_dir, folder = setup
    out = tmp_path / "int8"
    code, _, err = run_cli(capsys, "export", run_dir, "--smallest", "--target", "cpu", "--precision", "int8",
                           "--data-dir", folder, "--bn-images", 40, "--calibration-images", 24,
                           "--parity-images", 16, "--workers", 0, "--out", out)
    assert code == 0, err
    sidecar = json.loads((out / "model.json").read_text())
    ops = {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    assert sidecar["precision"] == "int8"
    assert sidecar["calibration"]["images"] == 24 and sidecar["calibration"]["split"] == "train"
    assert sidecar["bn"] == {"recalibrated": True, "images": 40, "seed": 0, "variance": "biased"}
    assert sidecar["accuracy"]["images"] == 30 and sidecar["accuracy"]["streamed"]["images"] == 30
    pre = sidecar["preprocessing"]
    assert pre["resize_steps"][0] == {"op": "resize_shorter", "size": 37, "filter": "bilinear", "antialias": True}
    assert pre["resize_steps"][1]["size"] == [32, 32] and pre["mean"] == [0.485, 0.456, 0.406]
    assert pre["classes"] == sorted(p.name for p in (folder / "val").iterdir())
    assert "16 val/ images" in sidecar["parity"]["source"]


def test_catalog_build_and_select(setup, capsys, tmp_path):
    run_dir, folder = setup
    catalog = tmp_path / "cat" / "catalog.db"
    code, out, err = run_cli(capsys, "catalog", "build", run_dir, "--target", "cpu", "--catalog", catalog, "--n", 3,
                             "--finalists", 1, "--calib-images", 20, "--data-dir", folder, "--workers", 0,
                             "--min-time-s", 0.1, "--warmup-s", 0.05, "--min-iterations", 5, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["chosen_on"] == "test:half1:seed0" and summary["reported_on"] == "test:half2:seed0"
    assert summary["dataset"].startswith("imagenet-folder:")
    code, out, err = run_cli(capsys, "catalog", "select", "--catalog", catalog, "--target", "cpu",
                             "--max-latency-ms", 10000, "--allow-unstable", "--json")
    assert code == 0, err
    chosen = json.loads(out)
    assert chosen["accuracy_info"]["split"] == "test:half2:seed0" and chosen["accuracy_info"]["images"] == 15


def test_unreadable_images_are_skipped_and_counted(setup, capsys, tmp_path):
    run_dir, folder = setup
    copy = _copy(folder, tmp_path)
    victim = sorted((copy / "val" / "n00000003").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])  # a truncated JPEG
    (copy / "val" / "n00000001" / "._fork.JPEG").write_bytes(b"x")  # hidden: not an image, not counted
    code, out, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest", "--data-dir", copy, "--calib-n", 10,
                             "--workers", 0, "--quiet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["skipped"] == 1 and result["test_images"] == 30
    assert err.count("skipped unreadable image") == 1 and victim.name in err


@pytest.mark.parametrize("damage, needles", [
    ("no-val", ("has no val/ folder",)),
    ("extra-class", ("11 class folders", "10 classes")),
    ("renamed", ("different classes", "only in val/")),
    ("empty", ("holds no images",)),
    ("missing", ("is not a directory",)),
])
def test_bad_folders_are_refused_in_one_line(setup, capsys, tmp_path, damage, needles):
    run_dir, folder = setup
    copy = _copy(folder, tmp_path)
    if damage == "no-val":
        shutil.rmtree(copy / "val")
    elif damage == "extra-class":
        for part in ("train", "val"):
            shutil.copytree(copy / part / "n00000000", copy / part / "zz-extra")
    elif damage == "renamed":
        (copy / "val" / "n00000009").rename(copy / "val" / "other")
    elif damage == "empty":
        for f in (copy / "train" / "n00000002").iterdir():
            f.unlink()
    else:
        copy = tmp_path / "nowhere"
    for args in (("eval", run_dir, "--subnet", "smallest"),
                 ("export", run_dir, "--smallest", "--out", tmp_path / "never")):
        code, _, err = run_cli(capsys, *args, "--data-dir", copy)
        assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "never").exists() and not (run_dir / "eval" / "test-subnet-smallest.json").exists()


def test_imported_run_without_a_folder_says_how(setup, capsys):
    run_dir, _ = setup
    code, _, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest")
    assert_one_line_error(code, err, "--data-dir DIR", "ImageNet-style")
    code, _, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest", "--split", "val", "--data-dir",
                           setup[1])
    assert_one_line_error(code, err, "no validation hold-out")


def test_import_with_a_folder_records_it(setup, capsys, tmp_path):
    from ofa_deploy.run import read_config

    run_dir, folder = setup
    ckpt = run_dir.parent / "ofa.pth"
    code, _, err = run_cli(capsys, "import-ofa", ckpt, "--out", tmp_path / "bad", "--image-size", 32, "--data-dir",
                           tmp_path / "nowhere")
    assert_one_line_error(code, err, "is not a directory")
    assert not (tmp_path / "bad").exists()
    code, _, err = run_cli(capsys, "import-ofa", ckpt, "--out", tmp_path / "run", "--image-size", 32, "--data-dir",
                           folder)
    assert code == 0, err
    data = read_config(tmp_path / "run")["data"]
    assert data["dataset"] == "imagenet-folder" and data["data_dir"] == str(folder.resolve())
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--subnet", "smallest", "--calib-n", 10,
                             "--workers", 0, "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["data_dir"] == str(folder.resolve())
