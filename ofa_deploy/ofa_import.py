"""Import an OFA-format MobileNetV3 supernet checkpoint into a run directory.

``ofa-deploy import-ofa CHECKPOINT --out RUN``: MIT's ``OFAMobileNetV3`` (the published
``ofa_mbv3_d234_e346_k357_w1.0`` / ``_w1.2`` supernets, or one trained with OFA's code)
holds the same tensors as this project's ``Supernet``; only the names differ. This module

1. loads the file safely (``torch.load(weights_only=True)``: a pickle that needs code to
   load is refused, never run), takes the state dict (bare or under ``state_dict``), drops
   ``module.`` prefixes and reads the older key spellings OFA's own loader accepts
   (``mobile_inverted_conv``; ``bn.bn.``/``bn.``, ``conv.conv.weight``/``conv.weight``,
   ``linear.linear.``/``linear.``);
2. infers the space from the tensors: input channels, classes, width multiplier, kernel
   choices (the chain of kernel-transform matrices), the largest expand ratio and depth;
   the smaller expand ratios and depths are not in the tensors and default to OFA's
   (e 3/4/6, d 2/3/4) unless given;
3. maps every tensor strictly: each checkpoint key used once, each ``Supernet`` key filled,
   every shape equal, every value finite - anything else is one clear ``OfaError``;
4. writes a run directory: ``config.toml`` ([space] with width and image size, [data] with
   no data set and ImageNet normalisation, [import] with the provenance), ``final.pt`` in
   the project's checkpoint format and ``import.json``.

OFA's ResNet and ProxylessNAS supernets, and its specialised subnets (``net.config`` +
weights), are recognised and refused with a message saying so.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import OfaError
from .io import atomic_write_json, sha256_file
from .outputs import IMPORT_FILE, IMPORT_FORMAT
from .space import SearchSpace, make_divisible

IMAGENET_NORMALIZATION = {"dataset": "imagenet", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
OFA_EXPAND_CHOICES = (3, 4, 6)
OFA_DEPTH_CHOICES = (2, 3, 4)
OFA_WIDTHS = (1.0, 1.2)  # the published supernets; preferred when the tensors fit several

# OFA's key (module. stripped, old spellings collapsed) <-> Supernet key. {B}: OFA's block
# number (1 .. 20; block 0 is the fixed first block), {b} = {B} - 1, the Supernet's index.
_TABLE: tuple[tuple[str, str], ...] = (
    ("first_conv.conv.weight", "stem.conv.weight"),
    ("first_conv.bn.{bn}", "stem.bn.{bn}"),
    ("blocks.0.conv.depth_conv.conv.weight", "first_block.dw.weight"),
    ("blocks.0.conv.depth_conv.bn.{bn}", "first_block.dw_bn.{bn}"),
    ("blocks.0.conv.point_linear.conv.weight", "first_block.project.weight"),
    ("blocks.0.conv.point_linear.bn.{bn}", "first_block.project_bn.{bn}"),
    ("blocks.{B}.conv.inverted_bottleneck.conv.weight", "blocks.{b}.expand.weight"),
    ("blocks.{B}.conv.inverted_bottleneck.bn.{bn}", "blocks.{b}.expand_bn.{bn}"),
    ("blocks.{B}.conv.depth_conv.conv.weight", "blocks.{b}.dw.weight"),
    ("blocks.{B}.conv.depth_conv.conv.{kk}_matrix", "blocks.{b}.dw.transforms.{kk}"),
    ("blocks.{B}.conv.depth_conv.bn.{bn}", "blocks.{b}.dw_bn.{bn}"),
    ("blocks.{B}.conv.depth_conv.se.fc.{se}.{wb}", "blocks.{b}.se.{se}.{wb}"),
    ("blocks.{B}.conv.point_linear.conv.weight", "blocks.{b}.project.weight"),
    ("blocks.{B}.conv.point_linear.bn.{bn}", "blocks.{b}.project_bn.{bn}"),
    ("final_expand_layer.conv.weight", "head.final_expand.weight"),
    ("final_expand_layer.bn.{bn}", "head.final_bn.{bn}"),
    ("feature_mix_layer.conv.weight", "head.feature_mix.weight"),
    ("classifier.linear.{wb}", "head.classifier.{wb}"),
)
_FIELDS = {"bn": "weight|bias|running_mean|running_var|num_batches_tracked", "B": "[1-9][0-9]*", "b": "[0-9]+",
           "kk": "[0-9]+to[0-9]+", "se": "reduce|expand", "wb": "weight|bias"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for i, p in enumerate(parts)))


_PATTERNS = tuple((_compile(ofa), ofa, _compile(ours), ours) for ofa, ours in _TABLE)


def ofa_to_ours(key: str) -> str | None:
    """The ``Supernet`` key an OFA key (normalised) fills, None for a key with no place."""
    for pattern, _, _, ours in _PATTERNS:
        m = pattern.fullmatch(key)
        if m:
            values = m.groupdict()
            if "B" in values:
                values["b"] = str(int(values["B"]) - 1)
            return ours.format(**values)
    return None


def ours_to_ofa(key: str) -> str | None:
    """The OFA key (flat spelling) that fills a ``Supernet`` key."""
    for _, ofa, pattern, _ in _PATTERNS:
        m = pattern.fullmatch(key)
        if m:
            values = m.groupdict()
            if "b" in values:
                values["B"] = str(int(values["b"]) + 1)
            return ofa.format(**values)
    return None


@dataclass
class Imported:
    """What ``read_checkpoint`` found: the space, the ``Supernet`` state dict, provenance."""

    space: SearchSpace
    state: dict[str, Any]
    provenance: dict[str, Any]


# -- loading --------------------------------------------------------------------------------

def load_state_dict(path: str | Path) -> dict[str, Any]:
    """The checkpoint's state dict, loaded with ``weights_only=True``: bare or under
    ``state_dict``, ``module.`` prefixes dropped, OFA's older spellings collapsed."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise OfaError(f"checkpoint {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL " in text:  # a class or function to import and call
            found = re.search(r"GLOBAL ([\w.]+)", text)
            raise OfaError(f"checkpoint {path} needs code to load ({found.group(1) if found else 'a pickled object'}"
                           "); import-ofa loads with torch.load(weights_only=True) and runs no code from a file - "
                           "if you trust it, re-save its state dict alone with torch.save") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        raise OfaError(f"checkpoint {path} is not a PyTorch checkpoint "
                       f"({detail.group(1).strip() if detail else _first_line(text)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        raise OfaError(f"checkpoint {path} is truncated or not a PyTorch checkpoint ({_first_line(str(exc))})") \
            from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise OfaError(f"checkpoint {path} holds no state dict (a dict of tensors, bare or under 'state_dict'); "
                       f"found {keys or 'an empty dict'}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise OfaError(f"checkpoint {path} has a non-text key {key!r}")
        name = normalise_key(key)
        if name in out:
            raise OfaError(f"checkpoint {path} holds {name!r} twice (under two spellings, one of them {key!r})")
        out[name] = value
    return out


def normalise_key(key: str) -> str:
    """One spelling per tensor: no ``module.`` prefix, ``.conv.`` for ``.mobile_inverted_conv.``,
    and the flat names (``.bn.``, ``.conv.weight``, ``.linear.``) for the dynamic ones."""
    while key.startswith("module."):
        key = key[len("module."):]
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    key = key.replace(".bn.bn.", ".bn.").replace(".linear.linear.", ".linear.")
    if key.endswith(".conv.conv.weight"):
        key = key[: -len(".conv.conv.weight")] + ".conv.weight"
    return key


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line if len(line) <= 160 else line[:157] + "..."


# -- recognising the network -----------------------------------------------------------------

def check_family(state: dict[str, Any], where: str) -> None:
    """Refuse OFA's other supernets and its specialised subnets, each with what it is."""
    keys = set(state)
    if any(k.startswith("input_stem.") for k in keys):
        raise OfaError(f"{where} is an OFA ResNet supernet (OFAResNets); import-ofa reads OFA MobileNetV3 "
                       "supernets only")
    if "feature_mix_layer.bn.weight" in keys and not any(k.startswith("final_expand_layer.") for k in keys):
        raise OfaError(f"{where} is an OFA ProxylessNAS supernet (OFAProxylessNASNets); import-ofa reads OFA "
                       "MobileNetV3 supernets only")
    needed = ("first_conv.conv.weight", "final_expand_layer.conv.weight", "feature_mix_layer.conv.weight",
              "classifier.linear.weight", "blocks.1.conv.depth_conv.conv.weight")
    missing = [k for k in needed if k not in keys]
    if missing:
        raise OfaError(f"{where} is not an OFA MobileNetV3 supernet: no {missing[0]!r} "
                       f"(first keys: {', '.join(sorted(keys)[:3])})")
    if not any(k.endswith("_matrix") for k in keys) and _block_count(keys) % 5 != 0:
        raise OfaError(f"{where} looks like a specialised OFA subnet (net.config + weights), not a supernet; "
                       "import-ofa reads supernets only for now")


def _block_count(keys: set[str]) -> int:
    """Elastic blocks in the checkpoint (OFA's ``blocks.1`` ... ``blocks.N``)."""
    numbers = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.([0-9]+)\.", k))}
    return max(numbers) if numbers else 0


# -- inferring the space ---------------------------------------------------------------------

def infer_space(state: dict[str, Any], where: str, *, image_size: int = 224, width_mult: float | None = None,
                expand_choices: Sequence[int] | None = None,
                depth_choices: Sequence[int] | None = None) -> tuple[SearchSpace, dict[str, Any]]:
    """The ``SearchSpace`` the tensors describe, and how each choice was found."""
    from .resolution import space_at

    base = SearchSpace()
    stem_w = state["first_conv.conv.weight"]
    in_channels, stem = int(stem_w.shape[1]), int(stem_w.shape[0])
    classifier = state["classifier.linear.weight"]
    num_classes = int(classifier.shape[0])
    n_blocks = _block_count(set(state))
    if n_blocks < base.num_stages or n_blocks % base.num_stages:
        raise OfaError(f"{where} has {n_blocks} elastic blocks; an OFA MobileNetV3 supernet has "
                       f"{base.num_stages} stages of equal depth")
    max_depth = n_blocks // base.num_stages

    def block(b: int, name: str) -> Any:
        key = f"blocks.{b}.conv.{name}"
        if key not in state:
            raise OfaError(f"{where} lacks {key!r}")
        return state[key]

    widths = [stem] + [int(block(1 + s * max_depth, "point_linear.conv.weight").shape[0])
                       for s in range(base.num_stages)]
    widths += [int(state[f"{layer}.conv.weight"].shape[0]) for layer in ("final_expand_layer", "feature_mix_layer")]
    bases = [base.stem_width] + [st.width for st in base.stages] + [base.final_expand, base.feature_mix]

    def scaled(w: float) -> list[int]:
        return [b if w == 1.0 else make_divisible(b * w) for b in bases]

    if width_mult is not None:
        if scaled(width_mult) != widths:
            fits = _widths_that_fit(widths, scaled)
            said = f"the tensors fit width {_w(fits[0])}" if fits else "no width multiplier fits the tensors"
            raise OfaError(f"--width-mult {_w(width_mult)} does not match {where}: its widths (stem, stages, final "
                           f"expand, feature mix) are {widths}, width {_w(width_mult)} gives {scaled(width_mult)}; "
                           f"{said}")
        width, width_how = float(width_mult), "given, checked against the tensors"
    else:
        fits = _widths_that_fit(widths, scaled)
        if not fits:
            raise OfaError(f"{where}: no width multiplier turns OFA MobileNetV3's base widths {bases} into the "
                           f"checkpoint's {widths}")
        width, width_how = fits[0], "inferred from the tensors"

    k_max = int(block(1, "depth_conv.conv.weight").shape[-1])
    kernels = [k_max]
    while True:
        smaller = [int(m.group(1)) for k in state
                   if (m := re.fullmatch(rf"blocks\.1\.conv\.depth_conv\.conv\.{kernels[-1]}to([0-9]+)_matrix", k))]
        if len(smaller) != 1:
            break
        kernels.append(smaller[0])
    kernel_choices = tuple(sorted(kernels))

    space0 = SearchSpace(in_channels=in_channels, num_classes=num_classes, width_mult=width,
                         depth_choices=(max_depth,), expand_choices=(1,))
    mids = [(space0.stage_in_channels(s, i), int(block(1 + s * max_depth + i, "inverted_bottleneck.conv.weight")
                                                 .shape[0]))
            for s in range(base.num_stages) for i in range(max_depth)]
    e_max = next((e for e in range(1, 10) if all(make_divisible(round(c * e)) == m for c, m in mids)), None)
    if e_max is None:
        raise OfaError(f"{where}: the expand convs' widths {[m for _, m in mids][:4]}... are no integer expand "
                       f"ratio of their inputs {[c for c, _ in mids][:4]}...")
    expand = _choices(expand_choices, e_max, OFA_EXPAND_CHOICES, "--expand-choices", "expand ratio")
    depth = _choices(depth_choices, max_depth, OFA_DEPTH_CHOICES, "--depth-choices", "depth")
    space = replace(space0, kernel_choices=kernel_choices, expand_choices=expand[0], depth_choices=depth[0])
    space = space_at(space, image_size)
    how = {"width_mult": width_how, "in_channels": "inferred", "num_classes": "inferred",
           "kernel_choices": "inferred (kernel-transform matrices)", "expand_choices": expand[1],
           "depth_choices": depth[1], "image_size": "given" if image_size != 224 else "default (224)",
           "stages": "OFA MobileNetV3's strides, activations and SE (checked: SE tensors where SE belongs)"}
    return space, how


def _w(width: float) -> str:
    """1.0, 1.2, 1.25: a width as people write it."""
    return f"{width:.1f}" if round(width * 10) == width * 10 else f"{width:g}"


def _widths_that_fit(widths: list[int], scaled: Any) -> list[float]:
    """Width multipliers (two decimals, 0.10 to 4.00) giving ``widths``; OFA's first, then
    the shortest."""
    fits = [w / 100 for w in range(10, 401) if scaled(w / 100) == widths]
    return sorted(fits, key=lambda w: (w not in OFA_WIDTHS, len(f"{w:g}"), abs(w - 1.0)))


def _choices(given: Sequence[int] | None, largest: int, ofa: tuple[int, ...], flag: str,
             what: str) -> tuple[tuple[int, ...], str]:
    if given is not None:
        values = tuple(sorted(set(int(v) for v in given)))
        if not values or values[-1] != largest:
            raise OfaError(f"{flag} {','.join(map(str, values))}: the checkpoint's largest {what} is {largest}")
        return values, f"given (largest {largest} checked against the tensors)"
    if largest in ofa:
        return tuple(v for v in ofa if v <= largest), \
            f"largest {largest} inferred; smaller ones OFA's ({', '.join(map(str, ofa))}), not in the tensors"
    return (largest,), f"largest {largest} inferred; no smaller ones (give {flag} to add them)"


# -- strict mapping --------------------------------------------------------------------------

def map_state(state: dict[str, Any], space: SearchSpace, where: str) -> dict[str, Any]:
    """The ``Supernet(space)`` state dict holding the checkpoint's tensors: every key used,
    every target filled, shapes equal, values finite; ``OfaError`` otherwise."""
    import torch

    from .nn import Supernet

    target = Supernet(space).state_dict()
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = ofa_to_ours(key)
        if name is None or name not in target:
            raise OfaError(f"{where}: key {key!r} has no place in an OFA MobileNetV3 supernet of this space "
                           f"({_space_words(space)})")
        want = target[name]
        if tuple(value.shape) != tuple(want.shape):
            raise OfaError(f"{where}: {key!r} has shape {tuple(value.shape)}, the space needs {tuple(want.shape)} "
                           f"({_space_words(space)})")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise OfaError(f"{where}: {key!r} holds NaN or infinite values")
        out[name] = value.detach().to(dtype=want.dtype).clone()
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        first = ours_to_ofa(missing[0]) or missing[0]
        raise OfaError(f"{where} lacks {len(missing)} tensor(s) the supernet needs, first {first!r} "
                       f"(here {missing[0]!r})")
    for k in target:
        out.setdefault(k, target[k].clone())  # num_batches_tracked: only counts, never used in eval mode
    return out


def _space_words(space: SearchSpace) -> str:
    return (f"width {_w(space.width_mult)}, {space.num_classes} classes, kernels {list(space.kernel_choices)}, "
            f"expand up to {space.expand_choices[-1]}, depth up to {space.max_depth}")


# -- the whole import ------------------------------------------------------------------------

def read_checkpoint(path: str | Path, *, image_size: int = 224, width_mult: float | None = None,
                    expand_choices: Sequence[int] | None = None,
                    depth_choices: Sequence[int] | None = None) -> Imported:
    """Load, recognise, infer and map ``path`` (nothing written)."""
    path = Path(path)
    where = f"checkpoint {path}"
    state = load_state_dict(path)
    check_family(state, where)
    space, how = infer_space(state, where, image_size=image_size, width_mult=width_mult,
                             expand_choices=expand_choices, depth_choices=depth_choices)
    mapped = map_state(state, space, where)
    provenance = {
        "format": IMPORT_FORMAT,
        "source": "OFA MobileNetV3 supernet (ofa.imagenet_classification.elastic_nn.networks.OFAMobileNetV3)",
        "file": str(path.resolve()),
        "file_name": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "tensors": len(state),
        "width_mult": space.width_mult,
        "resolution": space.image_size,
        "num_classes": space.num_classes,
        "in_channels": space.in_channels,
        "normalization": dict(IMAGENET_NORMALIZATION),
        "how": how,
        "bn": "running statistics as imported (OFA's eps 1e-5 assumed)",
    }
    return Imported(space, mapped, provenance)


def import_checkpoint(path: str | Path, out: str | Path, *, image_size: int = 224, width_mult: float | None = None,
                      expand_choices: Sequence[int] | None = None, depth_choices: Sequence[int] | None = None,
                      name: str | None = None, overwrite: bool = False,
                      data_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """``read_checkpoint`` then write the run directory ``out`` (all or nothing); returns
    (out, provenance). ``data_dir``: an ImageNet-style folder (``data.stream``, checked
    against the checkpoint's classes first) recorded as the run's data set
    (``imagenet-folder``), so later commands need no ``--data-dir``."""
    import torch

    from .outputs import IMPORTED_RUN, check_not_input, check_replaceable, staged_output_dir
    from .run import CONFIG, FINAL, IMAGENET_FOLDER, NO_DATASET, write_config

    out = Path(out)
    inputs = [("checkpoint", path)]
    check_not_input(out, inputs)
    check_replaceable(out, IMPORTED_RUN, overwrite=overwrite)
    imported = read_checkpoint(path, image_size=image_size, width_mult=width_mult, expand_choices=expand_choices,
                               depth_choices=depth_choices)
    space, prov = imported.space, imported.provenance
    if data_dir is not None:  # refused before anything is written
        from .data.stream import open_folder

        open_folder(data_dir, size=space.image_size, num_classes=space.num_classes,
                    mean=IMAGENET_NORMALIZATION["mean"], std=IMAGENET_NORMALIZATION["std"])
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    config = {
        "run": {"name": name or out.name, "method": "import-ofa", "seed": 0, "device": "cpu", "created": created,
                "versions": {"ofa_deploy": __version__, "torch": torch.__version__,
                             "python": platform.python_version()},
                "completed": True},
        "data": {"dataset": NO_DATASET, "image_size": space.image_size, "normalization": dict(IMAGENET_NORMALIZATION),
                 **({"dataset": IMAGENET_FOLDER, "data_dir": str(Path(data_dir).expanduser().resolve())}
                    if data_dir is not None else {})},
        "space": space.to_dict(),
        "import": {**{k: prov[k] for k in ("format", "file", "sha256", "width_mult", "resolution", "num_classes")},
                   "normalization": prov["normalization"]["dataset"]},
    }
    with staged_output_dir(out, IMPORTED_RUN, overwrite=overwrite, inputs=inputs) as tmp:
        torch.save({"model": imported.state, "import": prov}, tmp / FINAL)
        write_config(tmp, config)
        atomic_write_json(tmp / IMPORT_FILE, {**prov, "created": created, "config": CONFIG, "checkpoint": FINAL})
    return out, prov
