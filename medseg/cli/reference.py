"""Render the CLI reference (docs/cli.md) from the commands' own ``--help`` texts.

``python -m medseg.cli.reference > docs/cli.md`` regenerates it; a test fails when it is stale.
"""

from __future__ import annotations

import os

import typer
from typer.testing import CliRunner

from medseg.cli import _register, app

HEADER = """# CLI reference

Generated from `--help` by `python -m medseg.cli.reference > docs/cli.md`; `tests/test_docs.py`
fails when this page and the commands disagree.
"""


def command_paths() -> list[list[str]]:
    """Every command and sub-command, as argument lists (``[]`` is the top level)."""
    _register()
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        commands = getattr(group, "commands", {})  # typer's (vendored click) Group
        for name in sorted(commands):
            paths.append([*prefix, name])
            walk(commands[name], [*prefix, name])

    walk(root, [])
    return paths


def render() -> str:
    """The whole reference page, at a fixed width so that it is reproducible."""
    runner = CliRunner()
    env = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        parts = [HEADER]
        for path in command_paths():
            result = runner.invoke(app, [*path, "--help"], prog_name="medseg", env=env, color=False)
            title = " ".join(["medseg", *path])
            text = "\n".join(line.rstrip() for line in result.output.strip().splitlines())
            parts.append(f"## `{title}`\n\n```text\n{text}\n```\n")
        return "\n".join(parts)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    print(render(), end="")
