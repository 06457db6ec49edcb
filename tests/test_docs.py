"""The README and the CLI reference say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from ofa_deploy.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_in_sync():
    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m ofa_deploy.cli.reference > docs/cli.md"


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_setup_is_two_commands_and_ci_runs_the_same():
    install_and_run, tests = setup_commands()
    assert "pip install" in install_and_run and "ofa-deploy quickstart" in install_and_run
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci
    packages = re.search(r"pip install (.*?) &&", install_and_run).group(1)
    assert f"pip install -q {packages}" in ci, "CI must install exactly what the README installs"
