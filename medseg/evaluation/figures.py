"""Figures: training curves, the Image | Mask | Prediction grid, and metric bar charts.

Every figure is drawn with matplotlib's Agg backend on an explicit ``Figure`` (no pyplot state,
safe in threads and headless machines) at a fixed size in pixels, and written atomically.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from medseg.utils import atomic_path

DPI = 100
#: Label colours: label k is drawn in ``LABEL_COLOURS[(k - 1) % len]`` (colour-blind-safe Okabe-Ito).
LABEL_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
CURVES_SIZE_PX = (1000, 400)
GRID_PANEL_PX, GRID_LABEL_PX, GRID_HEADER_PX, GRID_LEGEND_PX = 160, 40, 40, 30
BARS_SIZE_PX = (800, 450)


def save_png(fig: Figure, out_png: str | Path, dpi: int = DPI) -> Path:
    """Render ``fig`` with Agg and write it to ``out_png`` atomically; return the path."""
    out_png = Path(out_png)
    FigureCanvasAgg(fig)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return out_png


def _figure(width_px: int, height_px: int) -> Figure:
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


# -- training curves ------------------------------------------------------------------------------
def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _read_rows(source: str | Path | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(source, str | Path):
        with Path(source).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return list(source)


def plot_curves(metrics: str | Path | Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Two panels from a run's ``metrics.csv`` (or its rows): losses per epoch, validation Dice per epoch.

    Left: ``train_loss`` and, where present, ``val_loss``. Right: ``val_dice`` and any per-class
    ``dice_<name>`` columns. Empty cells (epochs without validation) are skipped, not drawn as 0.
    """
    rows = _read_rows(metrics)
    epochs = np.asarray([_number(r.get("epoch")) for r in rows])
    fig = _figure(*CURVES_SIZE_PX)
    loss_ax, dice_ax = fig.subplots(1, 2)

    def series(ax: Any, key: str, **style: Any) -> bool:
        values = np.asarray([_number(r.get(key)) for r in rows])
        keep = np.isfinite(values) & np.isfinite(epochs)
        if keep.any():
            ax.plot(epochs[keep], values[keep], marker="o" if keep.sum() < 30 else None, ms=3, label=key, **style)
        return bool(keep.any())

    series(loss_ax, "train_loss")
    series(loss_ax, "val_loss")
    series(dice_ax, "val_dice", lw=2)
    class_keys = sorted({k for r in rows for k in r if k.startswith("dice_")})
    for key in class_keys:
        series(dice_ax, key, ls="--", lw=1)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    dice_ax.set(title="Validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    for ax in (loss_ax, dice_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return save_png(fig, out_png)


# -- Image | Mask | Prediction grid -----------------------------------------------------------------
def mid_slice(volume: np.ndarray, label: int | None = None, axis: int = -1) -> int:
    """Index along ``axis`` of the slice with the most foreground (``label``, or any non-zero value).

    With no foreground anywhere, the middle slice. Use it on the ground truth so that every model's
    row shows the same slice.
    """
    volume = np.asarray(volume)
    axis = axis % volume.ndim
    mask = volume > 0 if label is None else volume == label
    counts = mask.sum(axis=tuple(a for a in range(volume.ndim) if a != axis))
    return int(np.argmax(counts)) if counts.any() else volume.shape[axis] // 2


def _display(image: np.ndarray) -> np.ndarray:
    """A 2D image scaled to [0, 1] by its 1st and 99th percentiles; RGB kept as colour."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        image = image.mean(-1)
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def _overlay_cmap() -> ListedColormap:
    return ListedColormap(["#00000000", *LABEL_COLOURS])


def _overlay(ax: Any, labels: np.ndarray, alpha: float = 0.55) -> None:
    labels = np.asarray(labels).astype(np.int64)
    shown = np.where(labels > 0, (labels - 1) % len(LABEL_COLOURS) + 1, 0)
    ax.imshow(np.ma.masked_equal(shown, 0).T, cmap=_overlay_cmap(), vmin=0, vmax=len(LABEL_COLOURS),
              alpha=alpha, interpolation="nearest")


def grid_size_px(n_rows: int, n_cases: int, panel_px: int = GRID_PANEL_PX, legend: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_grid`'s figure (``legend``: ``labels`` were given)."""
    height = GRID_HEADER_PX + n_rows * panel_px + (GRID_LEGEND_PX if legend else 0)
    return GRID_LABEL_PX + 3 * n_cases * panel_px, height


def plot_grid(
    rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]]],
    out_png: str | Path,
    labels: Mapping[int, str] | None = None,
    panel_px: int = GRID_PANEL_PX,
) -> Path:
    """One row per model; columns Image | Mask | Prediction for each case, masks as colour overlays.

    ``rows`` is ``[(model_name, [(image2d, mask2d, pred2d), ...]), ...]``; arrays are in medseg's
    axis order ``(x, y)`` (shown transposed, rows = y). 3D callers pass one slice per case, e.g. at
    :func:`mid_slice` of the ground truth. The Prediction panel also outlines the ground truth in
    white, so misses and false positives show. ``labels`` adds a colour legend below the grid.
    """
    if not rows:
        raise ValueError("plot_grid needs at least one row")
    n_cases = max(len(panels) for _, panels in rows)
    legend = bool(labels and any(k for k in labels))
    width, height = grid_size_px(len(rows), n_cases, panel_px, legend)
    fig = _figure(width, height)
    W, H = float(width), float(height)
    for c in range(n_cases):
        for k, title in enumerate(("Image", "Mask", "Prediction")):
            x = (GRID_LABEL_PX + (3 * c + k + 0.5) * panel_px) / W
            fig.text(x, 1 - GRID_HEADER_PX / 2 / H, f"{title} {c + 1}" if n_cases > 1 else title,
                     ha="center", va="center", fontsize=9)
    for r, (name, panels) in enumerate(rows):
        y0 = 1 - (GRID_HEADER_PX + (r + 1) * panel_px) / H
        fig.text(GRID_LABEL_PX / 2 / W, y0 + panel_px / 2 / H, name, rotation=90, ha="center", va="center",
                 fontsize=9)
        for c, (image, mask, pred) in enumerate(panels):
            for k, overlay in enumerate((None, mask, pred)):
                x0 = (GRID_LABEL_PX + (3 * c + k) * panel_px) / W
                ax = fig.add_axes((x0 + 1 / W, y0 + 1 / H, (panel_px - 2) / W, (panel_px - 2) / H))
                shown = _display(image)
                ax.imshow(np.swapaxes(shown, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                if overlay is not None:
                    _overlay(ax, overlay)
                if k == 2 and np.any(mask) and not np.all(mask):
                    ax.contour((np.asarray(mask) > 0).T.astype(np.float32), levels=[0.5], colors="white",
                               linewidths=0.7)
                ax.set_axis_off()
    if legend and labels:
        from matplotlib.patches import Patch

        handles = [Patch(color=LABEL_COLOURS[(k - 1) % len(LABEL_COLOURS)], label=v)
                   for k, v in sorted(labels.items()) if k]
        handles.append(Line2D([], [], color="black", lw=0.7, label="ground truth (white outline)"))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.patch.set_facecolor("white")
    return save_png(fig, out_png)


# -- bar chart --------------------------------------------------------------------------------------
def plot_bars(
    summary_by_model: Mapping[str, Mapping[str, Any]],
    metric: str = "dice",
    out_png: str | Path = "bars.png",
    error: str = "std",
) -> Path:
    """Bars of ``metric``'s mean per model (grouped by class) with error bars, from ``summary.json`` dicts.

    ``error`` is ``"std"`` (the spread over cases) or ``"ci95"`` (the bootstrap interval of the mean).
    """
    if error not in ("std", "ci95"):
        raise ValueError(f"error must be 'std' or 'ci95', not {error!r}")
    models = list(summary_by_model)
    classes: list[str] = []
    for s in summary_by_model.values():
        classes += [c for c in s.get("metrics", {}).get(metric, {}) if c not in classes]
    fig = _figure(*BARS_SIZE_PX)
    ax = fig.subplots()
    width = 0.8 / max(1, len(classes))
    x = np.arange(len(models))
    top = 0.0
    for j, cls in enumerate(classes):
        means, lower, upper, ns = [], [], [], []
        for m in models:
            st = summary_by_model[m].get("metrics", {}).get(metric, {}).get(cls, {})
            mean = st.get("mean")
            mean = float("nan") if mean is None else float(mean)
            if error == "std":
                spread = st.get("std")
                lo = hi = float("nan") if spread is None else float(spread)
            else:
                ci = st.get("ci95") or [math.nan, math.nan]
                lo, hi = mean - float(ci[0]), float(ci[1]) - mean
            means.append(mean)
            lower.append(lo)
            upper.append(hi)
            ns.append(st.get("n", 0))
        top = max([top, *(np.asarray(means) + np.asarray(upper))[np.isfinite(np.asarray(means) + np.asarray(upper))]])
        pos = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(pos, np.nan_to_num(means), width * 0.9, yerr=[np.nan_to_num(lower), np.nan_to_num(upper)],
                      capsize=4, color=LABEL_COLOURS[j % len(LABEL_COLOURS)], label=cls)
        for bar, mean, n in zip(bars, means, ns):
            if np.isfinite(mean):
                ax.annotate(f"{mean:.3f}\nn={n}", (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7, color="black")
    ax.set_xticks(x, models)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per model (mean, error bars: {'std over cases' if error == 'std' else '95% CI'})")
    if metric in ("dice", "iou", "nsd", "sensitivity", "specificity", "precision"):
        ax.set_ylim(0, max(1.05, top * 1.05))
    if len(classes) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out_png)
