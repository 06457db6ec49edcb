"""What a command may write and replace: the one place that decides.

Every writing command names the kind of output it produces (an export directory, a
report, a PNG, a profile result, ...). ``--overwrite`` (and the commands that update
their own product on a rerun) may replace an existing path only when it is recognisably
that kind - by the format tag of its sidecar, its marker file, its magic bytes - and, for
directories, holds nothing but that kind's files. Anything else (a run directory, a
catalog, a folder with the user's files) is refused with what was found. No output may
equal or contain an input. A new directory is renamed into place with a primitive that
fails if the target appeared meanwhile (``renameat2(RENAME_NOREPLACE)`` on Linux), so two
writers racing for one path never both "succeed", and one never replaces the other.

Temporary names embed the writer's pid (``.NAME.PID.RANDOM.partial`` / ``.tmp``): the
next writer of the same output removes those whose process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

from .errors import OfaError
from .outputs_fs import is_leftover_name, make_temp_dir, remove_leftovers, rename_noreplace, temp_prefix

_LISTED = 4  # names quoted in a refusal before "..."


# -- recognising outputs -------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """One kind of output. ``recognise(path)`` returns None if ``path`` is this kind's own
    output, else a short description of what it is instead (quoted in the refusal)."""

    name: str
    recognise: Callable[[Path], Optional[str]]


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def describe(path: Path) -> str:
    """What a path that is not ours looks like, in a few words (for refusals)."""
    if not path.is_dir():
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(16)
            if head.startswith(b"SQLite format 3"):
                return "an SQLite database (a catalog?)"
            return "a file"
        return "not a regular file or directory"
    names = {p.name for p in path.iterdir()}
    if "config.toml" in names and names & {"last.pt", "final.pt", "metrics.jsonl", "summary.json"}:
        return "a training run directory (" + _listing(names & {"config.toml", "last.pt", "final.pt",
                                                               "summary.json"}) + ")"
    if any(n.endswith(".db") for n in names):
        return "a directory holding a catalog (" + _listing(n for n in names if n.endswith(".db")) + ")"
    if not names:
        return "an empty directory"
    return "a directory holding " + _listing(names)


def _read_json_dict(path: Path) -> Optional[dict]:
    try:
        if path.stat().st_size > 64 << 20:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _only(path: Path, allowed: Callable[[Path], bool]) -> Optional[str]:
    foreign = [p.name for p in path.iterdir() if not allowed(p) and not is_leftover_name(p.name)]
    return f"a directory holding files that are not ours ({_listing(foreign)})" if foreign else None


# An export directory's files and format tag: export.sidecar writes them, this module
# recognises them (here, below export, so that ownership checks need nothing above them).
ONNX_FILE = "model.onnx"
SIDECAR_FILE = "model.json"
CALIBRATION_FILE = "calibration.npy"
INDEX_FILE = "index.json"  # --all-buckets: the bucket directories of one export
SIDECAR_FORMAT = "ofa-deploy/model"
EXPORT_FILES = {SIDECAR_FILE, ONNX_FILE, CALIBRATION_FILE, "model.engine", "engine.json"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def _export_dir(path: Path) -> Optional[str]:
    if not path.is_dir():
        return describe(path)
    sidecar = _read_json_dict(path / SIDECAR_FILE)
    if sidecar is None or sidecar.get("format") != SIDECAR_FORMAT:
        return describe(path)
    listed = set((sidecar.get("files") or {}).keys()) if isinstance(sidecar.get("files"), dict) else set()
    return _only(path, lambda p: p.is_file() and (p.name in EXPORT_FILES or p.name in listed
                                                 or p.suffix in ENGINE_SUFFIXES))


def _export_set(path: Path) -> Optional[str]:
    if not path.is_dir():
        return describe(path)
    index = _read_json_dict(path / INDEX_FILE)
    if index is None or not isinstance(index.get("exports"), list):
        return describe(path)
    for sub in path.iterdir():
        if sub.name == INDEX_FILE or is_leftover_name(sub.name):
            continue
        found = _export_dir(sub) if sub.is_dir() else "a file"
        if found is not None:
            return f"an export set whose {sub.name} is {found}"
    return None


def _export_any(path: Path) -> Optional[str]:
    return _export_set(path) if (path / INDEX_FILE).is_file() else _export_dir(path)


REPORT_FORMAT = "ofa-deploy/report"
REPORT_SUFFIXES = (".png", ".svg", ".md", ".json")


def _report_dir(path: Path) -> Optional[str]:
    if not path.is_dir():
        return describe(path)
    summary = _read_json_dict(path / "report.json")
    # reports written before the format tag existed are recognised by their keys
    legacy = summary is not None and {"title", "runs", "ofa_deploy"} <= summary.keys()
    if summary is None or not (summary.get("format") == REPORT_FORMAT or legacy):
        return describe(path)
    return _only(path, lambda p: p.is_file() and p.suffix in REPORT_SUFFIXES)


def _png_file(path: Path) -> Optional[str]:
    if not path.is_file():
        return describe(path)
    with open(path, "rb") as f:
        return None if f.read(8) == b"\x89PNG\r\n\x1a\n" else describe(path) + " that is not a PNG"


def _profile_result(path: Path) -> Optional[str]:
    if not path.is_file():
        return describe(path)
    data = _read_json_dict(path)
    if data is None or not {"latency_ms", "n", "cov"} <= data.keys():
        return describe(path) + " that is not a profile result"
    return None


PREDICTOR_FILES = {"predictor.json", "latency.jsonl", "check.json", "check.png", "curve.json", "curve.png"}


def _predictor_dir(path: Path) -> Optional[str]:
    # a predictor directory grows over runs (measurements are appended), so an empty one is fine
    if not path.is_dir():
        return describe(path)
    # to-measure/: the exports `predictor adapt --no-measure` leaves for profiling on a device
    return _only(path, lambda p: (p.is_file() and p.name in PREDICTOR_FILES)
                 or (p.is_dir() and p.name == "to-measure"))


def _run_dir(path: Path) -> Optional[str]:
    # a training run is recognised by its config.toml; an empty directory may become one
    if not path.is_dir():
        return describe(path)
    if (path / "config.toml").is_file():
        return None
    return _only(path, lambda p: False)


IMPORT_FILE = "import.json"  # ofa-deploy import-ofa: the provenance of an imported run
IMPORT_FORMAT = "ofa-deploy/ofa-import"


def _imported_run(path: Path) -> Optional[str]:
    # a run made by import-ofa, recognised by its import.json; an empty directory may become one
    if not path.is_dir():
        return describe(path)
    tag = _read_json_dict(path / IMPORT_FILE)
    if tag is not None and tag.get("format") == IMPORT_FORMAT:
        return None
    return describe(path)


QUICKSTART_ENTRIES = {"run", "catalog.db", "catalog.db-wal", "catalog.db-shm", "catalog.html", "report", "summary.json",
                      "artifacts"}


def _quickstart_dir(path: Path) -> Optional[str]:
    if not path.is_dir():
        return describe(path)
    return _only(path, lambda p: p.name in QUICKSTART_ENTRIES)


SEARCH_FORMAT = "ofa-deploy/search"


def _search_dir(path: Path) -> Optional[str]:
    if not path.is_dir():
        return describe(path)
    history = _read_json_dict(path / "history.json")
    if history is None or history.get("format") != SEARCH_FORMAT:
        return describe(path)
    return _only(path, lambda p: p.is_file() and p.suffix in (".json", ".png"))


ENGINE_FILES = {"model.engine", "engine.json"}  # export.trt_plan's ENGINE_FILE and ENGINE_SIDECAR


def _engine_dir(path: Path) -> Optional[str]:
    # `build-engine --out`: a directory of engines only (whose engine.json build-engine checks
    # before replacing them); an empty one may become one. Another export directory is not
    # one: its model.json would vouch for an ONNX the engine was not built from.
    if not path.is_dir():
        return describe(path)
    if (path / SIDECAR_FILE).is_file() and _export_dir(path) is None:
        return "another export directory (an engine goes beside the model.onnx it was built from)"
    found = _only(path, lambda p: p.is_file() and p.name in ENGINE_FILES)
    return None if found is None else describe(path)


REPRODUCE_MANIFEST = "reproduce.json"  # ofa_deploy.reproduce: options, plan and per-run status
REPRODUCE_ENTRIES = {REPRODUCE_MANIFEST, "runs", "report", "ablations", "verdict.json", "verdict.md"}


def _reproduce_dir(path: Path) -> Optional[str]:
    # a reproduction is recognised by its manifest (whose contents reproduce checks); an
    # empty directory may become one
    if not path.is_dir():
        return describe(path)
    if not (path / REPRODUCE_MANIFEST).is_file():
        return None if _only(path, lambda p: False) is None else describe(path) + f" and no {REPRODUCE_MANIFEST}"
    return _only(path, lambda p: p.name in REPRODUCE_ENTRIES)


EXPORT = Kind("export directory", _export_any)
RUN = Kind("training run directory", _run_dir)
IMPORTED_RUN = Kind("imported run directory", _imported_run)
QUICKSTART = Kind("quickstart directory", _quickstart_dir)
PREDICTOR = Kind("predictor directory", _predictor_dir)
REPORT = Kind("report directory", _report_dir)
PNG = Kind("PNG image", _png_file)
PROFILE_RESULT = Kind("profile result", _profile_result)
SEARCH = Kind("search directory", _search_dir)
REPRODUCTION = Kind("reproduction directory", _reproduce_dir)
ENGINE = Kind("engine directory", _engine_dir)


# -- inputs ----------------------------------------------------------------------------------

def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def check_not_input(out: str | os.PathLike, inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]],
                    flag: str = "--out") -> None:
    """Refuse an output path that is, or contains, one of ``inputs`` ((label, path) pairs):
    replacing it would destroy what the command reads. Being inside an input directory is
    fine (exports go to RUN/exports/ by default); what is there is protected by ownership."""
    target = _resolved(out)
    for label, path in inputs:
        if path is None:
            continue
        source = _resolved(path)
        if source == target:
            raise OfaError(f"{flag} {out} is the {label} itself; choose another {flag}")
        if target in source.parents:
            raise OfaError(f"{flag} {out} contains the {label} {path}; choose another {flag}")


def check_replaceable(path: str | os.PathLike, kind: Kind, *, overwrite: bool, flag: str = "--out",
                      overwrite_flag: Optional[str] = "--overwrite") -> None:
    """``path`` may be written: it does not exist, or it is ``kind``'s own output and
    ``overwrite`` allows replacing it. ``overwrite_flag`` None: the command has no such flag
    (it always replaces its own output), so the messages do not offer one."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise OfaError(f"{flag} {path} is a symbolic link; give the real path")
    if not overwrite:
        raise OfaError(f"{path} already exists; choose another {flag} or pass --overwrite")
    if _empty_dir(path):
        return  # nothing in it to lose
    found = kind.recognise(path)
    if found is not None and overwrite_flag is None:
        raise OfaError(f"{path} is {found}, not an ofa-deploy {kind.name} (the only thing this command "
                       f"replaces); choose another {flag}")
    if found is not None:
        raise OfaError(f"{path} is {found}, not an ofa-deploy {kind.name}; {overwrite_flag} replaces only "
                       f"that, choose another {flag}")


def _empty_dir(path: Path) -> bool:
    """A directory holding nothing, or only temporary names of ours."""
    return path.is_dir() and all(is_leftover_name(p.name) for p in path.iterdir())


def check_own_dir(path: str | os.PathLike, kind: Kind, *,
                  inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]] = (), flag: str = "--out") -> Path:
    """A directory a command fills and updates in place over reruns (a predictor, a run):
    not an input, and if it exists, ``kind``'s own."""
    path = Path(path)
    check_not_input(path, inputs, flag)
    if os.path.lexists(path):
        found = kind.recognise(path)
        if found is not None:
            raise OfaError(f"{flag} {path} is {found}, not an ofa-deploy {kind.name}; choose another {flag}")
    return path


def check_file_output(path: str | os.PathLike, kind: Kind, *,
                      inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]] = (), flag: str = "--out") -> Path:
    """A file output (a PNG, a JSON result): not an input, not a directory, and if it exists
    already, a file of ``kind`` (which a command replaces, as reruns are meant to)."""
    path = Path(path)
    check_not_input(path, inputs, flag)
    if os.path.lexists(path):
        found = kind.recognise(path)
        if found is not None:
            raise OfaError(f"{flag} {path} is {found}; only an ofa-deploy {kind.name} is replaced there, "
                           f"choose another {flag}")
    return path


def _identity(path: Path) -> Optional[Tuple[int, int, int]]:
    """Which directory this is: device, inode and change time (an inode number alone is
    reused at once when a directory is deleted and another one made)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


@contextmanager
def staged_output_dir(final: str | os.PathLike, kind: Kind, *, overwrite: bool = False,
                      inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]] = (),
                      flag: str = "--out", overwrite_flag: Optional[str] = "--overwrite") -> Iterator[Path]:
    """Yield an empty directory beside ``final``; when the block ends normally it becomes
    ``final``. ``final`` must not exist, or (with ``overwrite``) be ``kind``'s own output,
    which is then replaced - only if it is still the very directory checked at the start.
    On any error the staging directory (and parents this call created) is removed, so
    ``final`` is either what it was or complete."""
    final = Path(final)
    check_not_input(final, inputs, flag)
    check_replaceable(final, kind, overwrite=overwrite, flag=flag, overwrite_flag=overwrite_flag)
    replaced = _identity(final)
    created = [p for p in reversed(final.absolute().parents) if not p.exists()]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(final)
        tmp = make_temp_dir(final)
    except OSError as exc:
        raise OfaError(f"cannot create {final}: {exc.strerror or exc}") from None
    try:
        yield tmp
        _publish(tmp, final, kind, replaced, flag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # the parents this call made, deepest first
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _publish(tmp: Path, final: Path, kind: Kind, replaced: Optional[Tuple[int, int, int]], flag: str) -> None:
    appeared = OfaError(f"{final} appeared while this command ran (another process wrote it?); nothing was "
                        f"replaced - choose another {flag}")
    if replaced is None:
        try:
            rename_noreplace(tmp, final)
        except FileExistsError:
            raise appeared from None
        return
    if _identity(final) != replaced:
        raise appeared
    old = final.with_name(f"{temp_prefix(final.name)}old")
    try:
        os.rename(final, old)  # renaming changes the change time: from here on compare device and inode
    except FileNotFoundError:
        raise OfaError(f"{final} was removed while this command ran; nothing was replaced") from None
    moved = _identity(old)
    if moved is None:  # removed by another process since the rename just above
        raise OfaError(f"{final} was removed while this command ran; nothing was replaced")
    if moved[:2] != replaced[:2] or not (_empty_dir(old) or kind.recognise(old) is None):
        _restore(old, final)
        raise appeared
    try:
        rename_noreplace(tmp, final)
    except FileExistsError:
        _restore(old, final)
        raise appeared from None
    shutil.rmtree(old, ignore_errors=True)


def _restore(old: Path, final: Path) -> None:
    try:
        rename_noreplace(old, final)
    except OSError:
        raise OfaError(f"{final} changed while this command ran; the previous content is kept in {old}") from None
