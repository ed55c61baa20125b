"""Plain against residual networks at two depths: He et al. 2015's degradation experiment, small.

The CIFAR-style encoders (6n+2 layers, 16/32/64 filters) get a classification head and train on a
generated 10-class texture task under the same step budget. Deeper plain networks train worse than
shallower ones (the degradation problem); residual ones should not. Per-layer gradient norms are
recorded at initialisation and after training, with and without batch normalisation, so the
vanishing-gradient argument can be looked at rather than asserted.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.encoders import build_encoder
from medseg.utils import atomic_path, atomic_write_text


@dataclass
class DegradationResult:
    """Where the experiment wrote its outputs, and the final training error of each network."""

    out_dir: Path
    final_error: dict[str, float]
    final_loss: dict[str, float]
    seconds: float


def make_task(n: int, size: int = 16, num_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A generated 10-class image task: oriented gratings of class-specific frequency and angle.

    Phase, contrast, colour and a second distractor grating vary at random, and noise is added, so
    that the classes overlap in pixel space and a network has to learn the texture, not memorise.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    angle = labels.float() * (math.pi / num_classes) + 0.15 * torch.randn(n, generator=g)
    freq = 0.35 + 0.25 * (labels % 3).float() + 0.03 * torch.randn(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    wave = torch.cos(
        freq[:, None, None] * (xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None])
        + phase[:, None, None]
    )
    d_angle = math.pi * torch.rand(n, generator=g)
    d_freq = 0.3 + 0.6 * torch.rand(n, generator=g)
    distractor = torch.cos(d_freq[:, None, None] * (xx * torch.cos(d_angle)[:, None, None] + yy * torch.sin(d_angle)[:, None, None]))
    contrast = 0.5 + torch.rand(n, 1, 1, generator=g)
    colour = 0.5 + torch.rand(n, 3, 1, 1, generator=g)
    base = contrast * wave + 0.6 * distractor
    images = colour * base[:, None] + 0.5 * torch.randn(n, 3, size, size, generator=g)
    return images, labels


class _Classifier(nn.Module):
    """An encoder with its classification head, as one module for the optimiser."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.classify(x)


def build_network(depth: int, residual: bool, batch_norm: bool = True, num_classes: int = 10) -> nn.Module:
    """CIFAR-style ResNet-``depth`` or its plain twin, with a ``num_classes`` head."""
    name = f"resnet{depth}" if residual else f"plain_resnet{depth}"
    options: dict[str, object] = {"num_classes": num_classes}
    if not batch_norm:
        options["norm"] = "none"
    return _Classifier(build_encoder(name, spatial_dims=2, in_channels=3, **options))


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, float]]:
    """The L2 norm of the loss gradient at every conv layer's weight, input side first."""
    model.zero_grad(set_to_none=True)
    model.train()
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    norms = [
        (name.removeprefix("encoder.").removesuffix(".weight"), float(p.grad.norm()))
        for name, p in model.named_parameters()
        if p.grad is not None and p.dim() == 4
    ]
    model.zero_grad(set_to_none=True)
    return norms


def train_network(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log_every: int,
) -> list[tuple[int, float, float]]:
    """SGD with momentum 0.9 and weight decay 1e-4 (the paper's recipe), cosine-decayed.

    Returns ``(step, loss, error)`` averaged over each ``log_every`` steps of the training stream.
    """
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    model.train()
    log: list[tuple[int, float, float]] = []
    loss_acc = err_acc = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x, y = images[idx], labels[idx]
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        loss_acc += float(loss.detach()) if math.isfinite(float(loss.detach())) else 10.0
        err_acc += float((logits.argmax(1) != y).float().mean())
        if step % log_every == 0 or step == steps:
            k = log_every if step % log_every == 0 else step % log_every
            log.append((step, loss_acc / k, err_acc / k))
            loss_acc = err_acc = 0.0
    return log


def run_degradation(
    out_dir: Path,
    depths: Sequence[int] = (20, 56),
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 0.05,
    n_train: int = 4096,
    image_size: int = 16,
    seed: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> DegradationResult:
    """Train plain and residual networks at each depth; write CSVs and figures to ``out_dir``."""
    t0 = time.perf_counter()
    say = on_progress or (lambda _msg: None)
    torch.manual_seed(seed)
    images, labels = make_task(n_train, image_size, seed=seed)
    probe_x, probe_y = images[:batch_size], labels[:batch_size]
    curves: dict[str, list[tuple[int, float, float]]] = {}
    grad_rows: list[dict[str, object]] = []
    for depth in depths:
        for residual in (False, True):
            name = f"{'resnet' if residual else 'plain'}-{depth}"
            for bn in (True, False):
                torch.manual_seed(seed)
                net = build_network(depth, residual, batch_norm=bn)
                for layer, norm in gradient_norms(net, probe_x, probe_y):
                    grad_rows.append({"network": name, "batch_norm": bn, "phase": "init", "layer": layer, "grad_norm": norm})
                if not bn:
                    continue
                say(f"training {name} ({steps} steps)")
                curves[name] = train_network(net, images, labels, steps, batch_size, lr, seed, max(1, steps // 40))
                for layer, norm in gradient_norms(net, probe_x, probe_y):
                    grad_rows.append({"network": name, "batch_norm": bn, "phase": "trained", "layer": layer, "grad_norm": norm})
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "degradation.csv", ["network", "step", "train_loss", "train_error"],
               [{"network": n, "step": s, "train_loss": lo, "train_error": e} for n, c in curves.items() for s, lo, e in c])
    _write_csv(out_dir / "gradient_norms.csv", ["network", "batch_norm", "phase", "layer", "grad_norm"], grad_rows)
    _plot_curves(curves, depths, out_dir / "degradation.png")
    _plot_gradients(grad_rows, out_dir / "gradient_norms.png")
    tail = max(1, len(next(iter(curves.values()))) // 8)
    final_error = {n: float(np.mean([e for _, _, e in c[-tail:]])) for n, c in curves.items()}
    final_loss = {n: float(np.mean([lo for _, lo, _ in c[-tail:]])) for n, c in curves.items()}
    return DegradationResult(out_dir, final_error, final_loss, time.perf_counter() - t0)


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _plot_curves(curves: dict[str, list[tuple[int, float, float]]], depths: Sequence[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("plain", "resnet")):
        for depth, style in zip(depths, ("-", "--", ":", "-.")):
            c = curves.get(f"{kind}-{depth}")
            if c:
                ax.plot([s for s, _, _ in c], [100 * e for _, _, e in c], style, label=f"{kind}-{depth}")
        ax.set_title(f"{'Plain' if kind == 'plain' else 'Residual'} networks")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("training error (%)")
    fig.suptitle("Degradation: training error of plain vs residual networks (cf. He et al. 2015, Fig. 1 and 6)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plot_gradients(rows: list[dict[str, object]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("init", True), ("init", False), ("trained", True)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (phase, bn) in zip(axes, panels):
        nets = sorted({str(r["network"]) for r in rows if r["phase"] == phase and r["batch_norm"] == bn})
        for net in nets:
            values = [float(r["grad_norm"]) for r in rows if r["network"] == net and r["phase"] == phase and r["batch_norm"] == bn]  # type: ignore[arg-type]
            ax.semilogy(range(1, len(values) + 1), np.maximum(values, 1e-30), label=net)
        ax.set_title(f"{phase}, {'with' if bn else 'without'} batch norm")
        ax.set_xlabel("conv layer (input side first)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm of the weights")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
