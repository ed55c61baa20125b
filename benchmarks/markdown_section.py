"""Shared by the benchmark scripts: write one ``## `` section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from medseg.utils import atomic_write_text


def write_section(path: str, heading: str, body: str) -> None:
    """Replace the ``heading`` section of the markdown file ``path`` (up to the next ``## ``), or append
    it; other sections are left as they are. Written atomically."""
    old = Path(path).read_text(encoding="utf-8") if Path(path).exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    section = f"{heading}\n\n{body.rstrip()}\n\n"
    if start is None:
        new = old.rstrip() + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section + "".join(lines[end:])
    atomic_write_text(path, new.rstrip() + "\n")
