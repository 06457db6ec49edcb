"""The device side installs and runs on Python 3.8 (JetPack 5) without torch.

* ``vermin`` (a static minimum-version checker from PyPI) over the device-side modules,
  listed explicitly below, with target 3.8: it fails on 3.9+ library calls and syntax.
* vermin reads every ``X | Y`` or ``list[int]`` as an annotation or not at all, so a small
  AST check of our own finds those evaluated at run time (outside annotations, which
  ``from __future__ import annotations`` keeps unevaluated).
* The list is complete: every module the device commands' CLI modules import, at module
  level or lazily, is in it, unless it is a host-side (torch) module.
* The device commands run with torch blocked.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ofa_deploy"
# The CLI commands a Jetson runs: space, subnet, targets, profile, catalog, build-engine.
DEVICE_COMMANDS = ["cmd_space", "cmd_subnet", "cmd_targets", "cmd_profile", "cmd_catalog", "cmd_build_engine"]
DEVICE_MODULES = [
    "__init__.py", "__main__.py", "errors.py", "io.py", "outputs.py", "outputs_fs.py", "validate.py", "schemas.py",
    "space.py", "buckets.py", "specs.py",
    "cost.py", "targets.py", "resolution.py", "run.py", "signals.py",
    "cli/__init__.py", "cli/common.py", *(f"cli/{c}.py" for c in DEVICE_COMMANDS),
    "profile/__init__.py", "profile/backends.py", "profile/collect.py", "profile/drift.py", "profile/environment.py",
    "profile/model.py", "profile/profiler.py", "profile/protocol.py", "profile/results.py",
    "predictor/__init__.py", "predictor/features.py", "predictor/latency_model.py", "predictor/uncertainty.py",
    "predictor/predictor.py", "predictor/transfer.py", "predictor/learning_curve.py", "predictor/repeats.py",
    "predictor/directory.py", "predictor/build.py", "predictor/adapt.py",
    "catalog/__init__.py", "catalog/db.py", "catalog/schema.py", "catalog/entries.py", "catalog/importer.py",
    "catalog/html.py", "catalog/plot.py", "catalog/budgets.py", "catalog/search_summary.py",
    "export/__init__.py", "export/sidecar.py", "export/tensorrt.py", "export/trt_env.py", "export/trt_plan.py",
    "export/trt_build.py", "export/trt_runtime.py",
]
# Host-side modules a device command may reach only through a lazy import on a torch path
# (catalog build, export, the torch latency backend): they need torch and are not checked.
HOST_ONLY = ("ofa_deploy.nn", "ofa_deploy.data", "ofa_deploy.train", "ofa_deploy.evaluate", "ofa_deploy.report",
             "ofa_deploy.analyze", "ofa_deploy.weights", "ofa_deploy.search", "ofa_deploy.export.pipeline",
             "ofa_deploy.export.to_onnx", "ofa_deploy.export.images", "ofa_deploy.export.precision",
             "ofa_deploy.export.staging", "ofa_deploy.quickstart", "ofa_deploy.reproduce")
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "


def _present() -> list:
    return [str(PKG / m) for m in DEVICE_MODULES if (PKG / m).is_file()]


def _vermin(*paths: str) -> subprocess.CompletedProcess:
    run_vermin = "import sys; from vermin.main import main; sys.exit(main())"  # vermin has no __main__
    return subprocess.run([sys.executable, "-c", run_vermin, "-t=3.8-", "--violations", "--no-tips", *paths],
                          capture_output=True, text=True, timeout=300)


def test_vermin_says_the_device_side_runs_on_python_38():
    assert len(_present()) >= 30  # a listed module may be yet to come; the completeness test below guards the rest
    result = _vermin(*_present())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("construct", [
    '"ab".removeprefix("a")', "zip([1], [2], strict=True)", "import tomllib",
    "import functools\n@functools.cache\ndef f():\n    pass",
    "match 1:\n    case 1:\n        pass",
])
def test_vermin_fails_on_a_39_construct(construct, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(construct + "\n")
    assert _vermin(str(probe)).returncode != 0


_GENERIC = {"list", "dict", "tuple", "set", "frozenset", "type"}
_TYPES = _GENERIC | {"int", "float", "str", "bytes", "bool", "object"}


def runtime_typing_uses(source: str) -> list:
    """Lines where ``list[int]``-style generics or ``X | Y`` of types are evaluated at
    run time on Python 3.8 (anything outside an annotation)."""
    tree = ast.parse(source)
    annotations = set()
    for node in ast.walk(tree):
        for ann in ([node.annotation] if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation else []) + (
                [node.returns] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns else []):
            annotations.update(id(n) for n in ast.walk(ann))

    def is_type(node) -> bool:
        return (isinstance(node, ast.Name) and node.id in _TYPES) or (
            isinstance(node, ast.Constant) and node.value is None) or (
            isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in _GENERIC)

    hits = []
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in _GENERIC:
            hits.append(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (
                is_type(node.left) or is_type(node.right)):
            hits.append(node.lineno)
    return sorted(set(hits))


def test_no_new_typing_evaluated_at_run_time():
    found = {}
    for path in _present():
        lines = runtime_typing_uses(Path(path).read_text())
        if lines:
            found[str(Path(path).relative_to(REPO))] = lines
    assert found == {}, f"X | Y or list[...] evaluated at run time (breaks Python 3.8/3.9): {found}"
    probe = ("from __future__ import annotations\nimport numpy\nAlias = list[int]\n"
             "def f(x: list[int] | None = None) -> dict[str, int]:\n    return isinstance(x, int | None)\n"
             "flags = 1 | 2\n")
    assert runtime_typing_uses(probe) == [3, 5]


def _imports(module: str) -> set:
    """ofa_deploy modules ``module`` imports anywhere in its source (lazy imports too)."""
    path = PKG.parent / (module.replace(".", "/") + ".py")
    is_package = not path.is_file()
    if is_package:
        path = PKG.parent / module.replace(".", "/") / "__init__.py"
    package = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            parent = ".".join(base + ([node.module] if node.module else []))
            names = [parent] + [f"{parent}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            file = PKG.parent / (name.replace(".", "/") + ".py")
            if name.startswith("ofa_deploy") and (file.is_file() or (file.with_suffix("") / "__init__.py").is_file()):
                found.add(name)
    return found


def test_the_device_module_list_is_complete():
    listed = {"ofa_deploy." + m[:-3].replace("/", ".").replace(".__init__", "") for m in DEVICE_MODULES}
    listed.add("ofa_deploy")
    # from the device commands, and from every listed module (a listed module's own imports are device-side too)
    todo = ["ofa_deploy.cli"] + [f"ofa_deploy.cli.{c}" for c in DEVICE_COMMANDS] + sorted(listed - {"ofa_deploy"})
    seen = set()
    while todo:
        module = todo.pop()
        if module in seen or module.startswith(HOST_ONLY):
            continue
        seen.add(module)
        todo.extend(_imports(module))
    assert sorted(seen - listed) == [], ("device commands import modules vermin does not check: add them to "
                                         "DEVICE_MODULES here (or to HOST_ONLY if they need torch)")


def test_device_commands_run_without_torch(tmp_path):
    from conftest import make_fake_run, one_torch_thread

    from ofa_deploy.data import load_dataset
    from ofa_deploy.export import export_subnet
    from ofa_deploy.weights import load_supernet

    supernet, _ = load_supernet(make_fake_run(tmp_path / "run"))
    images = load_dataset("digits", "test").images[:8]
    export = tmp_path / "export"
    with one_torch_thread():  # made with torch here; built below where torch is blocked
        export_subnet(supernet, supernet.space.smallest(), "cuda", export, calib_images=images,
                      parity_images=images, recalibrate=False, calibration_count=8)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {
        ("space", "--json"): 0, ("targets", "--json"): 0, ("subnet", "sample", "--json"): 0,
        ("profile", "--help"): 0, ("catalog", "--help"): 0, ("build-engine", str(export)): 2,
    }
    for args, want in runs.items():
        code = NO_TORCH + f"from ofa_deploy.cli import main; raise SystemExit(main({list(args)!r}))"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == want, (args, result.stderr)
        assert "torch" not in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    if "tensorrt" not in sys.modules and not __import__("importlib").util.find_spec("tensorrt"):
        assert "TensorRT is not installed" in result.stderr
