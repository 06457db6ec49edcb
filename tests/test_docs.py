"""The README and the CLI reference say what the code does."""

from __future__ import annotations

import re
import shlex
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


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every ``ofa-deploy ...`` line in a code block of the README and
    of the results' READMEs (continuations joined; comments and redirections cut)."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "results").glob("*/README.md"))]:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"\s(?:;|&&)\s", line.split(" #", 1)[0]):
                    if "ofa-deploy " in part:
                        command = re.split(r"\s(?:>|\|)\s?", part.split("ofa-deploy ", 1)[1])[0]
                        out.append((path.relative_to(ROOT).as_posix(), shlex.split(command)))
    return out


def test_documented_commands_parse():
    """Every command the docs show names real subcommands and options (bad values are let
    through: the paths they name exist only on the machine where they ran)."""
    import click

    from ofa_deploy.cli import cli

    commands = documented_commands()
    assert len(commands) > 20
    for where, argv in commands:
        cmd, args, ctx = cli, list(argv), cli.make_context("ofa-deploy", [], resilient_parsing=True)
        while isinstance(cmd, click.Group):  # the docs pass no options to groups themselves
            sub = cmd.get_command(ctx, args[0]) if args else None
            assert sub is not None, f"{where}: `ofa-deploy {shlex.join(argv)}`: no such command {args[:1]}"
            cmd, ctx, args = sub, click.Context(sub, info_name=args[0], parent=ctx), args[1:]
        try:
            cmd.make_context(ctx.info_name, args, parent=ctx.parent)
        except click.BadParameter:  # a value (a path of that machine, a missing required one), not a name
            pass
        except click.UsageError as exc:
            raise AssertionError(f"{where}: `ofa-deploy {shlex.join(argv)}`: {exc.format_message()}") from None
