"""The CLI reference in Markdown, generated from the click commands themselves.

``python -m ofa_deploy.cli.reference > docs/cli.md`` regenerates it; a test fails when
the committed file and the commands disagree.
"""

from __future__ import annotations

import click

from . import cli


def _walk(command: click.Command, path: list[str], ctx: click.Context):
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, path + [name], click.Context(sub, info_name=name, parent=ctx))


def render() -> str:
    # A fixed width keeps the text independent of the terminal it is generated in.
    root = click.Context(cli, info_name="ofa-deploy", terminal_width=100, max_content_width=100,
                         **{k: v for k, v in cli.context_settings.items() if k != "max_content_width"})
    parts = [
        "# ofa-deploy command reference",
        "",
        "Generated from the commands' own help by `python -m ofa_deploy.cli.reference`; do not edit by hand.",
        "",
    ]
    for path, command, ctx in _walk(cli, ["ofa-deploy"], root):
        title = " ".join(path)
        parts += [f"## `{title}`", "", "```", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    click.echo(render(), nl=False)
