"""The fingerprint as compact rich tables that fit an 80-column terminal with every number whole.

Numbers never wrap (``no_wrap``) and are short (4 significant digits, ``512x512x98``); only names
(class names, modalities) may wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from medseg.planning.records import Fingerprint

if TYPE_CHECKING:  # plan imports display's helpers' users; only the type is needed here
    from medseg.planning.plan import Plan


def num(value: float | int | None) -> str:
    """A short rendering: whole below a million from 1000 up (and integers), else 4 significant digits."""
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value:.4g}"
    if float(value).is_integer() or abs(value) >= 1000:
        return str(round(value))
    return f"{value:.4g}"


def axes(values: Sequence[float]) -> str:
    """``0.8x0.8x3`` (``-`` when empty)."""
    return "x".join(num(v) for v in values) if len(values) else "-"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i > 0, justify="left" if i == 0 else "right")
    return table


def geometry_table(fp: Fingerprint) -> Table:
    """Spacing, shape and cropped shape: median, min, max over the labelled cases."""
    table = _table(f"geometry ({fp.num_cases} labelled cases)", "", "median", "min", "max")
    rows = {
        "spacing mm": [c.spacing for c in fp.cases],
        "shape": [c.shape for c in fp.cases],
        "cropped": [c.cropped_shape for c in fp.cases],
    }
    for name, values in rows.items():
        per_axis = list(zip(*values))
        low = [min(a) for a in per_axis]
        high = [max(a) for a in per_axis]
        median = {"spacing mm": fp.median_spacing, "shape": fp.median_shape, "cropped": fp.median_cropped_shape}[name]
        table.add_row(name, axes(median), axes(low), axes(high))
    orientations = sorted({c.orientation for c in fp.cases if c.orientation})
    if orientations:
        table.caption = "orientation: " + ", ".join(orientations) + f"; spacing p10: {axes(fp.spacing_p10)}"
        table.caption_justify = "left"
    return table


def channel_table(fp: Fingerprint) -> Table:
    """Per channel: modality (``*`` = guessed) and the foreground intensity percentiles."""
    table = _table("foreground intensity", "channel", "p0.5", "median", "p99.5",
                   "mean", "std")
    for c in fp.channels:
        name = f"{c.index} {c.modality}{'*' if c.modality_guessed else ''}"
        s = c.foreground
        if s is None:
            table.add_row(name, "-", "-", "-", "-", "-")
        else:
            table.add_row(name, num(s.p00_5), num(s.median), num(s.p99_5), num(s.mean), num(s.std))
    if fp.modality_guessed:
        table.caption, table.caption_justify = "* guessed, not declared (see the warning)", "left"
    return table


def class_table(fp: Fingerprint) -> Table:
    """Per class: share of the label voxels, cases it appears in, objects and their sizes."""
    unit = fp.size_unit
    table = _table(f"classes (objects: voxels / {unit})", "class", "voxels", "cases", "objects",
                   "smallest", "median")
    table.add_row("0 background", f"{fp.background_fraction:.2%}", "", "", "", "")
    for c in fp.classes:
        table.add_row(
            f"{c.value} {c.name}", f"{c.fraction:.2%}" if c.fraction >= 1e-4 else f"{c.fraction:.1e}",
            f"{c.num_cases}/{fp.num_cases}", str(c.num_objects),
            f"{num(c.smallest_object_voxels)} / {num(c.smallest_object_mm)}",
            f"{num(c.median_object_voxels)} / {num(c.median_object_mm)}",
        )
    return table


def fingerprint_tables(fp: Fingerprint) -> list[Table]:
    """The three tables ``medseg data check`` prints."""
    return [geometry_table(fp), channel_table(fp), class_table(fp)]


def _short(value: object) -> str:
    """A config value in one short cell: numbers via :func:`num`, lists joined by ``x``, mappings by key."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return num(value)
    if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        return "x".join(num(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    return str(value)


def plan_table(plan: Plan) -> Table:
    """Every choice with its value and reason; the user's own values marked as such."""
    table = Table(title="plan", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    table.add_column("value", no_wrap=True)
    table.add_column("choice", overflow="fold", max_width=28)
    table.add_column("why", overflow="fold")
    for choice in plan.choices:
        why = choice.reason if choice.planned else "yours"
        table.add_row(choice.key, _short(choice.value), why)
    return table


def plan_summary(plan: Plan) -> str:
    """One line: the estimate the plan was chosen by."""
    e = plan.estimate
    return (f"plan: ≈{e.steps} steps of {e.step_seconds:.2f} s ({e.measured}), "
            f"{e.validations} validations of ≈{e.validation_seconds:.0f} s")
