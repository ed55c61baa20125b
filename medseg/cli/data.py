"""``medseg data``: check a dataset, generate demo data, prepare public datasets, list dataset cards."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medseg.cli import app

if TYPE_CHECKING:
    from medseg.data.check import CheckReport
    from medseg.planning import Fingerprint

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
    as_json: Annotated[bool, typer.Option("--json", help="Print the report and the fingerprint as JSON.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Read every case even if nothing changed.")] = False,
) -> None:
    """Read every case, report problems and the dataset fingerprint; exit code 2 on errors.

    Errors: missing or unreadable files, image/label shape or geometry mismatch, non-integer or
    out-of-range labels, NaN/Inf, empty masks, differing channel counts. The fingerprint: spacing,
    shape and cropped shape (median/min/max), per-channel modality and foreground intensity
    percentiles, per-class voxel fraction and object sizes. Both are cached in the dataset's
    .medseg/ folder and reused while no file changes.
    """
    report, fp = _check(path, allow_empty, cache=not no_cache, quiet=as_json)
    if as_json:
        payload = {"check": report.as_dict(), "fingerprint": fp.to_dict() if fp is not None else None}
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_check(report, fp)
    if not report.ok:
        raise typer.Exit(2)


def _check(path: Path, allow_empty: bool, cache: bool, quiet: bool) -> tuple[CheckReport, Fingerprint | None]:
    """The check report and the fingerprint (None when the layout is not recognised)."""
    from medseg.data.check import CheckReport
    from medseg.data.datasets import discover
    from medseg.errors import MedsegError
    from medseg.planning import analyse

    try:
        info = discover(path)
    except MedsegError as err:
        return CheckReport(path, errors=[str(err)]), None
    columns = [TextColumn("checking {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task(str(path), total=None)
        analysis = analyse(info, allow_empty=allow_empty, cache=cache,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    return analysis.check, analysis.fingerprint


def _print_check(report: CheckReport, fp: Fingerprint | None) -> None:
    """The summary table, the fingerprint tables, then one line per warning and error."""
    from medseg.planning.display import fingerprint_tables

    console = Console()
    table = Table(title=f"medseg data check: {report.root}", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("layout", f"{report.layout} ({report.spatial_dims}D)" if report.spatial_dims else report.layout)
    table.add_row("cases", f"{report.num_cases} labelled, {report.num_test} test")
    table.add_row("channels", ", ".join(f"{n} ({c} cases)" for n, c in sorted(report.channels.items())) or "-")
    if report.intensity:
        i = report.intensity
        table.add_row("intensity", f"min {i['min']:g}, p1 {i['p01']:g}, p99 {i['p99']:g}, max {i['max']:g}")
    table.add_row("result", "[green]OK[/green]" if report.ok else f"[red]{len(report.errors)} error(s)[/red]")
    console.print(table)
    for fp_table in fingerprint_tables(fp) if fp is not None else []:
        console.print()
        console.print(fp_table)
    for message in [*report.warnings, *(fp.warnings if fp is not None else ())]:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)
    for message in report.errors:
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)


@data_app.command("synth")
def synth_command(
    kind: Annotated[str, typer.Option("--kind", help="Demo: nuclei2d (2D microscopy PNG) or organ3d (3D CT-like NIfTI); unlike the demo (benchmarks/time_to_dice.py): micro2d_small, derm2d_rgb, ct3d_lesion, mri3d_2ch.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to (new, empty, or an earlier demo).")],
    cases: Annotated[int | None, typer.Option("--cases", help="Training cases (default 40 / 12); test cases: a fifth.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Generate a dataset with held-out labels: the demo kinds (MSD layout), or one of four made unlike the demo (folder, MSD and nnU-Net layouts)."""
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
