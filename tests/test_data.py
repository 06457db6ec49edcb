"""ofa_deploy.data: datasets as tensors, splits, IDX folders, the cache, batched augmentation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ofa_deploy.data import DATASETS, augment, load_dataset
from ofa_deploy.data.augment import POLICIES, AugmentPolicy, apply, sample_params
from ofa_deploy.errors import OfaError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))


def _write_idx(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A fake MNIST in the original IDX format; returns the train images and labels written."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    out = None
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        opener = gzip.open if gz else open
        suffix = ".gz" if gz else ""
        with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.numpy().tobytes())
        with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.numpy().tobytes())
        if prefix == "train":
            out = (images, labels.long())
    return out


def test_digits_shapes_and_normalisation():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1437, 1, 32, 32) and test.images.shape == (360, 1, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert (train.num_classes, train.in_channels, train.name) == (10, 1, "digits")
    assert abs(train.images.mean().item()) < 0.01 and abs(train.images.std().item() - 1) < 0.01
    assert set(test.labels.tolist()) == set(range(10))
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_val_split_is_held_out_and_seeded():
    full = load_dataset("digits", "train")
    train = load_dataset("digits", "train", val_size=200, seed=3)
    val = load_dataset("digits", "val", val_size=200, seed=3)
    assert len(train) == 1237 and len(val) == 200
    rows = lambda ds: {tuple(r.tolist()) for r in ds.images.flatten(1)}  # noqa: E731
    assert not rows(train) & rows(val)
    assert rows(train) | rows(val) == rows(full)
    other = load_dataset("digits", "val", val_size=200, seed=4)
    assert not torch.equal(other.images, val.images)
    with pytest.raises(OfaError, match="val_size"):
        load_dataset("digits", "val")
    with pytest.raises(OfaError, match="leaves no training"):
        load_dataset("digits", "train", val_size=5000)


def test_subset_is_first_of_seeded_permutation():
    a = load_dataset("digits", "train", subset=50, seed=0)
    b = load_dataset("digits", "train", subset=100, seed=0)
    assert len(a) == 50 and torch.equal(a.images, b.images[:50])
    assert not torch.equal(a.labels, load_dataset("digits", "train", subset=50, seed=1).labels)
    with pytest.raises(OfaError, match="exceeds"):
        load_dataset("digits", "test", subset=361)


def test_bad_names():
    with pytest.raises(OfaError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(OfaError, match="unknown split"):
        load_dataset("digits", "dev")


def test_idx_gz_folder_and_cache(tmp_path):
    images, labels = _write_idx(tmp_path / "idx")
    ds = load_dataset("mnist", "train", data_dir=tmp_path / "idx")
    assert ds.images.shape == (30, 1, 32, 32) and torch.equal(ds.labels, labels)
    expected = F.interpolate(images.unsqueeze(1).float() / 255, size=(32, 32), mode="bilinear", align_corners=False)
    mean, std = DATASETS["mnist"].mean[0], DATASETS["mnist"].std[0]
    torch.testing.assert_close(ds.images, (expected - mean) / std)
    cached = list((tmp_path / "cache" / "tensors").glob("mnist-*.pt"))
    assert len(cached) == 1
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "idx")) == 10
    # Uncompressed IDX files are accepted as well.
    _write_idx(tmp_path / "raw", gz=False)
    assert len(load_dataset("fmnist", "train", data_dir=tmp_path / "raw")) == 30


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(OfaError, match="looked in .*--download"):
        load_dataset("fmnist", "train", data_dir=tmp_path)
    with pytest.raises(OfaError, match="does not exist"):
        load_dataset("mnist", "train", data_dir=tmp_path / "nope")
    bad = tmp_path / "bad"
    _write_idx(bad)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(OfaError, match="gzip"):
        load_dataset("mnist", "train", data_dir=bad)
    assert not list((tmp_path / "cache").rglob("train-images-idx3-ubyte"))
    truncated = tmp_path / "truncated"
    _write_idx(truncated, gz=False)
    data = (truncated / "train-images-idx3-ubyte").read_bytes()
    (truncated / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(OfaError, match="complete"):
        load_dataset("mnist", "train", data_dir=truncated)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_folder():
    ds = load_dataset("fmnist", "test", data_dir=FMNIST_DIR, subset=500)
    assert ds.images.shape == (500, 1, 32, 32) and ds.num_classes == 10
    assert abs(ds.images.mean().item()) < 0.1


def test_flip_equals_torch_flip():
    x = torch.randn(4, 3, 32, 32)
    theta = sample_params(AugmentPolicy("f", flip=True), 4, torch.Generator().manual_seed(0))
    flipped = theta[:, 0, 0] < 0
    out = apply(x, theta)
    torch.testing.assert_close(out[flipped], x[flipped].flip(-1))
    torch.testing.assert_close(out[~flipped], x[~flipped])


def test_crop_equals_slice_and_resize():
    x = torch.randn(2, 1, 32, 32)
    theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]).repeat(2, 1, 1)  # centre 16x16 crop
    expected = F.interpolate(x[..., 8:24, 8:24], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(apply(x, theta)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_crop_parameters_follow_policy():
    policy = POLICIES["ofa"]
    theta = sample_params(policy, 5000, torch.Generator().manual_seed(0))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert (w <= 1).all() and (h <= 1).all() and (w * h >= 0.08 * 0.74).all()
    assert ((theta[:, :, 2].abs() + torch.stack([w, h], 1)) <= 1 + 1e-6).all()  # crop inside the image
    assert 0.45 < (theta[:, 0, 0] < 0).float().mean() < 0.55
    x = torch.randn(3, 1, 32, 32)
    assert augment(x, POLICIES["none"], torch.Generator()) is x
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(augment(x, policy, g1), augment(x, policy, g2))
