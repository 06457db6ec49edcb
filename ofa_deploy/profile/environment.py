"""What a latency number was measured on: host, CPU, GPU, clocks, power mode, libraries.

Everything is read from files and small commands with short timeouts; whatever cannot be
read is reported as ``None`` rather than guessed. Nothing here imports torch: library
versions come from the installed package metadata.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

DEVFREQ = Path("/sys/class/devfreq")
LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt", "pycuda", "cuda-python", "torch")


def environment(*, threads: Optional[int] = None, gpu: bool = False) -> dict[str, Any]:
    """A JSON-ready description of this machine now. ``threads`` is the intra-op thread
    count the measurement used (0 = the runtime's default); ``gpu`` adds GPU details."""
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "threads": threads,
        "libraries": library_versions(),
    }
    jetson = jetson_info()
    if jetson:
        env["jetson"] = jetson
    if gpu or jetson:
        env["gpu"] = nvidia_smi() if not jetson else None
    return env


def cpu_info() -> dict[str, Any]:
    model = None
    cpuinfo = _read("/proc/cpuinfo")
    if cpuinfo:
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                model = value.strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cur_freq_mhz": int(freq) / 1000 if freq and freq.isdigit() else None,
        "loadavg": list(load) if load else None,
    }


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def nvidia_smi() -> Optional[dict[str, Any]]:
    """Name, driver, clocks, power limit and performance state of GPU 0 (desktop GPUs)."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ("name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "power.limit",
              "pstate", "temperature.gpu", "compute_mode")
    text = _command(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader", "-i", "0"])
    if not text:
        return None
    values = [v.strip() for v in text.splitlines()[0].split(",")]
    return dict(zip(fields, values)) if len(values) == len(fields) else {"raw": text.strip()}


def jetson_info() -> Optional[dict[str, Any]]:
    """L4T release, board model, nvpmodel power mode and whether clocks look pinned
    (``jetson_clocks`` sets each devfreq minimum to its maximum). ``None`` off Jetson."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if not release and not (model and "jetson" in model.lower()):
        return None
    info: dict[str, Any] = {
        "model": (model or "").strip("\x00 ") or None,
        "l4t": (release or "").splitlines()[0] if release else None,
    }
    mode = _command(["nvpmodel", "-q"]) if shutil.which("nvpmodel") else None
    info["nvpmodel"] = " ".join(line.strip() for line in mode.splitlines() if line.strip()) if mode else None
    info["gpu_freq"] = _gpu_devfreq()
    freqs = info["gpu_freq"]
    if freqs and freqs.get("min_hz") and freqs.get("max_hz"):
        info["jetson_clocks"] = "on" if freqs["min_hz"] == freqs["max_hz"] else "off"
    else:
        info["jetson_clocks"] = None
    return info


def _gpu_devfreq() -> Optional[dict[str, Optional[int]]]:
    for base in sorted(DEVFREQ.glob("*")):
        name = (_read(base / "device/of_node/name") or base.name).lower()
        if "gpu" in name or "gv11b" in name or "ga10b" in name or "gp10b" in name:
            def num(f: str) -> Optional[int]:
                v = _read(base / f)
                return int(v) if v and v.isdigit() else None

            return {"cur_hz": num("cur_freq"), "min_hz": num("min_freq"), "max_hz": num("max_freq")}
    return None


def _read(path: str | Path) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _command(argv: list[str]) -> Optional[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
