"""Training progress: rich bars on a terminal, one plain line per epoch otherwise (CI, log files)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Epoch and step bars with loss, learning rate, the latest validation Dice and the ETA."""

    def __init__(self, console: Console, epochs: int, start_epoch: int, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self._progress: Progress | None = None
        self._epoch_task: Any = None
        self._step_task: Any = None
        self.last_dice: float | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._epoch_task = self._progress.add_task("epochs", total=epochs, completed=start_epoch - 1, info="")
            self._step_task = self._progress.add_task("steps", total=1, info="")
            self._progress.start()

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._progress is not None:
            self._progress.reset(self._step_task, total=steps, description=f"epoch {epoch}", info="")

    def step(self, loss: float, lr: float) -> None:
        if self._progress is not None:
            dice = f" val dice {self.last_dice:.3f}" if self.last_dice is not None else ""
            self._progress.update(self._step_task, advance=1, info=f"loss {loss:.4f} lr {lr:.2e}{dice}")

    def end_epoch(self, row: dict[str, Any], total_epochs: int, budget: str = "") -> None:
        if row.get("val_dice") not in (None, ""):
            self.last_dice = float(row["val_dice"])
        line = format_row(row, total_epochs, budget)
        if self._progress is not None:
            self._progress.update(self._epoch_task, advance=1, info=line.split("|", 1)[-1].strip())
            self._progress.console.log(line)
        elif self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def format_row(row: dict[str, Any], total_epochs: int, budget: str = "") -> str:
    """One plain line for an epoch's metrics row; ``budget`` says how much of a time budget is used
    (with ``--max-minutes`` the run stops on time, usually before ``total_epochs``)."""
    parts = [f"epoch {row['epoch']}/{total_epochs}", f"loss {row['train_loss']:.4f}"]
    if row.get("val_dice") not in (None, ""):
        parts.append(f"val loss {row['val_loss']:.4f}")
        parts.append(f"val dice {row['val_dice']:.4f}")
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    if budget:
        parts.append(budget)
    return f"{parts[0]} | " + "  ".join(parts[1:])


def budget_fit(epoch: int, total_epochs: int, seconds_left: float, epoch_seconds: float, minutes: float) -> str:
    """One line when a time budget will end the run before ``total_epochs`` (else ''): the epoch it ends
    in at the speed ``epoch`` ran at, so 'epoch 9/12' at the end is expected, not a failure."""
    if epoch >= total_epochs or epoch_seconds <= 0:
        return ""
    last = epoch + max(0, math.ceil(seconds_left / epoch_seconds))  # the last one usually cut short
    if last >= total_epochs:
        return ""
    return (f"at {epoch_seconds:.0f} s an epoch the {minutes:g}-min budget ends the run in about epoch {last} "
            f"of {total_epochs}; the learning-rate schedule ends with the budget")
