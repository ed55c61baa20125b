"""The degradation experiment's figures: error curves (He et al. Fig. 6), per-layer gradient norms,
and per-layer response standard deviations (Fig. 7). Explicit Agg figures, no pyplot state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medseg.evaluation.figures import save_png

#: Line style of each family in the per-layer figures.
STYLES = {"plain": "-", "resnet": "--", "highway": ":", "fractal": "-."}


def _figure(width_in: float, height_in: float) -> tuple[Figure, list[str]]:
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig, rcParams["axes.prop_cycle"].by_key()["color"]


def plot_curves(
    curves: dict[str, list[dict[str, float]]], families: Sequence[str], depths: Sequence[int], out: Path
) -> Path:
    """Fig. 6's layout, one panel per family: dashed = training error, bold = held-out error, one
    colour per depth. Returns ``out``."""
    fig, colours = _figure(5.5 * len(families), 4.2)
    axes = fig.subplots(1, len(families), sharey=True, squeeze=False)[0]
    top = 0.0
    for ax, family in zip(axes, families):
        for depth, colour in zip(depths, colours):
            name = f"{family}-{depth}"
            log = curves.get(name, [])
            steps = [r["step"] for r in log]
            train = [100 * r["train_error"] for r in log]
            test = [100 * r["test_error"] for r in log]
            top = max([top, *(v for v in train + test if math.isfinite(v))])
            ax.plot(steps, train, "--", color=colour, linewidth=1.0, label=f"{name} train")
            ax.plot(steps, test, "-", color=colour, linewidth=2.2, label=f"{name} test")
        ax.set_title(f"{family} networks")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(0, min(100.0, top * 1.05 + 1))
    fig.suptitle("Degradation (cf. He et al. 2015, Fig. 6): dashed = training, bold = held-out")
    fig.tight_layout()
    return save_png(fig, out, dpi=100)


def _per_layer(ax, rows: list[dict[str, object]], value: str, colours: list[str], sort: bool = False) -> None:
    depths = sorted({int(r["depth"]) for r in rows})  # type: ignore[call-overload]
    families = list(dict.fromkeys(str(r["family"]) for r in rows))
    for depth, colour in zip(depths, colours):
        for family in families:
            sel = [r for r in rows if r["depth"] == depth and r["family"] == family]
            if not sel:
                continue
            values = [max(float(r[value]), 1e-30) for r in sel]  # type: ignore[arg-type]
            values = sorted(values, reverse=True) if sort else values
            ax.semilogy(range(1, len(values) + 1), values, STYLES.get(family, "-"), color=colour,
                        label=f"{family}-{depth}")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def plot_gradient_norms(rows: list[dict[str, object]], out: Path) -> Path:
    """Per-layer gradient norms, log scale: at init with BN, at init without BN, after training (BN);
    one colour per depth, one line style per family. Returns ``out``."""
    panels = [("init", True, "at initialisation, with BN"), ("init", False, "at initialisation, without BN"),
              ("trained", True, "after training, with BN")]  # fmt: skip
    fig, colours = _figure(16, 4.6)
    axes = fig.subplots(1, len(panels))
    for ax, (phase, bn, title) in zip(axes, panels):
        _per_layer(ax, [r for r in rows if r["phase"] == phase and r["batch_norm"] == bn], "grad_norm", colours)
        ax.set_title(title)
        ax.set_xlabel("conv layer (1 = input side)")
    axes[0].set_ylabel("‖∂loss/∂W‖ of the layer's weights")
    fig.suptitle("Per-layer gradient norms on one fixed batch (log scale)")
    fig.tight_layout()
    return save_png(fig, out, dpi=100)


def plot_response_stds(rows: list[dict[str, object]], out: Path) -> Path:
    """He et al.'s Fig. 7: the std of each layer's response (after BN, before the nonlinearity and
    the addition) on held-out images after training, in layer order and sorted. Returns ``out``."""
    fig, colours = _figure(12, 4.6)
    axes = fig.subplots(1, 2)
    _per_layer(axes[0], rows, "std", colours)
    _per_layer(axes[1], rows, "std", colours, sort=True)
    axes[0].set_title("in layer order (1 = input side)")
    axes[1].set_title("sorted by magnitude")
    for ax in axes:
        ax.set_xlabel("layer index")
    axes[0].set_ylabel("std of the normalised response")
    fig.suptitle("Layer responses after training (cf. He et al. 2015, Fig. 7)")
    fig.tight_layout()
    return save_png(fig, out, dpi=100)
