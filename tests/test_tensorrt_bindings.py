"""Every TensorRT name the engine path touches exists in TensorRT's REAL Python bindings of
8.6.1, 10.3.0, the newest 10.x and the newest 11.x, on the path each version takes.

TensorRT's libraries (``libnvinfer.so.N``, gigabytes) are not on PyPI, but its pybind11
bindings are, as small ``tensorrt*-bindings`` wheels. They link only a handful of C entry
points of those libraries; a stub library exporting exactly those (each returns NULL),
built here with gcc under the names the bindings need and put on ``LD_LIBRARY_PATH`` of a
subprocess, lets the real module import, so every class, method, property and enum member
it registers can be looked up (``hasattr``). Nothing can be *run* this way: a live object
(``Builder()``) raises the TypeError real TensorRT raises when it cannot start CUDA.

What the code touches is derived from the code itself, two ways:
* dynamically: the stand-in of that version (``trt_fake``) records every TensorRT attribute
  our code reads or sets while it drives the whole engine path (``trt_fake.tour``), under
  TensorRT's own class names;
* statically: every ``trt.X.Y`` chain in the ``trt_*`` modules' source, plus the flag names
  the version policy (``build_policy``) hands to ``getattr``.
A misspelled or removed name in either makes this fail (see the bogus-name tests).

The wheels are fetched by ``.ci/run`` into ``.ci/cache/trt-bindings`` (``OFA_TRT_WHEELS``
overrides); under CI=true a missing wheel is a failure, elsewhere the test downloads them.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from itertools import product
from pathlib import Path

import pytest
import trt_fake

from ofa_deploy.export import trt_plan

REPO = Path(__file__).resolve().parents[1]
WHEEL_DIR = Path(os.environ.get("OFA_TRT_WHEELS") or REPO / ".ci" / "cache" / "trt-bindings")
# stand-in version -> the pip requirement of the real bindings and its wheel's file name prefix
WHEELS = {
    "8.6": ("tensorrt-bindings==8.6.1", "tensorrt_bindings-8.6.1-"),
    "10.3": ("tensorrt-cu12-bindings==10.3.0", "tensorrt_cu12_bindings-10.3.0-"),
    "10.16": ("tensorrt-cu12-bindings==10.16.1.11", "tensorrt_cu12_bindings-10.16.1.11-"),
    "11.4": ("tensorrt-cu12-bindings==11.4.0.106", "tensorrt_cu12_bindings-11.4.0.106-"),
}
TRT_MODULES = ["trt_env.py", "trt_plan.py", "trt_build.py", "trt_runtime.py"]
CHECKER = r"""
import json, sys
import tensorrt_bindings as trt
missing = []
for owner, name in json.load(sys.stdin):
    obj = trt
    for part in [p for p in owner.split(".") if p]:
        obj = getattr(obj, part, None)
    if obj is None or not hasattr(obj, name):
        missing.append([owner, name])
print(json.dumps({"version": trt.__version__, "missing": missing}))
"""


def _wheel(version: str) -> Path:
    requirement, prefix = WHEELS[version]
    found = sorted(WHEEL_DIR.glob(prefix + "*.whl"))
    if found:
        return found[0]
    if os.environ.get("CI") == "true":
        pytest.fail(f"the {requirement} wheel is not in {WHEEL_DIR}: .ci/run must fetch it (pip download)")
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "-d", str(WHEEL_DIR), requirement], capture_output=True, text=True, timeout=300)
    found = sorted(WHEEL_DIR.glob(prefix + "*.whl"))
    if not found:
        pytest.skip(f"cannot download {requirement} here: {fetched.stderr.strip()[-300:]}")
    return found[0]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is needed to build the stub TensorRT library (apt-get install gcc binutils)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    return path


def _stub(version: str, root: Path) -> tuple[Path, Path]:
    """Unpack the real bindings of ``version`` and build the stub libraries they link.
    Returns (directory to put on sys.path, directory to put on LD_LIBRARY_PATH)."""
    site, libs = root / "site", root / "lib"
    with zipfile.ZipFile(_wheel(version)) as wheel:
        wheel.extractall(site)
    so = next(site.glob("tensorrt_bindings/tensorrt*.so"))
    undefined = subprocess.run([_tool("nm"), "-D", "--undefined-only", str(so)], capture_output=True, text=True,
                               check=True).stdout
    # TensorRT's own entry points: not versioned (glibc/libstdc++ are), not Python's, not libdl's
    symbols = sorted({line.split()[-1] for line in undefined.splitlines()
                      if "@" not in line and not line.split()[-1].startswith(("Py", "_Py", "dl"))})
    assert any(s.startswith("createInferBuilder") for s in symbols), symbols
    source = root / "stub.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    libs.mkdir()
    subprocess.run([_tool("gcc"), "-shared", "-fPIC", "-o", str(libs / "libstub.so"), str(source)], check=True)
    dynamic = subprocess.run([_tool("readelf"), "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    for name in needed:
        if name.startswith("libnv"):
            shutil.copy(libs / "libstub.so", libs / name)
    return site, libs


def _missing(version: str, root: Path, names) -> dict:
    site, libs = _stub(version, root)
    env = {**os.environ, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(libs)}
    result = subprocess.run([sys.executable, "-c", CHECKER], input=json.dumps(sorted(names)), capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def static_names(sources: dict) -> set:
    """(owner, name) of every ``trt.A.B...`` chain in ``sources`` (file name -> text)."""
    names = set()
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute):
                continue
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "trt":
                for i, name in enumerate(chain):
                    if not name.startswith("__") or name == "__version__":
                        names.add((".".join(chain[:i]), name))
    return names


def policy_names(version: str) -> set:
    major, minor = (int(p) for p in version.split("."))
    names = set()
    for precision, dla in product(trt_plan.PRECISIONS, (False, True)):
        policy = trt_plan.build_policy((major, minor), precision, dla)
        names |= {("NetworkDefinitionCreationFlag", n) for n in policy["network_flags"]}
        names |= {("BuilderFlag", n) for n in policy["builder_flags"]}
    return names


def _sources() -> dict:
    return {name: (REPO / "ofa_deploy" / "export" / name).read_text() for name in TRT_MODULES}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return trt_fake.make_exports(tmp_path_factory.mktemp("bindings-exports"))


def _touched(version, exported, tmp_path, monkeypatch) -> set:
    monkeypatch.setenv("OFA_DEPLOY_CACHE", str(tmp_path / "cache"))
    fake = trt_fake.install(monkeypatch, version)
    root, x = exported
    trt_fake.tour(fake, root, x, tmp_path / "tour")
    return set(fake.touched)


@pytest.mark.parametrize("version", list(WHEELS))
def test_every_name_the_code_touches_exists_in_the_real_bindings(version, exported, tmp_path, monkeypatch):
    touched = _touched(version, exported, tmp_path, monkeypatch)
    static = static_names(_sources())
    assert ("", "Builder") in touched and ("IBuilderConfig", "set_memory_pool_limit") in touched
    assert ("LayerType", "QUANTIZE") in static and ("", "nptype") in static
    report = _missing(version, tmp_path / "real", touched | static | policy_names(version))
    assert report["version"].startswith(trt_fake.VERSIONS[version].rsplit(".", 1)[0]), report
    assert report["missing"] == [], f"TensorRT {report['version']} lacks {report['missing']}"


def test_removed_names_and_misspellings_are_caught(exported, tmp_path, monkeypatch):
    # the 8.6 path (EXPLICIT_BATCH, FP16/INT8 flags) checked against 11.4, which removed them
    touched_86 = _touched("8.6", exported, tmp_path / "t86", monkeypatch) | policy_names("8.6")
    missing = {tuple(m) for m in _missing("11.4", tmp_path / "real", touched_86)["missing"]}
    assert missing == {("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"), ("BuilderFlag", "FP16"),
                       ("BuilderFlag", "INT8")}
    # a misspelled name in the code's source, and one in the version policy, are reported
    sources = _sources()
    sources["trt_build.py"] = sources["trt_build.py"].replace("trt.MemoryPoolType.WORKSPACE",
                                                              "trt.MemoryPoolType.WORKSPCE")
    bogus = {("NetworkDefinitionCreationFlag", "STRONGLY_TYPD")}
    report = _missing("10.3", tmp_path / "real103", static_names(sources) | policy_names("10.3") | bogus)
    assert {tuple(m) for m in report["missing"]} == {("MemoryPoolType", "WORKSPCE"),
                                                    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPD")}


def test_live_objects_fail_like_tensorrt_without_cuda(tmp_path):
    """With the stub, constructing a Builder fails exactly as TensorRT does when it cannot
    start CUDA - the TypeError ``trt_env.start`` turns into an OfaError."""
    site, libs = _stub("10.3", tmp_path)
    code = ("import tensorrt_bindings as trt\n"
            "try:\n    trt.Builder(trt.Logger())\nexcept TypeError as exc:\n    print('TypeError', exc)\n")
    env = {**os.environ, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(libs)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "TypeError" in result.stdout and "nullptr" in result.stdout, result.stdout + result.stderr
