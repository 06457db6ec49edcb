"""Datasets as device tensors and batched augmentation (needs torch).

>>> from ofa_deploy.data import load_dataset
>>> ds = load_dataset("digits", "train")          # ImageSet: .images (N,1,32,32) float32, .labels (N,)
"""

from .augment import AugmentPolicy, augment, default_policy, resolve_policy
from .datasets import DATASETS, IMAGE_SIZE, DatasetInfo, dataset_info, load_dataset
from .imageset import ImageSet, cache_dir

__all__ = [
    "DATASETS",
    "IMAGE_SIZE",
    "AugmentPolicy",
    "DatasetInfo",
    "ImageSet",
    "augment",
    "cache_dir",
    "dataset_info",
    "default_policy",
    "load_dataset",
    "resolve_policy",
]
