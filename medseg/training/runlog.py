"""A run's human-readable record: ``metrics.csv``, ``log.txt`` and ``curves.png``, rewritten atomically."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

from medseg.utils import atomic_write_text

METRIC_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_seconds", "wall_seconds"]


class RunLog:
    """metrics.csv, log.txt and curves.png of a run; only the writing rank has ``enabled``."""

    def __init__(self, run_dir: Path, label_names: list[str], enabled: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.fields = METRIC_FIELDS[:4] + [f"dice_{n}" for n in label_names] + METRIC_FIELDS[4:]
        self.rows: list[dict[str, Any]] = []
        self.log_lines: list[str] = []

    def load(self, upto_epoch: int) -> None:
        """On resume: keep the rows and log of completed epochs only."""
        path = self.run_dir / "metrics.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if int(row["epoch"]) <= upto_epoch:
                        self.rows.append({k: _num(v) for k, v in row.items()})
        log = self.run_dir / "log.txt"
        if log.is_file():
            self.log_lines = log.read_text(encoding="utf-8").splitlines()

    def log(self, line: str) -> None:
        """Append a time-stamped line to log.txt."""
        self.log_lines.append(f"{datetime.now().isoformat(timespec='seconds')} {line}")
        if self.enabled:
            atomic_write_text(self.run_dir / "log.txt", "\n".join(self.log_lines) + "\n")

    def add(self, row: dict[str, Any]) -> None:
        """Record one epoch's row in metrics.csv and redraw curves.png."""
        self.rows.append(row)
        if not self.enabled:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())
        from medseg.evaluation.figures import plot_curves

        plot_curves(self.rows, self.run_dir / "curves.png")


def _num(value: str) -> Any:
    if value == "":
        return ""
    try:
        return int(value)
    except ValueError:
        return float(value)


def tensorboard_writer(run_dir: Path) -> Any:
    """A TensorBoard writer in ``run_dir/tb`` when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
