"""Plain against residual networks at two depths: He et al. 2015's degradation experiment, small.

The CIFAR-style encoders (6n+2 layers, 16/32/64 filters, option-A shortcuts) get a classification
head and train on a generated 10-class texture task under the same step budget, with the paper's
optimiser (SGD, momentum 0.9, weight decay 1e-4). He et al. found that a deeper *plain* network has
a higher training error than a shallower one (the degradation problem) while a deeper *residual*
network does not. Per-layer gradient norms are recorded at initialisation and after training, with
and without batch normalisation, so the vanishing-gradient argument can be looked at rather than
asserted. Everything is written to one folder: two CSVs of curves and summaries, one CSV of
gradient norms, and two figures.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from medseg.encoders import build_encoder
from medseg.errors import MedsegError
from medseg.evaluation.figures import save_png
from medseg.utils import atomic_write_text

#: Columns of ``curves.csv``: one row per network and logging point.
CURVE_FIELDS = ["network", "depth", "residual", "step", "train_loss", "train_error", "test_error"]
#: Columns of ``summary.csv``: one row per network.
SUMMARY_FIELDS = [
    "network", "depth", "residual", "parameters", "steps", "final_train_loss", "final_train_error",
    "final_test_error", "seconds",
]  # fmt: skip
#: Columns of ``gradient_norms.csv``: one row per network, norm setting, phase and conv layer.
GRADIENT_FIELDS = ["network", "depth", "residual", "batch_norm", "phase", "index", "layer", "grad_norm"]


@dataclass
class DegradationResult:
    """What the experiment measured and where it wrote it.

    ``summary`` holds one dict per network (``SUMMARY_FIELDS``); ``files`` the paths written.
    """

    out_dir: Path
    summary: list[dict[str, object]]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def final(self, column: str) -> dict[str, float]:
        """``{network: value}`` of one summary column, e.g. ``final_train_error``."""
        return {str(row["network"]): float(row[column]) for row in self.summary}  # type: ignore[arg-type]


def parse_depths(text: str, field: str = "--depths") -> list[int]:
    """``"20,56"`` -> ``[20, 56]``; every depth must be a CIFAR ResNet depth 6n+2 with n >= 1.

    ``field`` names the option in the one-line error.
    """
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MedsegError(f"{field} {text!r}: give comma-separated integers such as 20,56") from None
    check_depths(depths, f"{field} {text!r}")
    return depths


def check_depths(depths: Sequence[int], field: str = "depths") -> None:
    """Raise a one-line MedsegError unless ``depths`` are distinct CIFAR ResNet depths (8, 14, 20, ...)."""
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad or not depths:
        raise MedsegError(
            f"{field}: CIFAR ResNets have 6n+2 layers (8, 14, 20, 32, 44, 56, 110); "
            f"replace {bad or 'the empty list'}"
        )
    if len(set(depths)) != len(depths):
        raise MedsegError(f"{field}: give each depth once")


def make_task(
    n: int, size: int = 16, num_classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RGB images ``(n, 3, size, size)`` and labels of a generated texture task.

    Class ``k`` is an oriented grating at angle ``k * pi / num_classes`` (jittered) whose spatial
    frequency is one of three, chosen by ``k % 3``, so neighbouring angles differ in frequency too.
    Phase, contrast and colour are random, a second grating of random angle and frequency is added
    as a distractor, and Gaussian noise on top, so that the classes overlap in pixel space and a
    network has to learn orientation and frequency detectors. The same ``seed`` gives the same data.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")

    def grating(angle: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        a, f, p = (v[:, None, None] for v in (angle, freq, phase))
        return torch.cos(f * (xx * torch.cos(a) + yy * torch.sin(a)) + p)

    angle = labels.float() * (math.pi / num_classes) + 0.12 * torch.randn(n, generator=g)
    freq = 0.5 + 0.35 * (labels % 3).float() + 0.04 * torch.randn(n, generator=g)
    wave = grating(angle, freq, 2 * math.pi * torch.rand(n, generator=g))
    distractor = grating(
        math.pi * torch.rand(n, generator=g), 0.3 + 1.0 * torch.rand(n, generator=g),
        2 * math.pi * torch.rand(n, generator=g),
    )  # fmt: skip
    contrast = 0.5 + torch.rand(n, 1, 1, generator=g)
    colour = 0.5 + torch.rand(n, 3, 1, 1, generator=g)
    base = contrast * wave + 0.6 * distractor
    images = colour * base[:, None] + 0.5 * torch.randn(n, 3, size, size, generator=g)
    return images, labels


class Classifier(nn.Module):
    """An encoder and its classification head as one module: ``forward`` returns logits."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.classify(x)


def network_name(depth: int, residual: bool) -> str:
    """``plain-20`` or ``resnet-20``, the name used in every file."""
    return f"{'resnet' if residual else 'plain'}-{depth}"


def build_network(
    depth: int, residual: bool, batch_norm: bool = True, num_classes: int = 10, in_channels: int = 3
) -> Classifier:
    """CIFAR-style ResNet-``depth`` (6n+2) or its plain twin, with a ``num_classes`` head.

    Built from the registered ``resnet20`` / ``plain_resnet20`` with ``layers=(n, n, n)``, so any
    6n+2 depth works and the 20/56-layer networks are exactly ``resnet20`` / ``resnet56``.
    """
    check_depths([depth])
    n = (depth - 2) // 6
    options: dict[str, object] = {"num_classes": num_classes, "layers": (n, n, n)}
    if not batch_norm:
        options["norm"] = "none"
    name = "resnet20" if residual else "plain_resnet20"
    return Classifier(build_encoder(name, spatial_dims=2, in_channels=in_channels, **options))


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every convolution, in forward order (input side first)."""
    return [
        (name.removeprefix("encoder."), m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    ]


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, float]]:
    """The L2 norm of the cross-entropy gradient at every conv weight, input side first.

    Measured on one batch in training mode (batch statistics, as during training); the model's
    gradients are cleared before and after.
    """
    model.zero_grad(set_to_none=True)
    model.train()
    nn.functional.cross_entropy(model(images), labels).backward()
    norms = [
        (name, float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0)
        for name, m in conv_layers(model)
    ]
    model.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> float:
    """Classification error of ``model`` in eval mode (running BN statistics) on ``images``."""
    model.eval()
    wrong = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size])
        wrong += int((logits.argmax(1) != labels[start : start + batch_size]).sum())
    model.train()
    return wrong / max(1, images.shape[0])


def train_network(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log_every: int,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """SGD (momentum 0.9, weight decay 1e-4, as the paper) with a one-cycle learning-rate schedule.

    Mini-batches are drawn from ``images`` by a generator seeded with ``seed``, so every network sees
    the same batches. Returns one dict per ``log_every`` steps: ``step``, the mean training
    ``train_loss`` and ``train_error`` over those steps (in training mode, as the paper's thin
    curves), and ``test_error`` on ``test`` in eval mode (NaN without ``test``). No gradient
    clipping: a diverging network shows up as a NaN loss.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=0.15, anneal_strategy="cos"
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    log: list[dict[str, float]] = []
    loss_sum = err_sum = 0.0
    count = 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x, y = images[idx], labels[idx]
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss.detach())
        err_sum += float((logits.detach().argmax(1) != y).float().mean())
        count += 1
        if step % log_every == 0 or step == steps:
            test_error = error_rate(model, *test) if test is not None else math.nan
            log.append({"step": step, "train_loss": loss_sum / count, "train_error": err_sum / count,
                        "test_error": test_error})  # fmt: skip
            loss_sum = err_sum = 0.0
            count = 0
    return log


def run_degradation(
    out_dir: str | Path,
    depths: Sequence[int] = (20, 56),
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 0.025,
    n_train: int = 5000,
    n_test: int = 500,
    image_size: int = 12,
    log_points: int = 20,
    seed: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> DegradationResult:
    """Train plain and residual networks at each depth under one budget; write CSVs and figures.

    Every network starts from ``torch.manual_seed(seed)`` and sees the same mini-batches. Gradient
    norms per conv layer are measured on one fixed batch: at initialisation with and without batch
    norm (the no-BN twins are not trained), and after training. Writes ``curves.csv``,
    ``summary.csv``, ``gradient_norms.csv``, ``degradation.png`` and ``gradient_norms.png``.
    """
    check_depths(depths)
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 2), ("n_train", n_train, 2),
                             ("n_test", n_test, 1), ("image_size", image_size, 4), ("log_points", log_points, 1)):
        if value < low:
            raise MedsegError(f"degradation option {name}={value}: give at least {low}")
    if not lr > 0:
        raise MedsegError(f"degradation option lr={lr}: give a positive learning rate")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    say = on_progress or (lambda _msg: None)
    images, labels = make_task(n_train, image_size, seed=seed)
    test = make_task(n_test, image_size, seed=seed + 10_000)
    probe = (images[:batch_size], labels[:batch_size])
    log_every = max(1, steps // log_points)

    curve_rows: list[dict[str, object]] = []
    summary: list[dict[str, object]] = []
    grad_rows: list[dict[str, object]] = []
    curves: dict[str, list[dict[str, float]]] = {}

    def record(net: nn.Module, depth: int, residual: bool, bn: bool, phase: str) -> None:
        for index, (layer, norm) in enumerate(gradient_norms(net, *probe), start=1):
            grad_rows.append({"network": network_name(depth, residual), "depth": depth, "residual": residual,
                              "batch_norm": bn, "phase": phase, "index": index, "layer": layer,
                              "grad_norm": norm})  # fmt: skip

    for residual in (False, True):
        for depth in depths:
            name = network_name(depth, residual)
            torch.manual_seed(seed)
            record(build_network(depth, residual, batch_norm=False), depth, residual, False, "init")
            torch.manual_seed(seed)
            net = build_network(depth, residual, batch_norm=True)
            record(net, depth, residual, True, "init")
            say(f"training {name} for {steps} steps")
            started = time.perf_counter()
            log = train_network(net, images, labels, steps, batch_size, lr, seed, log_every, test)
            seconds = time.perf_counter() - started
            record(net, depth, residual, True, "trained")
            curves[name] = log
            curve_rows += [{"network": name, "depth": depth, "residual": residual, **row} for row in log]
            tail = log[-max(1, len(log) // 10) :]
            summary.append({
                "network": name, "depth": depth, "residual": residual,
                "parameters": sum(p.numel() for p in net.parameters()), "steps": steps,
                "final_train_loss": sum(r["train_loss"] for r in tail) / len(tail),
                "final_train_error": sum(r["train_error"] for r in tail) / len(tail),
                "final_test_error": log[-1]["test_error"], "seconds": round(seconds, 1),
            })  # fmt: skip
            say(f"{name}: train error {100 * float(summary[-1]['final_train_error']):.1f}%, "  # type: ignore[arg-type]
                f"test error {100 * log[-1]['test_error']:.1f}% ({seconds:.0f}s)")  # fmt: skip

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / n for n in ("curves.csv", "summary.csv", "gradient_norms.csv")]
    for path, fields, rows in zip(files, (CURVE_FIELDS, SUMMARY_FIELDS, GRADIENT_FIELDS),
                                  (curve_rows, summary, grad_rows)):  # fmt: skip
        _write_csv(path, fields, rows)
    files.append(plot_curves(curves, depths, out_dir / "degradation.png"))
    files.append(plot_gradient_norms(grad_rows, out_dir / "gradient_norms.png"))
    return DegradationResult(out_dir, summary, files, time.perf_counter() - t0)


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _figure(width_in: float, height_in: float) -> tuple[Figure, list[str]]:
    """An explicit Agg figure (no pyplot state, as in medseg.evaluation.figures) and the colour cycle."""
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig, rcParams["axes.prop_cycle"].by_key()["color"]


def plot_curves(curves: dict[str, list[dict[str, float]]], depths: Sequence[int], out: Path) -> Path:
    """He et al.'s Figure 6 layout: plain networks left, residual right; thin dashed lines are the
    training error, bold lines the held-out error; one colour per depth. Returns ``out``."""
    fig, colours = _figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    top = 0.0
    for ax, residual in zip(axes, (False, True)):
        for depth, colour in zip(depths, colours):
            log = curves.get(network_name(depth, residual), [])
            steps = [r["step"] for r in log]
            train = [100 * r["train_error"] for r in log]
            test = [100 * r["test_error"] for r in log]
            top = max([top, *(v for v in train + test if math.isfinite(v))])
            ax.plot(steps, train, "--", color=colour, linewidth=1.0, label=f"{network_name(depth, residual)} train")
            ax.plot(steps, test, "-", color=colour, linewidth=2.2, label=f"{network_name(depth, residual)} test")
        ax.set_title("plain networks" if not residual else "residual networks (ResNet)")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(0, min(100.0, top * 1.05 + 1))
    fig.suptitle("Degradation at small scale (cf. He et al. 2015, Fig. 6): dashed = training, bold = held-out")
    fig.tight_layout()
    return save_png(fig, out, dpi=110)


def plot_gradient_norms(rows: list[dict[str, object]], out: Path) -> Path:
    """Per-layer gradient norms on a log scale: at init with BN, at init without BN, after training
    (with BN); plain networks solid, residual dashed. Returns ``out``."""
    panels = [("init", True, "at initialisation, with BN"), ("init", False, "at initialisation, without BN"),
              ("trained", True, "after training, with BN")]  # fmt: skip
    fig, colours = _figure(16, 4.4)
    axes = fig.subplots(1, len(panels))
    depths = sorted({int(r["depth"]) for r in rows})  # type: ignore[call-overload]
    for ax, (phase, bn, title) in zip(axes, panels):
        for depth, colour in zip(depths, colours):
            for residual in (False, True):
                sel = [r for r in rows if r["phase"] == phase and r["batch_norm"] == bn
                       and r["depth"] == depth and r["residual"] == residual]  # fmt: skip
                if not sel:
                    continue
                values = [max(float(r["grad_norm"]), 1e-30) for r in sel]  # type: ignore[arg-type]
                ax.semilogy([int(r["index"]) for r in sel], values, "--" if residual else "-",  # type: ignore[call-overload]
                            color=colour, label=network_name(depth, residual))  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("conv layer (1 = input side)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("‖∂loss/∂W‖ of the layer's weights")
    fig.suptitle("Per-layer gradient norms on one fixed batch (log scale)")
    fig.tight_layout()
    return save_png(fig, out, dpi=110)
