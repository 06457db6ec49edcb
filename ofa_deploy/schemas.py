"""The shape of every file ofa-deploy reads back: one validator per kind, shared by every reader.

``check_config`` (a run's ``config.toml``), ``check_summary`` (``summary.json``),
``check_eval`` (``eval/NAME.json``), ``check_sidecar`` (an export's ``model.json``),
``check_preprocessing`` (its preprocessing record, ``ofa_deploy.data.preprocessing``) and
``check_profile_result`` (one ``profile --json`` result, also what ``catalog import``
takes). Each returns the data unchanged or raises one ``OfaError`` naming the file and the
key at fault, so a hand-edited or damaged file never surfaces as a ``KeyError`` or a
``TypeError`` deep inside a command. Keys not listed are allowed (newer writers may add
some). No torch; runs on Python 3.8.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

from .errors import OfaError
from .validate import MAX_SEED

Check = Callable[[Any], bool]


def _num(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> Check:
    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > lo if lo_open else v >= lo) and v <= hi)
    return ok


def _int(lo: int = 0, hi: int = MAX_SEED) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _opt(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _list(check: Check, max_len: int = 10_000_000) -> Check:
    return lambda v: isinstance(v, list) and len(v) <= max_len and all(check(x) for x in v)


STR: Check = lambda v: isinstance(v, str)  # noqa: E731
BOOL: Check = lambda v: isinstance(v, bool)  # noqa: E731
DICT: Check = lambda v: isinstance(v, dict)  # noqa: E731
COUNT = _int()
NONNEG = _num(0.0)
FRACTION = _num(0.0, 1.0)
POSITIVE = _num(0.0, lo_open=True)

# train.amp: false = fp32 (the key was a flag before it took a precision), true = old "mixed precision"
_AMP: Check = lambda v: isinstance(v, bool) or v in ("bf16", "fp16")  # noqa: E731

_WORDS = {STR: "a string", BOOL: "true or false", DICT: "an object/table", COUNT: "a non-negative integer",
          NONNEG: "a finite number >= 0", FRACTION: "a number between 0 and 1",
          POSITIVE: "a finite number > 0"}


def _fields(data: Any, where: str, required: Dict[str, Check], optional: Dict[str, Check],
            prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise OfaError(f"{where}{' key ' + repr(prefix.rstrip('.')) if prefix else ''} must be an object/table, "
                       f"got {type(data).__name__}")
    for key in required:
        if key not in data:
            raise OfaError(f"{where}: missing key '{prefix}{key}'")
    for key, check in {**required, **optional}.items():
        if key in data and not check(data[key]):
            word = _WORDS.get(check, "of another type or range")
            raise OfaError(f"{where}: key '{prefix}{key}' must be {word}, got {_short(data[key])}")
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


# -- config.toml ----------------------------------------------------------------------------
def check_config(config: Any, where: str) -> dict:
    """A run's ``config.toml``: [run], [data], [space] (checked by ``SearchSpace.from_dict``), [train]."""
    from .space import SearchSpace

    _fields(config, where, {"space": DICT}, {"run": DICT, "data": DICT, "train": DICT})
    # runs made before seeds were limited to [0, 2**64) may hold a negative one: still readable
    _fields(config.get("run", {}), where, {}, {"name": STR, "method": STR, "seed": _int(-2**63, MAX_SEED),
                                               "device": STR, "completed": BOOL}, "run.")
    _fields(config.get("data", {}), where, {}, {"dataset": STR, "data_dir": STR, "train_subset": COUNT,
                                                "test_subset": COUNT, "val_size": COUNT, "image_size": COUNT,
                                                "val_fraction": FRACTION, "data_hash": STR, "found": DICT}, "data.")
    _fields(config.get("train", {}), where, {}, {
        "method": STR, "per_batch": COUNT, "balance": STR, "subnet": STR, "epochs": COUNT,
        "ps_epochs": _list(COUNT, 6), "preset": STR, "lr_schedule": STR, "batch_size": _int(1),
        "lr": _num(0.0, 10.0, lo_open=True), "momentum": FRACTION, "nesterov": BOOL, "weight_decay": NONNEG,
        "warmup_epochs": COUNT, "kd_ratio": NONNEG, "amp": _AMP, "augment": STR, "grad_accum": _int(1),
        "resolutions": _list(_int(8, 4096), 32),
        "fidelity": STR, "ps_lr": STR, "teacher": STR, "sort": STR, "data_protocol": STR, "macs_stem": _int(1, 3),
    }, "train.")
    SearchSpace.from_dict(config["space"], f"{where} [space]")
    return config


# -- summary.json ---------------------------------------------------------------------------
_SUMMARY = {"epochs": COUNT, "train_wall_time_s": NONNEG, "final_train_acc": _opt(FRACTION)}


def check_summary(data: Any, where: str, *, complete: bool = False) -> dict:
    """A finished run's ``summary.json``; ``complete``: every key ``train`` prints must be there
    (a report needs only the wall time)."""
    required = _SUMMARY if complete else {"train_wall_time_s": NONNEG}
    return _fields(data, where, required, {**_SUMMARY, "completed": BOOL, "final_train_loss": _opt(NONNEG),
                                           "images_per_s": _opt(NONNEG), "method": STR, "dataset": STR})


# -- eval/NAME.json -------------------------------------------------------------------------
_EVAL_SUBNET = (({"mflops": NONNEG, "accuracy": FRACTION}),
                {"bucket": _opt(NONNEG), "text": STR, "macs": COUNT, "params": COUNT, "loss": _opt(NONNEG),
                 "subnet": DICT})
_EVAL_BUCKET = ({"mflops": NONNEG, "n": COUNT},
                {"mean": _opt(FRACTION), "std": _opt(NONNEG), "min": _opt(FRACTION), "max": _opt(FRACTION)})


def check_eval(data: Any, where: str) -> dict:
    """A population evaluation: ``subnets`` (mflops, accuracy per subnet) and ``buckets``."""
    _fields(data, where, {"subnets": _list(DICT), "buckets": _list(DICT)},
            {"name": STR, "split": STR, "params": _opt(DICT), "test_images": COUNT, "run": STR})
    for i, s in enumerate(data["subnets"]):
        _fields(s, where, *_EVAL_SUBNET, prefix=f"subnets[{i}].")
    for i, b in enumerate(data["buckets"]):
        _fields(b, where, *_EVAL_BUCKET, prefix=f"buckets[{i}].")
        if b["n"] and b.get("mean") is None:
            raise OfaError(f"{where}: key 'buckets[{i}].mean' is missing for a bucket with {b['n']} subnets")
    return data


# -- model.json -----------------------------------------------------------------------------
_FILE_ENTRY: Tuple[Dict[str, Check], Dict[str, Check]] = (
    {"sha256": lambda v: isinstance(v, str) and len(v) == 64, "bytes": COUNT}, {})


def check_sidecar(data: Any, where: str) -> dict:
    """An export's ``model.json`` (format tag checked by the caller)."""
    _fields(
        data,
        where,
        {"subnet": DICT},
        {
            "space": DICT,
            "files": DICT,
            "subnet_text": STR,
            "macs": COUNT,
            "mflops": NONNEG,
            "params": COUNT,
            "accuracy": _opt(DICT),
            "target": DICT,
            "input": DICT,
            "source": _opt(DICT),
            "bn": _opt(DICT),
            "parity": _opt(DICT),
            "calibration": _opt(DICT),
            "onnx": _opt(DICT),
            "preprocessing": _opt(DICT),
            "bound": _opt(DICT),
        },
    )
    if data.get("preprocessing") is not None:
        check_preprocessing(data["preprocessing"], where, "preprocessing.")
    for name, entry in data.get("files", {}).items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise OfaError(f"{where}: key 'files' names {name!r}, which is not a plain file name")
        _fields(entry, where, *_FILE_ENTRY, prefix=f"files.{name}.")
    if data.get("accuracy"):
        _fields(data["accuracy"], where, {"top1": FRACTION}, {"images": COUNT, "loss": _opt(NONNEG)}, "accuracy.")
    return data


_NAMES: Check = lambda v: isinstance(v, list) and len(v) >= 1 and all(isinstance(x, str) for x in v)  # noqa: E731
_PER_CHANNEL: Check = lambda v: isinstance(v, list) and len(v) in (1, 3) and all(_num()(x) for x in v)  # noqa: E731


def check_preprocessing(data: Any, where: str, prefix: str = "") -> dict:
    """A preprocessing record (fields: ``ofa_deploy.data.preprocessing``): what a device must
    do to an image - size, resize rule, channels, mean/std per channel, class names."""
    _fields(data, where, {"version": _int(1), "size": _int(1, 65536), "resize": STR, "channels": _int(1, 3),
                          "mean": _PER_CHANNEL, "std": _PER_CHANNEL, "classes": _NAMES},
            {"dataset": STR, "layout": STR, "dtype": STR, "color": STR, "scale": POSITIVE, "formula": STR,
             "resize_steps": _list(DICT, 16)}, prefix)
    if not (len(data["mean"]) == len(data["std"]) == data["channels"]):
        raise OfaError(f"{where}: key '{prefix}mean' and '{prefix}std' need one value per channel "
                       f"({data['channels']})")
    if any(s <= 0 for s in data["std"]):
        raise OfaError(f"{where}: key '{prefix}std' must be positive")
    return data


# -- profile results (profile --json, catalog import) --------------------------------------
_LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p99")


def check_profile_result(data: Any, where: str) -> dict:
    """One latency measurement: statistics positive and finite (``std`` may be 0), a count,
    a finite CoV; model/target/batch identity where present."""
    _fields(data, where, {"latency_ms": DICT, "n": _int(1), "cov": NONNEG},
            {"target": STR, "batch": _int(1, 65536), "unstable": BOOL, "model": _opt(DICT), "backend": STR,
             "environment": _opt(DICT), "precision": STR})
    _fields(data["latency_ms"], where, {k: (NONNEG if k == "std" else POSITIVE) for k in _LATENCY_KEYS}, {},
            "latency_ms.")
    model = data.get("model") or {}
    _fields(model, where, {}, {"subnet": lambda v: isinstance(v, (str, dict)), "space": DICT, "sha256": _opt(STR),
                               "accuracy": _opt(DICT), "source": _opt(DICT), "bn": _opt(DICT)}, "model.")
    if model.get("accuracy"):
        _fields(model["accuracy"], where, {"top1": FRACTION}, {"images": COUNT, "loss": _opt(NONNEG), "split": STR,
                                                               "chosen_on": _opt(STR)},
                "model.accuracy.")
    if model.get("bn"):
        _fields(model["bn"], where, {}, {"images": COUNT, "recalibrated": BOOL}, "model.bn.")
    if model.get("source"):
        _fields(model["source"], where, {}, {k: STR for k in ("run_dir", "checkpoint_sha256", "dataset")},
                "model.source.")
    return data
