"""The machine side of the TensorRT path: importing ``tensorrt`` and ``pycuda`` with errors
that say what is really wrong, the TensorRT versions this code supports, starting TensorRT
objects that need CUDA, and the device facts an engine is tied to.

Nothing here imports ``tensorrt`` or ``pycuda`` at module level: the device side must
import on a machine without them (and without torch).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

from ..errors import OfaError

# TensorRT 8.5 is JetPack 5's (Xavier, Python 3.8); 11.x is what pip resolves today.
# 12 may drop or rename what 11 has, so it is refused rather than guessed at.
SUPPORTED = ((8, 5), (12, 0))
INSTALL_HINT = ("on a desktop GPU `pip install 'ofa-deploy[trt]'` (TensorRT from pip; pycuda is built from "
                "source and needs the CUDA toolkit's headers); on a Jetson JetPack's TensorRT "
                "(python3-libnvinfer) plus `pip install pycuda`")


def tensorrt_available() -> bool:
    """Whether a ``tensorrt`` package is installed here (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def parse_version(text: str) -> Tuple[int, int]:
    """(major, minor) of a TensorRT version string such as ``"10.16.1.11"``."""
    match = re.match(r"(\d+)\.(\d+)", str(text))
    if match is None:
        raise OfaError(f"cannot read the TensorRT version {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_supported(text: str) -> Tuple[int, int]:
    """The (major, minor) of ``text``; ``OfaError`` outside 8.5 <= version < 12."""
    version = parse_version(text)
    low, high = SUPPORTED
    if not low <= version < high:
        raise OfaError(f"TensorRT {text} is not supported: ofa-deploy builds and runs engines with TensorRT "
                       f"{low[0]}.{low[1]} to {high[0] - 1}.x")
    return version


def _import(name: str, what: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # only the package itself missing means "not installed"; a module it imports that is
        # missing is a broken installation and must be named as such
        if exc.name is not None and (exc.name == name or name.startswith(exc.name + ".")):
            raise OfaError(f"{what} is not installed on this machine; {INSTALL_HINT}") from None
        raise OfaError(f"{what} is installed but cannot be imported: {exc}") from None
    except ImportError as exc:  # e.g. libnvinfer.so.10 or libcuda.so.1 not found
        raise OfaError(f"{what} is installed but cannot be imported: {exc}") from None


def import_tensorrt():
    """The ``tensorrt`` module, checked to be a supported version."""
    trt = _import("tensorrt", "TensorRT")
    check_supported(trt.__version__)
    return trt


def import_pycuda(device: int = 0):
    """``pycuda.driver``, initialised, with GPU ``device`` present."""
    cuda = _import("pycuda.driver", "pycuda")
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        raise OfaError(f"CUDA is not usable on this machine: {exc}") from None
    if count == 0:
        raise OfaError("no CUDA GPU is visible on this machine")
    if not 0 <= device < count:
        raise OfaError(f"--device {device}: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}")
    return cuda


def start(factory: Callable[..., Any], *args: Any) -> Any:
    """``factory(*args)`` for TensorRT objects that need CUDA (``Builder``, ``Runtime``):
    TensorRT's bindings raise ``TypeError`` (the factory returned nullptr) when TensorRT
    cannot start CUDA, e.g. a driver older than the one it was built for."""
    try:
        return factory(*args)
    except TypeError as exc:
        raise OfaError(f"TensorRT could not start on this GPU ({exc}); check that the NVIDIA driver is recent "
                       "enough for this TensorRT and that the GPU is not in use by another process") from None


def jetson_release() -> str | None:
    """The L4T release line of a Jetson (``/etc/nv_tegra_release``), None elsewhere."""
    path = Path("/etc/nv_tegra_release")
    try:
        return path.read_text().splitlines()[0].strip() if path.is_file() else None
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def device_info(trt, cuda, device: int = 0) -> dict[str, Any]:
    """What an engine is tied to on this machine: TensorRT version, GPU ``device``'s name
    and compute capability (``"8.7"``), CUDA driver version and, on a Jetson, the L4T release."""
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": dev.name(),
        "compute_capability": f"{major}.{minor}",
        "cuda_driver": cuda.get_driver_version(),
        "jetson_l4t": jetson_release(),
    }


def cache_root() -> Path:
    """``$OFA_DEPLOY_CACHE`` or ``~/.cache/ofa-deploy`` (shared with the dataset cache)."""
    return Path(os.environ.get("OFA_DEPLOY_CACHE") or Path.home() / ".cache" / "ofa-deploy")


def timing_cache_path(info: dict[str, Any], root: Path | None = None) -> Path:
    """The per-device timing cache file: one per GPU name, compute capability and
    TensorRT version (a cache from another combination is useless to TensorRT)."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(info["gpu_name"]).lower()).strip("-") or "gpu"
    cc = str(info["compute_capability"]).replace(".", "")
    return (root or cache_root()) / "tensorrt" / f"{slug}-sm{cc}-trt{info['tensorrt_version']}.timing"


def make_logger(trt, verbose: bool):
    """A TensorRT logger that keeps error messages (for the OfaError) and prints warnings
    (everything with ``verbose``) on stderr."""
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)
    shown = errors + (severity.WARNING,)

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, level, msg) -> None:
            if level in errors:
                self.errors.append(str(msg))
            if verbose or level in shown:
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return Logger()
