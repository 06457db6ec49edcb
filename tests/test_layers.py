"""The package's layers are a contract a tool checks (import-linter, ``pyproject.toml``).

CI runs ``lint-imports`` on the tree; these tests show that the contract bites: a copy of the
package with an upward import planted in ``space.py``, or ``import torch`` planted in the
measuring side, fails it, and the tree as it is passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's ofa_deploy, not the installed one
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "ofa_deploy", root / "ofa_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _plant(path: Path, line: str) -> None:
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + line + "\n", 1))


def test_the_tree_keeps_its_layers(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("space.py", "from .catalog import Catalog", "layers"),
    ("evaluate/runs.py", "from ..report import build_report", "layers"),
    ("profile/protocol.py", "import torch", "device side without torch"),
    ("catalog/entries.py", "from ..nn import Supernet", "device side without torch"),
])
def test_a_planted_import_breaks_the_contract(tmp_path, module, line, contract):
    root = _copy(tmp_path)
    _plant(root / "ofa_deploy" / module, line)
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert f"{contract} BROKEN" in result.stdout
