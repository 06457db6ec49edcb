"""ImageNet-style folders and imported OFA supernets for the streaming folder mode's tests
(and ``benchmarks/bench_stream.py``).

``make_imagenet_folder`` writes DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg from
scikit-learn's bundled 8x8 digits (classes 0-9) or, for more classes, Fashion-MNIST's IDX
files (classes beyond 10 are the same images mirrored, so 20 classes stay separable),
upsampled to varied sizes and coloured, so the resize/centre-crop path is exercised.
``imported_run`` saves a seeded random ``OFAMobileNetV3`` as OFA does and imports it.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _source_images(classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grey images (N, H, W) and labels (N,) with ``classes`` classes."""
    if classes <= 10 and not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        keep = bunch.target < classes
        return images[keep], bunch.target[keep]
    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:20000]
    with gzip.open(FMNIST / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:20000].astype(np.int64)
    if classes <= 10:
        keep = labels < classes
        return images[keep], labels[keep]
    mirrored = images[:, :, ::-1]
    images, labels = np.concatenate([images, mirrored]), np.concatenate([labels, labels + 10])
    keep = labels < classes
    return images[keep], labels[keep]


def make_imagenet_folder(root: Path, *, classes: int = 10, train_per_class: int = 8, val_per_class: int = 4,
                         seed: int = 0, sizes: tuple[int, int] = (40, 96)) -> Path:
    """Write the folder (JPEGs of random sizes in ``sizes``, aspect ratios 3:4 to 4:3)."""
    from PIL import Image

    images, labels = _source_images(classes)
    rng = random.Random(seed)
    names = [f"n{i:08d}" for i in range(classes)]  # ImageNet's wnid-like folder names
    for part, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / part / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            pool = np.flatnonzero(labels == c).tolist()
            for k in range(per_class):
                grey = images[rng.choice(pool)]
                h = rng.randint(*sizes)
                w = max(sizes[0], min(sizes[1], int(h * rng.uniform(0.75, 1.33))))
                tint = np.array([rng.uniform(0.6, 1.0) for _ in range(3)])
                rgb = (grey[..., None] * tint).astype(np.uint8)
                Image.fromarray(rgb, "RGB").resize((w, h), Image.BILINEAR).save(folder / f"{part}_{c}_{k}.JPEG",
                                                                                 quality=90)
    return root


def imported_run(tmp: Path, *, classes: int = 10, size: int = 32, width: float = 1.0, seed: int = 0) -> Path:
    """``import-ofa`` of a seeded random OFA supernet saved as OFA saves it."""
    from ofa_deploy.cli import main
    from tests.test_ofa_conformance import make_ofa_supernet, save_like_ofa

    net = make_ofa_supernet(width, classes, size=size, seed=seed)
    ckpt = tmp / "ofa.pth"
    save_like_ofa(net, ckpt)
    run_dir = tmp / "run"
    code = main(["import-ofa", str(ckpt), "--out", str(run_dir), "--image-size", str(size)])
    assert code == 0
    return run_dir
