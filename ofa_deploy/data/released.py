"""The paper's released data protocol (``--data-protocol released``), for 1-channel sets.

What the released code's F-MNIST provider does, in ofa-deploy's device-tensor form:

* validation: 10,000 of the 60,000 training images held out - the first sixth of
  ``torch.randperm(60000)`` from a generator seeded with its ``DataProvider.VALID_SEED``
  (2147483647), whatever the run's seed, so every run holds out the same images (the
  same ones as the released code's ``random_sample_valid_set``); training uses the other
  50,000. Other 1-channel sets hold out the same sixth (MNIST: 10,000; digits: 239);
* no normalisation: pixels stay in [0, 1] (``ToTensor`` only);
* training images at 32x32 (the released ``image_size``; its ``RandomResizedCrop(32)``
  upsamples the 28x28 crop; ``--image-size`` changes it), stored resized once so
  augmentation stays batched on the device (a crop of the resized image rather than a
  resize of the crop: bilinear either way); the ``released`` augmentation policy adds crop
  8-100 %, flip and brightness;
* validation and test images at their native size, un-resized (28x28 for F-MNIST), as the
  released ``build_valid_transform``. The network is fully convolutional with a global
  pool, so it runs at 28x28; MACs and buckets stay counted at the training 32x32.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import OfaError
from .imageset import ImageSet

VALID_SEED = 2147483647  # the released code's DataProvider.VALID_SEED


def held_out(n: int) -> int:
    """Images the released protocol holds out of ``n`` training images (10,000 of 60,000)."""
    return n // 6


def load_released(info, split: str, *, read_raw: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
                  subset: int | None, val_size: int, seed: int, device, image_size: int) -> ImageSet:
    """``load_dataset(..., protocol="released")``: see the module docstring. ``val`` is the
    first ``val_size`` held-out images; ``train`` the rest, whatever ``val_size`` is;
    ``subset`` keeps the first N of a ``seed`` permutation, as the default protocol.
    ``read_raw("train" | "test")``: the data set's uint8 images and labels of that split."""
    if info.in_channels != 1:
        raise OfaError(f"--data-protocol released follows the released code's F-MNIST provider and applies to "
                       f"1-channel datasets only, not {info.name}")
    raw_images, raw_labels = read_raw("test" if split == "test" else "train")
    n = raw_labels.shape[0]
    if split == "test":
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if subset is not None \
            else torch.arange(n)
    else:
        held = held_out(n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(VALID_SEED))
        if split == "val":
            if val_size > held:
                raise OfaError(f"val_size={val_size} exceeds the {held} images the released protocol holds out of "
                               f"{info.name}")
            index = perm[:val_size]
        else:
            index = perm[held:]
            if subset is not None:
                index = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]
    if subset is not None:
        if subset > len(index):
            raise OfaError(f"subset={subset} exceeds the {len(index)} images of the {info.name} {split} split")
        index = index[:subset]
    x = raw_images[index].to(device).float().div_(255.0)
    if split == "train" and (x.shape[-1] != image_size or x.shape[-2] != image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = raw_labels[index].to(device=device, dtype=torch.int64)
    c = info.in_channels
    return ImageSet(info.name, split, x.contiguous(), labels, info.num_classes, c, (0.0,) * c, (1.0,) * c)
