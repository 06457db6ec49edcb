"""The preprocessing record: what a device must do to an image before the network sees it.

Every model file ofa-deploy writes (``export``, ``catalog build``, ``quickstart``) carries
this record twice: as ``"preprocessing"`` in the export's ``model.json`` and as the JSON
string of the ``ofa_deploy.preprocessing`` entry in the ONNX file's metadata
(``metadata_props``), so the ONNX file alone is enough. ``catalog select --json`` hands it
out with the file. It is built here, from the run's config and its data set, by
``preprocessing_record`` (the one place); ``ofa_deploy.schemas.check_preprocessing`` checks
it wherever it is read back. Fields (version 1)::

    version     1
    dataset     the data set the network was trained on (``digits``, ``cifar10``, ``folder``...)
    size        the network's input height = width in pixels (the exported resolution)
    layout      "NCHW": batch, channels, height, width
    dtype       "float32"
    channels    1 (grey) or 3 (RGB)
    color       "grey" or "RGB" (channel order R, G, B); a colour image for a grey network is
                converted to grey first (luma), a grey one for an RGB network replicated
    resize      the resize rule, in words, that made the training images this size: the whole
                image to size x size for the built-in data sets (bilinear, antialiased, which
                changes nothing when enlarging), shorter side to size then a centre crop for
                ``folder`` data; at an
                exported resolution other than the run's image size, that rule at the run's
                size followed by a bilinear (antialiased) resize to ``size``
    resize_steps  the same as data: a list of {"op": "resize", "size": [h, w], "filter":
                "bilinear", "antialias": true} / {"op": "resize_shorter", "size": s, ...} /
                {"op": "center_crop", "size": [h, w]}
    scale       255.0: 8-bit pixel values are divided by it (to [0, 1]) before normalising
    mean, std   per channel: input[c] = (pixel[c] / scale - mean[c]) / std[c]
    formula     that formula, in words
    classes     class names: output (logit) index i is classes[i]

An imported supernet (``import-ofa``, no data set here) gets OFA's ImageNet evaluation
transform (shorter side to ceil(size / 0.875), centre crop), the normalisation the import
recorded, and its outputs named by index (a checkpoint holds no class names).

No torch at import; ``preprocessing_record`` reads the data set's statistics through
``ofa_deploy.data`` (which does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PREPROCESSING_VERSION = 1
ONNX_METADATA_KEY = "ofa_deploy.preprocessing"
FORMULA = "input[c] = (pixel[c] / scale - mean[c]) / std[c]"

# Class names of the built-in data sets, in label order (``folder`` data sets name their own).
_DIGITS = tuple(str(i) for i in range(10))
BUILTIN_CLASSES: dict[str, tuple[str, ...]] = {
    "digits": _DIGITS,
    "mnist": _DIGITS,
    "fmnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": (
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
        "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
        "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
        "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
        "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
        "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
        "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
        "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
        "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
        "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
        "worm"),
}
# The size the built-in data sets' images come in (before the resize to the run's image size);
# only named in the record's words.
NATIVE_SIZE = {"digits": 8, "mnist": 28, "fmnist": 28, "cifar10": 32, "cifar100": 32}


def preprocessing_record(config: dict[str, Any], *, resolution: int | None = None, data: Any = None,
                         data_dir: str | Path | None = None) -> dict[str, Any]:
    """The preprocessing record (fields: this module's docstring) of a model exported from the
    run whose ``config.toml`` is ``config``, at input size ``resolution`` (default: the run's
    image size). ``data``: the run's loaded data (anything with ``name``, ``in_channels``,
    ``mean``, ``std`` and ``classes``, e.g. an ``ImageSet`` or ``ExportImages``) - saves
    loading it again; else the data set's statistics are read (``data_dir`` overrides the
    run's folder)."""
    from ..errors import OfaError
    from ..run import IMAGENET_FOLDER, NO_DATASET
    from .datasets import IMAGE_SIZE, run_data_options
    from .folder import FOLDER

    dataset = (config.get("data") or {}).get("dataset")
    if not dataset:
        raise OfaError("the run's config.toml names no [data] dataset; its preprocessing is unknown")
    run_size = int((config.get("space") or {}).get("image_size", IMAGE_SIZE))
    size = int(resolution if resolution is not None else run_size)
    if dataset in (NO_DATASET, IMAGENET_FOLDER):
        return _imported_record(config, size, getattr(data, "classes", None))
    if data is not None:
        channels, mean, std = int(data.in_channels), list(data.mean), list(data.std)
        classes = getattr(data, "classes", None)
    else:
        channels, mean, std, classes = _statistics(dataset, run_data_options(config, data_dir))
    if dataset != FOLDER:
        classes = BUILTIN_CLASSES.get(dataset, classes)
    if not classes:
        raise OfaError(f"data set {dataset} names no classes; its preprocessing record would be incomplete")
    steps: list[dict[str, Any]]
    if dataset == FOLDER:
        steps = [{"op": "resize_shorter", "size": run_size, "filter": "bilinear", "antialias": True},
                 {"op": "center_crop", "size": [run_size, run_size]}]
        words = f"shorter side resized to {run_size} (bilinear, antialiased), centre crop {run_size}x{run_size}"
    else:  # (antialiasing changes nothing when enlarging: one rule for every source size)
        steps = [{"op": "resize", "size": [run_size, run_size], "filter": "bilinear", "antialias": True}]
        words = f"whole image resized to {run_size}x{run_size} (bilinear, antialiased; no crop)"
    if size != run_size:
        steps.append({"op": "resize", "size": [size, size], "filter": "bilinear", "antialias": True})
        words += f", then resized to {size}x{size} (bilinear, antialiased)"
    if dataset != FOLDER and NATIVE_SIZE.get(dataset) == run_size:
        words += f" ({dataset}'s own images are {run_size}x{run_size})"
    return {
        "version": PREPROCESSING_VERSION,
        "dataset": dataset,
        "size": size,
        "layout": "NCHW",
        "dtype": "float32",
        "channels": channels,
        "color": "grey" if channels == 1 else "RGB",
        "resize": words,
        "resize_steps": steps,
        "scale": 255.0,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "formula": FORMULA,
        "classes": [str(c) for c in classes],
    }


def _imported_record(config: dict[str, Any], size: int, classes: Any = None) -> dict[str, Any]:
    """The record of an imported supernet (``import-ofa``: no data set here): OFA's ImageNet
    evaluation transform - shorter side to ceil(size / 0.875), centre crop - and the
    normalisation the import recorded; class names are not in a checkpoint, so output i is
    named by its index, unless ``classes`` (the class folders of the ImageNet-style folder it
    was measured on, ``data.stream``) name them."""
    import math

    from ..errors import OfaError

    data, space = config.get("data") or {}, config.get("space") or {}
    norm = data.get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    channels = int(space.get("in_channels", 3))
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels):
        raise OfaError("the run's [data] normalization gives no mean/std per channel; its preprocessing is unknown")
    resize = math.ceil(size / 0.875)
    return {
        "version": PREPROCESSING_VERSION,
        "dataset": str(norm.get("dataset") or "imported"),
        "size": size,
        "layout": "NCHW",
        "dtype": "float32",
        "channels": channels,
        "color": "grey" if channels == 1 else "RGB",
        "resize": f"shorter side resized to {resize} (bilinear, antialiased), centre crop {size}x{size} "
                  "(OFA's ImageNet evaluation transform)",
        "resize_steps": [{"op": "resize_shorter", "size": resize, "filter": "bilinear", "antialias": True},
                         {"op": "center_crop", "size": [size, size]}],
        "scale": 255.0,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "formula": FORMULA,
        "classes": [str(c) for c in classes] if classes and len(classes) == int(space.get("num_classes", 1000))
        else [str(i) for i in range(int(space.get("num_classes", 1000)))],
    }


def _statistics(dataset: str, options: dict[str, Any]) -> tuple[int, list[float], list[float], Any]:
    from .datasets import _folder_split, dataset_info
    from .folder import FOLDER

    if dataset == FOLDER:
        split = _folder_split("train", **options)
        return split.in_channels, list(split.mean), list(split.std), list(split.classes)
    info = dataset_info(dataset)
    return info.in_channels, list(info.mean), list(info.std), None


def normalization_of(record: dict[str, Any]) -> dict[str, Any]:
    """The older ``input.normalization`` entry of ``model.json`` (dataset, mean, std, classes,
    resize), kept beside the full record for readers that know only it."""
    return {"dataset": record["dataset"], "mean": record["mean"], "std": record["std"],
            "classes": record["classes"], "resize": record["resize"]}
