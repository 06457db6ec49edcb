"""4 F-MNIST classes as 64x64 PNGs: DIR/train/<class>/ (400 each) and DIR/val/<class>/ (100 each)."""
import sys
from pathlib import Path

from PIL import Image

from ofa_deploy.data.datasets import DATASETS, _raw_split

out = Path(sys.argv[1])
names = {0: "tshirt", 1: "trouser", 7: "sneaker", 8: "bag"}
for split, n in (("train", 400), ("test", 100)):
    images, labels = _raw_split(DATASETS["fmnist"], split, "/usr/share/datasets/fashion-mnist", False)
    for c, name in names.items():
        idx = (labels == c).nonzero().flatten()[:n]
        d = out / ("train" if split == "train" else "val") / name
        d.mkdir(parents=True, exist_ok=True)
        for i in idx.tolist():
            Image.fromarray(images[i, 0].numpy(), "L").resize((64, 64), Image.Resampling.BILINEAR).save(
                d / f"{i:05d}.png"
            )
