"""The docs and the CLI reference say what the code does (tests/test_readme.py: the README runs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ofa_deploy.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_in_sync():
    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m ofa_deploy.cli.reference > docs/cli.md"


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every ``ofa-deploy ...`` line in a code block of the README, of the
    pages in docs/ (but the generated cli.md) and of the results' READMEs (continuations joined;
    comments and redirections cut). tests/test_readme.py also runs the README's."""
    out = []
    pages = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "cli.md"]
    for path in [ROOT / "README.md", *pages, *sorted((ROOT / "results").glob("*/README.md"))]:
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
