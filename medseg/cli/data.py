"""``medseg data``: check a dataset, generate demo data, prepare public datasets, list dataset cards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli import app

data_app = typer.Typer(
    help="Datasets: validate (check), generate demo data (synth), convert downloads (prepare), list cards.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _fmt(values: list[float] | None) -> str:
    return " × ".join(f"{v:g}" for v in values) if values else "-"


@data_app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="Dataset folder (MSD, nnU-Net v2 raw, or images/ + labels/).")],
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Treat empty masks as warnings, not errors.")] = False,
) -> None:
    """Read every case and report problems; exit code 2 when there are errors.

    Errors: missing or unreadable files, image/label shape or geometry mismatch, non-integer or
    out-of-range labels, NaN/Inf, empty masks, differing channel counts. Also prints per-class
    voxel fractions, spacing and shape statistics and the intensity range.
    """
    from medseg.data.check import check_dataset

    console = Console()
    with console.status(f"checking {path} ..."):
        report = check_dataset(path, allow_empty=allow_empty)
    table = Table(title=f"medseg data check: {path}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("layout", f"{report.layout} ({report.spatial_dims}D)" if report.spatial_dims else report.layout)
    table.add_row("cases", f"{report.num_cases} labelled, {report.num_test} test")
    table.add_row("channels", ", ".join(f"{n} ({c} cases)" for n, c in sorted(report.channels.items())) or "-")
    for k, name in report.labels.items():
        fraction = report.class_fractions.get(k)
        table.add_row(f"class {k}", f"{name}: {fraction:.4%} of voxels" if fraction is not None else name)
    for key in ("min", "median", "max"):
        table.add_row(f"spacing {key}", _fmt(report.spacing.get(key)))
    for key in ("min", "median", "max"):
        table.add_row(f"shape {key}", _fmt(report.shape.get(key)))
    if report.intensity:
        i = report.intensity
        table.add_row("intensity", f"min {i['min']:g}, p1 {i['p01']:g}, p99 {i['p99']:g}, max {i['max']:g}")
    table.add_row("result", "[green]OK[/green]" if report.ok else f"[red]{len(report.errors)} error(s)[/red]")
    console.print(table)
    for message in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True, highlight=False)
    for message in report.errors:
        console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    if not report.ok:
        raise typer.Exit(2)


@data_app.command("synth")
def synth_command(
    kind: Annotated[str, typer.Option("--kind", help="nuclei2d (2D microscopy PNG) or organ3d (3D CT-like NIfTI).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to (new, empty, or an earlier demo).")],
    cases: Annotated[int | None, typer.Option("--cases", help="Training cases (default 40 / 12); test cases: a fifth.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Generate a demo dataset in MSD layout (dataset.json, imagesTr, labelsTr, imagesTs, labelsTs)."""
    from medseg.data.synthetic import generate

    start = time.perf_counter()
    path = generate(kind, out, n_cases=cases, seed=seed)
    Console().print(f"wrote {kind} demo dataset to {path} in {time.perf_counter() - start:.1f} s")


@data_app.command("prepare")
def prepare_command(
    name: Annotated[str, typer.Argument(help="Dataset card name or alias (see medseg data list), e.g. kvasir_seg.")],
    src: Annotated[Path, typer.Option("--src", help="The downloaded archive (.zip/.tar) or its unpacked folder.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the converted dataset.")],
) -> None:
    """Convert a downloaded public dataset into a layout medseg reads (nothing is downloaded)."""
    from medseg.data.datasets import discover
    from medseg.data.prepare import prepare

    console = Console()
    with console.status(f"preparing {name} from {src} ..."):
        path = prepare(name, src, out)
    info = discover(path)
    console.print(f"wrote {path}: {info.layout} layout, {len(info.cases)} labelled and {len(info.test_cases)} test cases; "
                  f"next: medseg data check {path}")


@data_app.command("list")
def list_command() -> None:
    """List the dataset cards: modality, classes, license and recommended preset."""
    from medseg.data.prepare import list_cards

    table = Table(title="medseg dataset cards (medseg data prepare NAME --src DOWNLOAD --out DIR)")
    for col in ("Name", "Modality", "Classes", "Preset", "License"):
        table.add_column(col, overflow="fold")
    for c in list_cards():
        preset = c.get("preset", {})
        detail = [preset.get("preset", "")]
        if preset.get("spacing"):
            detail.append("spacing " + _fmt(preset["spacing"]))
        if preset.get("patch_size"):
            detail.append("patch " + _fmt(preset["patch_size"]))
        classes = ", ".join(str(v) for k, v in c["classes"].items() if int(k) != 0)
        table.add_row(c["name"], c["modality"], classes, "; ".join(detail), str(c["license"]).split(";")[0])
    Console().print(table)
