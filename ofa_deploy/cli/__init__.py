"""The ``ofa-deploy`` command line: a thin layer of click commands over the library.

Each ``cmd_<name>.py`` module here defines one top-level command (or group) called
``command``; the group finds them by file name (``cmd_build_engine.py`` -> ``build-engine``)
and imports a module only when its command runs, so commands that need no torch
(``space``, ``subnet``, ``profile``, ``catalog``) start fast and work where torch is absent.
Modules must not import torch at module level.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sqlite3
import sys

import click

from .. import __version__
from ..errors import Interrupted, OfaError, Terminated


def _command_modules() -> dict[str, str]:
    return {
        info.name[4:].replace("_", "-"): f"{__name__}.{info.name}"
        for info in pkgutil.iter_modules(__path__)
        if info.name.startswith("cmd_")
    }


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_command_modules())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = _command_modules().get(name)
        if module is None:
            return None
        return importlib.import_module(module).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ofa-deploy")
def cli() -> None:
    """Train a Once-For-All supernet and ship its subnets to many devices."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs ``cli`` and turns every user error into one line on stderr.

    Exit status 2 for bad input (click usage errors and ``OfaError``), 1 for a command
    that reports a negative answer itself, 130 on Ctrl-C, 143 on ``SIGTERM`` (``signals.py``:
    training checkpoints at the step it is in first).
    """
    from .. import signals

    with signals.handled():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        # Without standalone mode click returns ctx.exit(code)'s code instead of exiting.
        code = cli.main(args=argv, prog_name="ofa-deploy", standalone_mode=False)
    except Terminated as exc:
        click.echo(f"ofa-deploy: {exc}", err=True)
        return 130 if isinstance(exc, Interrupted) else 143
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("ofa-deploy: aborted", err=True)
        return 130
    except click.exceptions.NoSuchOption as exc:
        click.echo(f"ofa-deploy: error: {exc.format_message()}{_dash_hint(exc, argv)}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"ofa-deploy: error: {exc.format_message()}", err=True)
        return exc.exit_code if not isinstance(exc, click.UsageError) else 2
    except OfaError as exc:
        click.echo(f"ofa-deploy: error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("ofa-deploy: interrupted", err=True)
        return 130
    except OSError as exc:
        # the environment refused (permissions, a full disk, a file where a folder belongs):
        # what the OS said and about which file is the whole message
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"ofa-deploy: error: {exc.strerror or exc}{where}", err=True)
        return 2
    except sqlite3.DatabaseError as exc:
        click.echo(f"ofa-deploy: error: the catalog database is damaged or not a catalog ({exc})", err=True)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _dash_hint(exc: click.exceptions.NoSuchOption, argv: list[str] | None) -> str:
    """A value that begins with '-' followed by a digit (a subnet SPEC such as -33-33_...,
    a negative number) reads as an option: say so, and how to pass it."""
    args = sys.argv[1:] if argv is None else argv
    value = next((a for a in args if a.startswith(exc.option_name) and re.match(r"-[0-9.]", a)), None)
    if value is None:
        return ""
    return (f" ('{value}' begins with '-', so it reads as an option; to pass it as a SPEC or value, put `--` "
            f"before it: ... -- {value})")


def run() -> None:
    code = main()
    if _process_group_left_open():
        # a torchrun worker stopped by SIGTERM or Ctrl-C (``search.run.search_run``): the interpreter's
        # teardown would destroy a gloo group that may still wait on a peer (a hang, or SIGABRT:
        # "terminate called without an active exception"); its outputs and journal are closed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _process_group_left_open() -> bool:
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()
