"""The docs cannot rot: the CLI reference is regenerated, and every documented command parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from medseg.cli import _register, app
from medseg.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``medseg ...`` line inside a fenced bash block."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            for line in block.splitlines():
                line = line.split("  #", 1)[0].strip().removeprefix("$ ")
                if line.startswith("medseg "):
                    found.append((page.name, line))
    return found


def test_cli_reference_is_current() -> None:
    expected = render()
    actual = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is stale: run python -m medseg.cli.reference > docs/cli.md"


@pytest.mark.parametrize(("page", "command"), documented_commands())
def test_documented_command_parses(page: str, command: str) -> None:
    """Each documented command names real verbs and options with valid values (parsed, not run)."""
    _register()
    command_obj = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    name = "medseg"
    parent = None
    while True:
        ctx = command_obj.make_context(name, list(args), parent=parent, resilient_parsing=False)
        if not hasattr(command_obj, "commands"):
            break
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        name, sub, args = command_obj.resolve_command(ctx, rest)
        assert sub is not None, f"{page}: unknown command {name!r} in: {command}"
        command_obj, parent = sub, ctx
