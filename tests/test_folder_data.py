"""``--dataset folder``: an image folder built from scikit-learn's digits (PNG files at
64x64, 4 classes) through train -> eval -> export -> profile on the CLI, the decoded-tensor
cache, the channel and split rules, unreadable files, and bad folders (one line, exit 2,
nothing written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image

from ofa_deploy.data import folder as folder_mod
from ofa_deploy.data import load_dataset
from ofa_deploy.errors import OfaError

CLASSES = 4
PER_CLASS = 50  # 40 train + 10 val each: 200 PNGs


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path_factory.getbasetemp() / "folder-cache"))
    folder_mod._MEMO.clear()
    yield
    folder_mod._MEMO.clear()


def write_digits(root: Path, *, size: int = 64, per_class: int = PER_CLASS, split: bool = True) -> Path:
    """digits of classes 0..3 as ``size`` x ``size`` greyscale PNGs: every fifth image of a
    class in val/ (``split``), or all in one tree."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    for c in range(CLASSES):
        for j, i in enumerate(np.nonzero(bunch.target == c)[0][:per_class]):
            part = ("val" if j % 5 == 0 else "train") if split else ""
            where = root / part / f"digit{c}"
            where.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).resize((size, size), Image.Resampling.BILINEAR).save(where / f"{i}.png")
    return root


def tiny_folder(root: Path, layout: dict[str, int], *, mode: str = "L", size=(8, 8)) -> Path:
    """``{"train/a": 3, ...}``: that many random PNGs in each folder."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for where, n in layout.items():
        (root / where).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / where / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits-folder"))


def test_train_eval_export_profile_on_a_folder(digit_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "folder", "--data-dir", digit_folder, "--image-size", 64,
                           "--epochs", 1, "--batch-size", 32, "--device", "cpu", "--out", run_dir)
    assert code == 0, err
    said = " ".join(err.split())  # rich wraps the progress line
    assert "4 classes (digit0, digit1, digit2, digit3), 160 train / 40 test images, grey, 64x64 -> 64x64" in said
    import tomllib

    config = tomllib.loads((run_dir / "config.toml").read_text())
    data, found = config["data"], config["data"]["found"]
    assert data["dataset"] == "folder" and data["data_dir"] == str(digit_folder.resolve())
    assert data["data_hash"] == folder_mod.scan(digit_folder).hash and data["image_size"] == 64
    assert config["space"]["image_size"] == 64 and config["space"]["in_channels"] == 1
    assert config["space"]["num_classes"] == CLASSES
    assert found["classes"] == [f"digit{c}" for c in range(CLASSES)] and found["layout"] == "train+val"
    assert found["train_per_class"] == [40] * CLASSES and found["test_per_class"] == [10] * CLASSES
    assert found["channels"] == 1 and found["skipped_unreadable"] == 0
    assert found["sizes_seen"] == {"distinct": 1, "most_common": [64, 64], "min": [64, 64], "max": [64, 64]}

    # eval, export and profile read the folder, its hash and the 64x64 size from the run
    code, out, err = run_cli(capsys, "eval", run_dir, "--subnet", "smallest", "--calib-n", 64, "--device", "cpu",
                             "--quiet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["data_hash"] == data["data_hash"] and result["data_dir"] == data["data_dir"]
    assert len(result["subnets"]) == 1 and 0.0 <= result["subnets"][0]["accuracy"] <= 1.0

    export = tmp_path / "export"
    code, out, err = run_cli(capsys, "export", run_dir, "--smallest", "--target", "cpu", "--bn-images", 64,
                             "--parity-images", 16, "--out", export, "--json")
    assert code == 0, err
    sidecar = json.loads((export / "model.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 1, 64, 64]
    assert sidecar["parity"]["passed"] and sidecar["parity"]["max_abs_diff"] <= sidecar["parity"]["tolerance"]
    assert sidecar["parity"]["top1_agreement"] == 1.0
    assert sidecar["source"]["data_hash"] == data["data_hash"] and sidecar["source"]["dataset"] == "folder"
    assert sidecar["input"]["normalization"]["classes"] == found["classes"]
    assert sidecar["accuracy"]["images"] == 40
    import onnx

    dims = [
        d.dim_value or d.dim_param for d in onnx.load(export / "model.onnx").graph.input[0].type.tensor_type.shape.dim
    ]
    assert dims[1:] == [1, 64, 64]
    from ofa_deploy.cost import macs
    from ofa_deploy.space import SearchSpace

    space = SearchSpace(in_channels=1, num_classes=CLASSES, image_size=64)
    assert sidecar["macs"] == macs(space, space.smallest())

    code, out, err = run_cli(capsys, "profile", export, "--target", "cpu", "--warmup-s", 0, "--min-iterations", 5,
                             "--min-time-s", 0, "--json")
    assert code == 0, err
    profiled = json.loads(out)
    assert profiled["input_shape"][1:] == [1, 64, 64] and profiled["latency_ms"]["p50"] > 0

    # catalog build reads the same folder and size: its finalist's export takes 64x64 too
    catalog = tmp_path / "cat.db"
    code, out, err = run_cli(capsys, "catalog", "build", run_dir, "--target", "cpu", "--catalog", catalog, "--n", 2,
                             "--finalists", 1, "--calib-images", 64, "--no-measure", "--json")
    assert code == 0, err
    exported = [json.loads(p.read_text()) for p in (tmp_path / "artifacts").rglob("model.json")]
    assert len(exported) == 1 and exported[0]["input"]["shape"][1:] == [1, 64, 64]
    # a run without a hold-out chooses on one seeded half of its 40 val/ images and reports on the other
    assert exported[0]["source"]["data_hash"] == data["data_hash"] and exported[0]["accuracy"]["images"] == 20
    assert exported[0]["accuracy"]["chosen_on"].startswith("test:half1")

    # the folder changed since: reloading the run's data is refused
    victim = next((digit_folder / "val" / "digit0").iterdir())
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    try:
        code, out, err = run_cli(capsys, "export", run_dir, "--largest", "--out", tmp_path / "export2")
        assert_one_line_error(code, err, "changed since the run was trained", data["data_hash"])
        assert not (tmp_path / "export2").exists()
    finally:
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_decoded_once_then_read_from_the_cache(digit_folder):
    first = folder_mod.decode(digit_folder, 32)
    assert first.images.shape == (CLASSES * PER_CLASS, 1, 32, 32) and first.images.dtype == torch.uint8
    cached = list((Path(os.environ["OFA_DEPLOY_CACHE"]) / "folders").glob(f"{first.listing.hash}-32px.pt"))
    assert len(cached) == 1
    folder_mod._MEMO.clear()
    second = folder_mod.decode(digit_folder, 32)
    assert second.cached and torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    train = load_dataset("folder", "train", data_dir=digit_folder, image_size=32)
    test = load_dataset("folder", "test", data_dir=digit_folder, image_size=32)
    assert (len(train), len(test)) == (160, 40) and train.classes == tuple(f"digit{c}" for c in range(CLASSES))
    # normalised with the training split's own statistics
    assert abs(train.images.mean().item()) < 1e-4 and abs(train.images.std().item() - 1) < 1e-3


def test_images_follow_torchvision_resize_and_centre_crop(tmp_path):
    import torchvision.transforms as T

    root = tmp_path / "f"
    tiny_folder(root, {"a": 2, "b": 2}, mode="RGB", size=(50, 30))
    grey = root / "b" / "grey.png"
    Image.fromarray(np.arange(50 * 30, dtype=np.uint32).reshape(30, 50).astype(np.uint8), "L").save(grey)
    decoded = folder_mod.decode(root, 24)
    assert decoded.images.shape == (5, 3, 24, 24)  # one RGB file makes the data set RGB
    listing = decoded.listing
    reference = T.Compose([T.Resize(24), T.CenterCrop(24), T.PILToTensor()])
    for i in range(len(listing.files)):
        with Image.open(listing.path(i)) as img:
            assert torch.equal(decoded.images[i], reference(img.convert("RGB"))), listing.files[i]
    g = listing.files.index(("all", "b", "grey.png"))
    assert torch.equal(decoded.images[g][0], decoded.images[g][2])
    assert decoded.sizes == {"distinct": 1, "most_common": [50, 30], "min": [50, 30], "max": [50, 30]}


def test_one_tree_is_split_per_class_by_a_fixed_seed(tmp_path):
    root = tiny_folder(tmp_path / "f", {"cat": 10, "dog": 7})
    a = load_dataset("folder", "test", data_dir=root, val_fraction=0.3, seed=1)
    b = load_dataset("folder", "test", data_dir=root, val_fraction=0.3, seed=2)
    assert torch.equal(a.images, b.images)  # the run's seed does not move the held-out images
    assert a.labels.tolist().count(0) == 3 and a.labels.tolist().count(1) == 2
    train = load_dataset("folder", "train", data_dir=root, val_fraction=0.3)
    assert len(train) == 12 and train.in_channels == 1
    found = folder_mod.report(root, image_size=32, val_fraction=0.3)
    assert found["layout"] == "one tree" and found["test_per_class"] == [3, 2]


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tmp_path, capsys):
    root = tiny_folder(tmp_path / "f", {"a": 4, "b": 4})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "notes.txt").write_text("not an image")
    train = load_dataset("folder", "train", data_dir=root, val_fraction=0.25)
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s) of 10" in err and "a/broken.jpg" in err and "b/truncated.png" in err
    found = folder_mod.report(root, image_size=32, val_fraction=0.25)
    assert found["skipped_unreadable"] == 2 and found["ignored_files"] == 1
    assert found["train_images"] + found["test_images"] == 8 and len(train) == found["train_images"]


def test_a_changed_folder_gets_a_new_hash_and_is_refused_for_the_old_one(tmp_path):
    root = tiny_folder(tmp_path / "f", {"a": 3, "b": 3})
    before = folder_mod.scan(root).hash
    tiny_folder(root, {"b/extra": 1})
    after = folder_mod.scan(root).hash
    assert after != before
    with pytest.raises(OfaError, match="changed since the run was trained"):
        load_dataset("folder", "train", data_dir=root, data_hash=before)


BAD_FOLDERS = [
    ({}, [], "holds no images"),
    ({"only": 3}, [], "has one class (only)"),
    ({"train/a": 2, "train/b": 0, "val/a": 1, "val/b": 1}, [], "class folder train/b holds no images"),
    ({"train/a": 2, "train/b": 2, "val/a": 1, "val/c": 1}, [], "only in train/: b; only in val/: c"),
    ({"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1}, ["--val-fraction", "0.3"], "--val-fraction applies"),
    ({"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1, "test/a": 1, "test/b": 1}, [], "both val/ and test/"),
    ({"a": 3, "b": 1}, [], "class b has 1 readable image"),
    ({"a": 3, "b": 0, "b/x": 0}, [], "class folder b holds no images"),
]


@pytest.mark.parametrize("layout, extra, needle", BAD_FOLDERS)
def test_bad_folders_one_line_exit_2_nothing_written(tmp_path, capsys, layout, extra, needle):
    root = tiny_folder(tmp_path / "data", layout)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "folder", "--data-dir", root, *extra, "--epochs", 1,
                           "--out", out)
    assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_a_class_of_unreadable_files_only_is_refused(tmp_path, capsys):
    root = tiny_folder(tmp_path / "data", {"a": 3, "b": 0})
    (root / "b" / "x.png").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "train", "--dataset", "folder", "--data-dir", root, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "class b has no readable image", "b/x.png")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "folder"], "--dataset folder needs --data-dir"),
    (["--dataset", "digits", "--val-fraction", "0.2"], "--val-fraction applies to --dataset folder only"),
    (["--dataset", "folder", "--data-dir", "{tmp}/nowhere"], "is not a directory"),
    (["--dataset", "folder", "--data-dir", "{tmp}", "--preset", "paper"], "give --epochs"),
])
def test_folder_option_errors(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *[a.format(tmp=tmp_path) for a in args], "--out", out)
    assert_one_line_error(code, err, needle)
    assert not out.exists()
