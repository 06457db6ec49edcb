"""The README runs as written.

Its shell blocks (```bash, ```sh, ```console) are read line by line and run in order, in a
fresh directory holding a ``quickstart --fast`` output as ``quickstart/``, so that a renamed
option, a wrong path or a run the README never creates fails CI. Commands too costly for CI or
that need a device are listed in ``NOT_RUN`` with the reason; every command, run or not, is
parsed against the real CLI (subcommands, options, argument counts). Links from the README and
docs/ to files must exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from ofa_deploy.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands not run here, and why (each pattern must match a README line: no stale entries).
NOT_RUN = {
    r"^python3 -m venv ": "set-up: .ci/run installs the same packages (test_setup_installs_what_ci_installs)",
    r"^ofa-deploy quickstart$": "the fixture runs `ofa-deploy quickstart --fast` in its place",
    r"^python -m pytest": "the test suite itself",
    r"^ofa-deploy build-engine ": "needs TensorRT and the device's GPU (a Jetson)",
    r"^ofa-deploy profile \S+ --target jetson": "measures on a Jetson",
    r"^ofa-deploy catalog import digits-8m-orin\.json": "needs the Jetson's profile result",
    r"^ofa-deploy catalog select .*--target jetson-orin": "needs a Jetson measurement imported",
    r"^ofa-deploy import-ofa ofa_mbv3_": "needs MIT's published checkpoint (a download) and ImageNet",
    r"runs/ofa-w1\.2": "an imported ImageNet supernet: needs the checkpoint and ImageNet (tests/test_stream.py "
                        "runs the same commands on a small generated folder)",
}

# Run with these options appended (click keeps an option's last value): the same command on
# less work, so that CI stays short.
CHEAPER = {
    r"^ofa-deploy train ": "--epochs 1 --train-subset 192 --test-subset 100 --quiet",
    r"^ofa-deploy eval ": "--per-bucket 1 --calib-n 128 --quiet",
    r"^ofa-deploy export ": "--bn-images 128 --parity-images 64",
    r"^ofa-deploy predictor (build|adapt|check) ": "--warmup-s 0 --min-iterations 2 --min-time-s 0.01 --rounds 1",
    r"^ofa-deploy predictor build ": "--n 10 --holdout 3",
    r"^ofa-deploy predictor check ": "--n 3",
    r"^ofa-deploy predictor adapt ": "--budget 5 --step 5",
    r"^ofa-deploy catalog build ": "--n 4 --finalists 2 --calib-images 128 --test-images 100 --warmup-s 0 "
                                   "--min-iterations 2 --min-time-s 0.01",
}

# Exit codes other than 0 that a command may end with here, and why.
MAY_EXIT = {
    r"^ofa-deploy catalog select ": (1, "exits 1 when nothing meets the budget: that depends on this machine"),
}


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every command in the shell blocks of a Markdown text:
    comments cut, ``\\`` continuations joined, console blocks' ``$ `` prompts stripped (their
    other lines are output)."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(bash|sh|console)\s*$", lines[i])
        i += 1
        if not fence:
            continue
        while i < len(lines) and not lines[i].startswith("```"):
            number, line = i + 1, lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i]
            i += 1
            if fence.group(1) == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            command = " ".join(shlex.split(line, comments=True))
            if command:
                out.append((number, command))
        i += 1
    return out


def readme_commands() -> list[tuple[int, str]]:
    return shell_lines(README.read_text())


def matching(table: dict, command: str) -> list:
    return [value for pattern, value in table.items() if re.search(pattern, command)]


def argv_of(command: str) -> list[str]:
    assert command.startswith("ofa-deploy "), command
    argv = shlex.split(command)[1:]
    bad = [a for a in argv if a in {"|", "||", "&&", ";", ">", ">>", "<"}]
    assert not bad, f"`{command}`: this test runs one ofa-deploy command per line, not shell operators {bad}"
    return argv


def check_parses(argv: list[str], where: str) -> None:
    """Subcommands, option names, option values (but paths: they may exist only on the device)
    and argument counts, without running the command."""
    cmd: click.Command = cli
    ctx = cli.make_context("ofa-deploy", [], resilient_parsing=True)
    args = list(argv)
    while isinstance(cmd, click.Group):
        sub = cmd.get_command(ctx, args[0]) if args else None
        assert sub is not None, f"{where}: no such command {args[:1]}"
        cmd, ctx, args = sub, click.Context(sub, info_name=args[0], parent=ctx), args[1:]
    try:
        cmd.make_context(ctx.info_name, args, parent=ctx.parent)
    except click.MissingParameter as exc:
        raise AssertionError(f"{where}: {exc.format_message()}") from None
    except click.BadParameter as exc:  # a path of another machine (the device's result file) is fine
        if not isinstance(getattr(exc.param, "type", None), (click.Path, click.File)):
            raise AssertionError(f"{where}: {exc.format_message()}") from None
    except click.UsageError as exc:
        raise AssertionError(f"{where}: {exc.format_message()}") from None


def test_readme_has_commands_and_every_list_entry_is_used():
    commands = [c for _, c in readme_commands()]
    assert sum(c.startswith("ofa-deploy ") for c in commands) >= 15
    for table in (NOT_RUN, CHEAPER, MAY_EXIT):
        for pattern in table:
            assert any(re.search(pattern, c) for c in commands), f"no README command matches {pattern!r} any more"


@pytest.mark.parametrize("number,command", readme_commands(), ids=lambda v: str(v)[:60])
def test_readme_command_parses(number, command):
    if not command.startswith("ofa-deploy "):
        assert matching(NOT_RUN, command), f"README.md:{number}: `{command}` is neither ofa-deploy nor in NOT_RUN"
        return
    check_parses(argv_of(command), f"README.md:{number}: `{command}`")


def test_setup_installs_what_ci_installs():
    """The set-up block activates the environment it installs into, installs exactly what CI
    installs, and the README's test command is the one CI runs."""
    ci = (ROOT / ".ci" / "run").read_text()
    text = README.read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    setup = shell_lines(section)
    install = re.search(r"^python3 -m venv .*$", section, re.M).group(0)  # as written, quotes and all
    assert ". .venv/bin/activate" in install and install.index("activate") < install.index("pip install")
    packages = re.search(r"pip install (.*)$", install).group(1)
    assert f"pip install -q {packages}" in ci, "CI must install exactly what the README installs"
    assert [c for _, c in setup[1:]] == ["ofa-deploy quickstart", "python -m pytest -q"]
    tests = shell_lines(text.split("## Tests", 1)[1].split("\n## ", 1)[0])
    assert [c for _, c in tests] == ["python -m pytest -q"]
    assert "\n.venv/bin/python -m pytest -q\n" in ci


def test_readme_is_a_front_page():
    assert len(README.read_bytes()) <= 10_000
    assert "runs/fmnist-rss" not in README.read_text() and "runs/c10-rss" not in README.read_text()


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown text."""
    out = set()
    for heading in re.findall(r"^#+\s+(.*)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.relative_to(ROOT)}: link to {target} that does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text()), f"{page.relative_to(ROOT)}: no heading #{anchor} in {path}"


def test_targets_comment_lists_every_target():
    from ofa_deploy.targets import list_targets

    line = next(c for _, c in readme_commands() if c == "ofa-deploy targets")
    comment = next(raw for raw in README.read_text().splitlines() if raw.startswith("ofa-deploy targets "))
    assert line
    for name in (target.name for target in list_targets()):
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", comment), f"the targets comment omits {name}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A fresh directory with a ``quickstart --fast`` output where the README expects the
    quickstart's: ``quickstart/``."""
    work = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["quickstart", "--fast", "--device", "cpu", "--quiet"]) == 0
    return work


@pytest.mark.slow
def test_readme_runs_as_written(workdir, monkeypatch, capsys):
    """Every README command but NOT_RUN's, in the README's order, in one directory (later
    commands use what earlier ones made): exit 0, or what MAY_EXIT allows."""
    monkeypatch.chdir(workdir)
    ran = 0
    for number, command in readme_commands():
        if matching(NOT_RUN, command):
            continue
        argv = argv_of(command)
        for extra in matching(CHEAPER, command):
            argv += shlex.split(extra)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        allowed = {0, *(c for c, _ in matching(MAY_EXIT, command))}
        assert code in allowed, (f"README.md:{number}: `{command}` exited {code} (run as "
                                 f"`ofa-deploy {shlex.join(argv)}`)\n{out[-2000:]}\n{err[-2000:]}")
        ran += 1
    assert ran >= 10
    assert (workdir / "site" / "index.html").is_file()
    assert (workdir / "reports" / "rss-vs-ps" / "report.md").is_file()


def test_quickstart_next_steps_are_commands_that_parse(tmp_path):
    """The quickstart's "what to do next" table: real commands and options, typed the way the
    quickstart itself was started (so they work without an activated environment too)."""
    from ofa_deploy.quickstart import invoked_as, next_steps

    steps = next_steps(Path("quickstart"), program="ofa-deploy")
    commands = [cmd for _, cmd in steps if cmd.startswith("ofa-deploy ")]
    assert len(commands) >= 5
    for command in commands:
        check_parses(argv_of(command), f"next_steps: `{command}`")
    typed = dict(next_steps(Path("quickstart"), program=".venv/bin/ofa-deploy"))
    assert typed["Pick a model by latency"].startswith(".venv/bin/ofa-deploy catalog select ")

    script = tmp_path / "bin" / "ofa-deploy"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", "/nonexistent")
        assert invoked_as(str(script)) == str(script)  # not on PATH: the path as typed
        assert invoked_as("/x/ofa_deploy/__main__.py", "/x/bin/python") == "/x/bin/python -m ofa_deploy"
        script.chmod(0o755)
        mp.setenv("PATH", str(script.parent))
        assert invoked_as(str(script)) == "ofa-deploy"  # on PATH (an activated environment)
        assert invoked_as("/usr/bin/pytest") == "ofa-deploy"  # called from Python
