"""Deployment targets: one TOML profile per device kind (``profiles/NAME.toml``).

A profile says how a subnet is exported for a device (opset, dynamic batch), how the
device runs it (backend, execution providers, default and allowed precisions, batch sizes, threads, TensorRT
builder settings, DLA core, whether the engine must be built on the device itself) and
how ``profile`` measures its latency there (warm-up, minimum iterations and time, the
coefficient of variation above which a measurement is retried).

``load_target("cpu")`` reads a built-in profile; ``load_target("my.toml")`` reads a user's
own. Built-in profiles live in the top-level ``profiles/`` directory of the repository
(editable installs) and are shipped inside the wheel as ``ofa_deploy/profiles``; the
directories named in ``$OFA_DEPLOY_PROFILES`` (``os.pathsep``-separated) are searched
first, so a site can add or override targets without touching the package.

Every key except ``backend`` and ``precision`` has a default, so a user's profile can be
short; an unknown key, a value of the wrong type or an out-of-range value is an
``OfaError`` naming the key. No torch needed: the device side imports this.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import OfaError
from .io import json_text, read_toml
from .validate import limited

BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
LAYOUTS = ("NCHW",)
MIN_OPSET, MAX_OPSET = 13, 21
MAX_BATCH = 65536
ENV_PROFILE_DIRS = "OFA_DEPLOY_PROFILES"


PREDICTOR_STATISTICS = ("min", "p50", "mean", "p90")


def check_precision(precision: str, allowed: "tuple[str, ...] | None" = None, *, target: str = "") -> str:
    """``precision`` if it is one of ``PRECISIONS`` (and in ``allowed``, a target's
    precisions), else ``OfaError``: the one check of an export's precision."""
    if precision not in PRECISIONS:
        raise OfaError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if allowed is not None and precision not in allowed:
        raise OfaError(f"--precision {precision}: target {target} allows only {', '.join(allowed)} "
                       "(its profile's `precisions`)")
    return precision


@dataclass(frozen=True)
class MeasureProtocol:
    """How ``profile`` times a model: run for ``warmup_s`` seconds untimed, then time at
    least ``min_iterations`` runs and at least ``min_time_s`` seconds; if the coefficient
    of variation (std / mean) of the timings exceeds ``cov_threshold``, measure again, at
    most ``max_retries`` more times. ``predictor_statistic`` is the statistic a latency
    predictor for the target fits by default: the one that is steadiest there."""

    warmup_s: float = 1.0
    min_iterations: int = 200
    min_time_s: float = 2.0
    cov_threshold: float = 0.05
    max_retries: int = 2
    predictor_statistic: str = "p50"


@dataclass(frozen=True)
class Target:
    """One deployment target, parsed and validated from its TOML profile.

    ``batch_sizes[0]`` is the batch ``profile`` measures by default; for TensorRT the
    optimization profile is ``min(batch_sizes) / batch_sizes[0] / max(batch_sizes)``
    (min/opt/max). ``threads = 0`` leaves the intra-op thread count to the library.
    ``dla_core`` is ``None`` for the GPU. ``source`` is the TOML file it came from.
    """

    name: str
    description: str
    backend: str
    providers: tuple[str, ...]
    precision: str
    batch_sizes: tuple[int, ...]
    input_layout: str
    threads: int
    build_on_device: bool
    dla_core: int | None
    opset: int
    dynamic_batch: bool
    measure: MeasureProtocol
    builder_optimization_level: int
    workspace_mb: int
    timing_cache: bool
    fallback_backend: str | None
    source: str
    aliases: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()

    @property
    def allowed_precisions(self) -> tuple[str, ...]:
        """The precisions an export for this target may carry (``precisions``, else just
        ``precision``, the default)."""
        return self.precisions or (self.precision,)

    def resolve_precision(self, requested: str | None = None) -> str:
        """The precision an export for this target carries: ``requested`` (one of its
        ``allowed_precisions``) or, when None, its default ``precision``; else ``OfaError``."""
        return check_precision(requested or self.precision, self.allowed_precisions, target=self.name)

    @property
    def batch(self) -> int:
        """The default batch size (the first of ``batch_sizes``)."""
        return self.batch_sizes[0]

    @property
    def trt_shapes(self) -> tuple[int, int, int]:
        """Batch sizes (min, opt, max) of the TensorRT optimization profile."""
        return min(self.batch_sizes), self.batch_sizes[0], max(self.batch_sizes)

    @property
    def needs_calibration(self) -> bool:
        """Whether export writes calibration images beside the ONNX (TensorRT or int8)."""
        return self.backend == "tensorrt" or self.precision == "int8"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (lists for tuples), as ``targets --json`` prints it."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @property
    def sha256(self) -> str:
        """SHA-256 of what the target does: its definition without ``source``,
        ``description`` and ``aliases`` (where it was read from and what it is called
        besides its name change nothing), as canonical JSON. Equal hashes, same target."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        return hashlib.sha256(json_text(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What an artefact made for this target records of it: the whole definition
        (``to_dict``) and its ``sha256``; ``from_record`` reads it back."""
        return {**self.to_dict(), "sha256": self.sha256}


_NOT_HASHED = ("source", "description", "aliases")

# Schema: section -> key -> (type check name, default). ``None`` section = top level.
_REQUIRED = object()
_ABSENT = object()
_SCHEMA: dict[str | None, dict[str, tuple[str, Any]]] = {
    None: {
        "name": ("str", _ABSENT),
        "description": ("str", ""),
        "aliases": ("str_list", []),
        "backend": ("str", _REQUIRED),
        "providers": ("str_list", ["CPUExecutionProvider"]),
        "precision": ("str", _REQUIRED),
        "precisions": ("str_list", None),
        "batch_sizes": ("int_list", [1]),
        "input_layout": ("str", "NCHW"),
        "threads": ("int", 0),
        "build_on_device": ("bool", False),
        "dla_core": ("int", None),
        "fallback_backend": ("str", None),
    },
    "export": {
        "opset": ("int", 17),
        "dynamic_batch": ("bool", True),
    },
    "measure": {
        "warmup_s": ("float", MeasureProtocol.warmup_s),
        "min_iterations": ("int", MeasureProtocol.min_iterations),
        "min_time_s": ("float", MeasureProtocol.min_time_s),
        "cov_threshold": ("float", MeasureProtocol.cov_threshold),
        "max_retries": ("int", MeasureProtocol.max_retries),
        "predictor_statistic": ("str", MeasureProtocol.predictor_statistic),
    },
    "tensorrt": {
        "builder_optimization_level": ("int", 3),
        "workspace_mb": ("int", 1024),
        "timing_cache": ("bool", True),
    },
}
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str_list": "a list of strings",
    "int_list": "a list of integers",
}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "int_list":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    raise AssertionError(kind)


def _flatten(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Check keys and types against the schema; returns ``{"section.key" or "key": value}``
    with defaults filled in."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SCHEMA and key is not None:
            if not isinstance(value, dict):
                raise OfaError(f"{where}: [{key}] must be a table")
            for sub in value:
                if sub not in _SCHEMA[key]:
                    known = ", ".join(_SCHEMA[key])
                    raise OfaError(f"{where}: unknown key '{key}.{sub}' (known in [{key}]: {known})")
        elif key not in _SCHEMA[None]:
            known = ", ".join([*_SCHEMA[None], *(f"[{s}]" for s in _SCHEMA if s)])
            raise OfaError(f"{where}: unknown key '{key}' (known: {known})")
    for section, keys in _SCHEMA.items():
        table = data if section is None else data.get(section, {})
        for key, (kind, default) in keys.items():
            label = key if section is None else f"{section}.{key}"
            if key in table:
                value = table[key]
                if not _type_ok(kind, value):
                    raise OfaError(f"{where}: key '{label}' must be {_TYPE_WORDS[kind]}, got {value!r}")
                flat[label] = float(value) if kind == "float" else value
            elif default is _REQUIRED:
                raise OfaError(f"{where}: missing required key '{label}'")
            else:
                flat[label] = default
    return flat


def _check(cond: bool, where: str, key: str, why: str) -> None:
    if not cond:
        raise OfaError(f"{where}: key '{key}' {why}")


def parse_target(data: dict[str, Any], *, source: str, default_name: str) -> Target:
    """Validate one parsed profile (the TOML document as a dict) and build its ``Target``.

    ``source`` names the file in error messages; ``default_name`` is used when the
    profile has no ``name`` key (the file's stem)."""
    where = f"target profile {source}"
    f = _flatten(data, where)
    name = default_name if f["name"] is _ABSENT else f["name"]
    _check(bool(name.strip()) and name == name.strip(), where, "name",
           "must be a non-empty name without surrounding spaces")
    _check(f["backend"] in BACKENDS, where, "backend", f"must be one of {', '.join(BACKENDS)}, got {f['backend']!r}")
    _check(f["precision"] in PRECISIONS, where, "precision",
           f"must be one of {', '.join(PRECISIONS)}, got {f['precision']!r}")
    precisions = f["precisions"] if f["precisions"] is not None else [f["precision"]]
    _check(len(precisions) > 0 and all(p in PRECISIONS for p in precisions) and len(set(precisions)) == len(precisions),
           where, "precisions", f"must list distinct precisions among {', '.join(PRECISIONS)}, got {precisions!r}")
    _check(f["precision"] in precisions, where, "precision",
           f"({f['precision']!r}, the default) must be one of `precisions` {precisions!r}")
    _check(f["fallback_backend"] in (None, *BACKENDS) and f["fallback_backend"] != f["backend"], where,
           "fallback_backend", f"must be a backend other than {f['backend']!r}, got {f['fallback_backend']!r}")
    uses_ort = "onnxruntime" in (f["backend"], f["fallback_backend"])
    _check(not uses_ort or len(f["providers"]) > 0, where, "providers",
           "must list at least one onnxruntime execution provider")
    _check(len(f["batch_sizes"]) > 0 and all(b >= 1 for b in f["batch_sizes"]), where, "batch_sizes",
           f"must be a non-empty list of positive integers, got {f['batch_sizes']!r}")
    _check(f["export.dynamic_batch"] or len(set(f["batch_sizes"])) == 1, where, "batch_sizes",
           "lists several sizes but export.dynamic_batch is false (a static-batch model runs one size)")
    _check(f["input_layout"] in LAYOUTS, where, "input_layout",
           f"must be one of {', '.join(LAYOUTS)}, got {f['input_layout']!r}")
    limited("threads", f["threads"], f"{where}: key 'threads' (0 = library default)")
    _check(all(b <= MAX_BATCH for b in f["batch_sizes"]) and len(f["batch_sizes"]) <= 64, where, "batch_sizes",
           f"must list at most 64 sizes of at most {MAX_BATCH}")
    if f["dla_core"] is not None:
        _check(0 <= f["dla_core"] <= 15, where, "dla_core", f"must be between 0 and 15, got {f['dla_core']}")
        _check(f["backend"] == "tensorrt", where, "dla_core", "needs backend = \"tensorrt\"")
        _check(all(p in ("fp16", "int8") for p in precisions), where, "dla_core",
               "needs precision(s) fp16 or int8 (DLA has no fp32)")
    _check(MIN_OPSET <= f["export.opset"] <= MAX_OPSET, where, "export.opset",
           f"must be between {MIN_OPSET} and {MAX_OPSET}, got {f['export.opset']}")
    for key in ("warmup_s", "min_time_s", "min_iterations", "max_retries", "cov_threshold"):
        # finite and bounded: TOML allows inf and nan, and a huge count would never finish
        limited(key, f[f"measure.{key}"], f"{where}: key 'measure.{key}'", lo_open=key == "cov_threshold")
    _check(f["measure.predictor_statistic"] in PREDICTOR_STATISTICS, where, "measure.predictor_statistic",
           f"must be one of {', '.join(PREDICTOR_STATISTICS)}, got {f['measure.predictor_statistic']!r}")
    _check(0 <= f["tensorrt.builder_optimization_level"] <= 5, where, "tensorrt.builder_optimization_level",
           f"must be between 0 and 5, got {f['tensorrt.builder_optimization_level']}")
    _check(1 <= f["tensorrt.workspace_mb"] <= 2**20, where, "tensorrt.workspace_mb", "must be between 1 and 1048576")
    return Target(
        name=name,
        description=f["description"],
        backend=f["backend"],
        providers=tuple(f["providers"]),
        precision=f["precision"],
        batch_sizes=tuple(f["batch_sizes"]),
        input_layout=f["input_layout"],
        threads=f["threads"],
        build_on_device=f["build_on_device"],
        dla_core=f["dla_core"],
        opset=f["export.opset"],
        dynamic_batch=f["export.dynamic_batch"],
        measure=MeasureProtocol(
            warmup_s=f["measure.warmup_s"],
            min_iterations=f["measure.min_iterations"],
            min_time_s=f["measure.min_time_s"],
            cov_threshold=f["measure.cov_threshold"],
            max_retries=f["measure.max_retries"],
            predictor_statistic=f["measure.predictor_statistic"],
        ),
        builder_optimization_level=f["tensorrt.builder_optimization_level"],
        workspace_mb=f["tensorrt.workspace_mb"],
        timing_cache=f["tensorrt.timing_cache"],
        fallback_backend=f["fallback_backend"],
        source=source,
        aliases=tuple(f["aliases"]),
        precisions=tuple(precisions),
    )


def read_target(path: str | os.PathLike) -> Target:
    """Read and validate one profile file."""
    from .validate import kind_of, path_text

    path = Path(path_text(os.fspath(path), "target profile"))
    kind = kind_of(path)
    if kind != "file":
        raise OfaError(f"target profile {path} {'is a directory' if kind == 'dir' else 'does not exist'}")
    data = read_toml(path, f"target profile {path}", "profile")
    return parse_target(data, source=str(path), default_name=path.stem)


def profile_dirs() -> list[Path]:
    """Directories searched for built-in profiles, first match wins: ``$OFA_DEPLOY_PROFILES``,
    the wheel's ``ofa_deploy/profiles``, then the repository's ``profiles/`` (editable install)."""
    extra = [Path(p) for p in os.environ.get(ENV_PROFILE_DIRS, "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    candidates = [*extra, here / "profiles", here.parent / "profiles"]
    return [d for d in candidates if d.is_dir()]


def list_targets() -> list[Target]:
    """Every profile found in ``profile_dirs()``, one per name, sorted by name."""
    found: dict[str, Target] = {}
    for directory in profile_dirs():
        for path in sorted(directory.glob("*.toml")):
            target = read_target(path)
            found.setdefault(target.name, target)
    return [found[name] for name in sorted(found)]


def is_path(name_or_path: str) -> bool:
    """Whether a ``--target`` value is a profile's path (else a name)."""
    return name_or_path.endswith(".toml") or os.sep in name_or_path or "/" in name_or_path


def load_target(name_or_path: str | os.PathLike) -> Target:
    """A target by name (``cpu``, ``cuda``, ``jetson-orin``, ``jetson-xavier``, or an alias
    such as ``jetson``) or by the path of a ``.toml`` profile."""
    text = os.fspath(name_or_path)
    if is_path(text):
        return read_target(text)
    if len(text) > 200 or not text.strip() or "\x00" in text:
        raise OfaError(f"unknown target {text[:40]!r}{'...' if len(text) > 40 else ''} (a target is a profile "
                       "name such as cpu, or the path of a .toml profile)")
    for directory in profile_dirs():
        path = directory / f"{text}.toml"
        if path.is_file():
            return read_target(path)
    for directory in profile_dirs():  # aliases too: an earlier directory overrides a later one
        for path in sorted(directory.glob("*.toml")):
            target = read_target(path)
            if text in target.aliases:
                return target
    known = ", ".join(t.name for t in list_targets()) or "none found"
    raise OfaError(f"unknown target {text!r} (known targets: {known}; or give the path of a .toml profile)")


# -- a target recorded in an artefact (model.json, engine.json, predictor.json) ----------
# ``to_dict`` flattens [export] and [tensorrt] into the top level; [measure] stays a table
_SECTION_OF = {key: section for section in ("export", "tensorrt") for key in _SCHEMA[section]}


def from_record(record: Any, where: str) -> Target:
    """The ``Target`` an artefact recorded (``Target.record()``, or an older artefact's
    ``to_dict()`` without the hash), validated as a profile is; ``OfaError`` naming
    ``where`` if it is malformed or does not match its recorded ``sha256``."""
    if not isinstance(record, dict):
        raise OfaError(f"{where}: the recorded target is not a table")
    data: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("sha256", "source"):
            continue
        if key == "measure":
            data["measure"] = value
        elif key in _SECTION_OF:
            data.setdefault(_SECTION_OF[key], {})[key] = value
        elif value is not None:  # dla_core, fallback_backend: None is the TOML's absent key
            data[key] = value
    try:
        target = parse_target(data, source=f"{where} (recorded)", default_name="")
    except OfaError as exc:
        raise OfaError(f"{where}: the recorded target is damaged ({exc})") from None
    recorded = record.get("sha256")
    if recorded is not None and recorded != target.sha256:
        raise OfaError(f"{where}: the recorded target {target.name} does not match its recorded sha256 "
                       "(the file was edited or damaged)")
    return target


def is_builtin(name: Any) -> bool:
    """Whether ``name`` is a target name or alias ``load_target`` finds in ``profile_dirs()``."""
    if not isinstance(name, str) or is_path(name):
        return False
    try:
        load_target(name)
    except OfaError:
        return False
    return True


def differing_keys(a: Target, b: Target) -> list[str]:
    """The hashed keys in which two targets differ."""
    da, db = a.to_dict(), b.to_dict()
    return [k for k in da if k not in _NOT_HASHED and da[k] != db.get(k)]


def recorded_target(given: "str | os.PathLike | Target | None", record: Any, where: str) -> Target:
    """``given``, or without it the target an artefact recorded as ``record`` (its
    ``model.json`` ``"target"``: the whole definition, so a target given as a ``.toml``
    path needs no ``--target`` afterwards; an older record of a built-in target is found
    by name). A ``given`` of the recorded one's name but another definition is refused
    (``target_for``)."""
    record = record or None
    name = record.get("name") if isinstance(record, dict) else None
    definition = None
    if isinstance(record, dict) and ("sha256" in record or not is_builtin(name)):
        # an older model.json records the definition without its hash (and perhaps without
        # keys added since): its built-in targets are still found by name, as before
        definition = from_record(record, where)
    return target_for(given, definition, name, where)


def target_for(given: "str | os.PathLike | Target | None", recorded: "Target | None", recorded_name: "str | None",
               what: str, *, same_name: bool = False) -> Target:
    """The target to work on an artefact ``what`` with (a phrase: "export d/model.json").

    Without ``given`` (no ``--target``): the definition the artefact recorded, so a target
    given as a ``.toml`` path travels with what was made for it; an older artefact that
    recorded only a name is re-resolved by that name (built-in profiles only).

    With ``given``: that target, except that one with the recorded target's name but
    another definition is refused (an edited profile, or a built-in changed since: the
    artefact was made for the recorded one), as is, with ``same_name``, a target of
    another name (a predictor describes one device and is checked only there)."""
    if given is None:
        if recorded is not None:
            return recorded
        if not recorded_name:
            raise OfaError(f"{what} names no target; pass --target")
        try:
            return load_target(recorded_name)
        except OfaError:
            raise OfaError(f"{what} was made for target {recorded_name!r}, which is not a built-in target here, and "
                           "does not record its definition (an older ofa-deploy made it); pass --target with "
                           "the target's .toml profile") from None
    target = given if isinstance(given, Target) else load_target(given)
    name = recorded.name if recorded is not None else recorded_name
    if same_name and name and target.name != name:
        raise OfaError(f"--target {target.name}: {what} was made for target {name}, not {target.name}")
    if recorded is not None and target.name == recorded.name and target.sha256 != recorded.sha256:
        keys = ", ".join(differing_keys(target, recorded)) or "its definition"
        raise OfaError(f"--target {target.name} ({target.source}) differs from the target {what} was made for "
                       f"in {keys} (sha256 {target.sha256[:12]}, recorded {recorded.sha256[:12]}); leave out "
                       f"--target to use the recorded definition, or make it again for the target as it is now")
    return target
