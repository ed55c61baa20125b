"""Plain, residual, highway and fractal networks at several depths: He et al. 2015's degradation
experiment (Fig. 1, 6 and 7), at CPU scale or at the paper's settings.

Four families of CIFAR-shaped classifiers (3x3 stem, three stages of 16/32/64 filters, 6n+2 layers)
train under one step budget on the same batches: ``plain`` and ``resnet`` (the 6n+2 ResNets and their
plain twins, option-A shortcuts), ``highway`` (gated layers, Srivastava 2015) and ``fractal``
(FractalNet blocks with drop-path, Larsson 2017, the deepest path as long as the ResNet's). Two
recipes: ``small`` (one-cycle schedule, no augmentation; the CPU default) and ``he`` (the paper's:
per-pixel mean subtraction, 4-pixel pad + random crop + flip, lr 0.1 divided by 10 at 50 % and 75 %
of the budget, and lr 0.01 until the training error is below 80 % for 110 layers and deeper). The
images are a generated task by default, or a local CIFAR-10 copy, or a folder of labelled images.
Per-layer gradient norms (at initialisation with and without batch norm, and after training) and
per-layer response stds (Fig. 7) are recorded; everything is written to one folder.
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
from torch import nn

from medseg.encoders import FractalEncoder, HighwayEncoder, build_encoder
from medseg.encoders.fractal import cifar_fractal_blocks
from medseg.errors import MedsegError
from medseg.experiments.degradation_data import (
    ImageSet,
    load_images,
    pad_crop_flip,
    subtract_pixel_mean,
)
from medseg.experiments.degradation_data import make_task as make_task  # re-exported: its home until now
from medseg.experiments.degradation_figures import plot_curves, plot_gradient_norms, plot_response_stds
from medseg.utils import atomic_write_text

#: Columns of ``curves.csv``: one row per network and logging point.
CURVE_FIELDS = ["network", "family", "depth", "step", "lr", "train_loss", "train_error", "test_error"]
#: Columns of ``summary.csv``: one row per network.
SUMMARY_FIELDS = [
    "network", "family", "depth", "parameters", "steps", "final_train_loss", "final_train_error",
    "final_test_error", "seconds",
]  # fmt: skip
#: Columns of ``gradient_norms.csv``: one row per network, norm setting, phase and conv layer.
GRADIENT_FIELDS = ["network", "family", "depth", "batch_norm", "phase", "index", "layer", "grad_norm"]
#: Columns of ``response_std.csv``: one row per trained network and normalised layer (Fig. 7).
RESPONSE_FIELDS = ["network", "family", "depth", "index", "layer", "std"]


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


def _cifar_resnet(residual: bool) -> Callable[[int, int, int, str], nn.Module]:
    def build(depth: int, in_channels: int, num_classes: int, norm: str) -> nn.Module:
        n = (depth - 2) // 6
        return build_encoder("resnet20" if residual else "plain_resnet20", spatial_dims=2, in_channels=in_channels,
                             num_classes=num_classes, layers=(n, n, n), norm=norm)  # fmt: skip

    return build


def _highway(depth: int, in_channels: int, num_classes: int, norm: str) -> nn.Module:
    n = (depth - 2) // 6
    return HighwayEncoder(2, in_channels, layers=(2 * n,) * 3, norm=norm, num_classes=num_classes)


def _fractal(depth: int, in_channels: int, num_classes: int, norm: str) -> nn.Module:
    return FractalEncoder(2, in_channels, widths=(16, 32, 64), blocks=cifar_fractal_blocks(depth), stem=16,
                          norm=norm, num_classes=num_classes)  # fmt: skip


#: The families: ``fn(depth, in_channels, num_classes, norm) -> encoder with classify()``.
FAMILIES: dict[str, Callable[[int, int, int, str], nn.Module]] = {
    "plain": _cifar_resnet(False), "resnet": _cifar_resnet(True), "highway": _highway, "fractal": _fractal,
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """A training recipe: default lr and batch, schedule, and He et al.'s preprocessing switches."""

    lr: float
    batch_size: int
    schedule: str  # "one_cycle" or "step" (divide by 10 at 50 % and 75 %)
    augment: bool
    mean_subtraction: bool
    warmup_depth: int | None  # from this depth on, lr 0.01 until the training error is below 80 %


RECIPES = {
    "small": Recipe(0.025, 32, "one_cycle", augment=False, mean_subtraction=False, warmup_depth=None),
    "he": Recipe(0.1, 128, "step", augment=True, mean_subtraction=True, warmup_depth=110),
}


def parse_list(text: str, choices: Sequence[str], field: str) -> list[str]:
    """``"plain,resnet"`` -> ``["plain", "resnet"]``, each one of ``choices``, each once."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    bad = [i for i in items if i not in choices]
    if bad or not items or len(set(items)) != len(items):
        raise MedsegError(f"{field} {text!r}: give distinct comma-separated names from {', '.join(choices)}")
    return items


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


class Classifier(nn.Module):
    """An encoder and its classification head as one module: ``forward`` returns logits."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.classify(x)


def network_name(depth: int, family: str) -> str:
    """``plain-20``, ``resnet-56``, ``fractal-110``: the name used in every file."""
    return f"{family}-{depth}"


def build_network(
    depth: int, family: str = "resnet", batch_norm: bool = True, num_classes: int = 10, in_channels: int = 3
) -> Classifier:
    """The ``family`` network of ``depth`` = 6n+2 layers with a ``num_classes`` head (see :data:`FAMILIES`).

    ``plain``/``resnet`` are the registered ``plain_resnet20``/``resnet20`` with ``layers=(n, n, n)``,
    so the 20- and 56-layer ones are exactly ``resnet20``/``resnet56``.
    """
    check_depths([depth])
    if family not in FAMILIES:
        raise MedsegError(f"family {family!r}: choose one of {', '.join(FAMILIES)}")
    return Classifier(FAMILIES[family](depth, in_channels, num_classes, "batch" if batch_norm else "none"))


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every weight layer's convolution, in registration order (input side
    first), leaving out highway gates (they have a bias and are no layer of the depth count)."""
    return [
        (name.removeprefix("encoder."), m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and m.bias is None
    ]


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, float]]:
    """The L2 norm of the cross-entropy gradient at every conv weight, input side first.

    Measured on one batch in training mode (batch statistics, as during training); FractalNet's
    drop-path is switched off for it (all columns). The model's gradients are cleared before and after.
    """
    model.zero_grad(set_to_none=True)
    model.train()
    fractals = [m for m in model.modules() if isinstance(m, FractalEncoder)]
    saved = [(m.drop_path, m.global_ratio) for m in fractals]
    for m in fractals:
        m.drop_path, m.global_ratio = 0.0, 0.0
    nn.functional.cross_entropy(model(images), labels).backward()
    for m, (drop, ratio) in zip(fractals, saved):
        m.drop_path, m.global_ratio = drop, ratio
    norms = [
        (name, float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0)
        for name, m in conv_layers(model)
    ]
    model.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def response_stds(model: nn.Module, images: torch.Tensor) -> list[tuple[str, float]]:
    """He et al.'s Fig. 7 measure: for every batch-norm layer, in the order the forward pass calls
    them, the std of its output over images and positions, averaged over channels; eval mode."""
    model.eval()
    names = {m: n.removeprefix("encoder.") for n, m in model.named_modules()}
    stds: list[tuple[str, float]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: stds.append(
                 (names[mod], float(out.transpose(0, 1).flatten(1).std(1).mean()))))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # fmt: skip
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    model.train()
    return stds


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


def learning_rate(recipe: Recipe, lr: float, step: int, steps: int, warming: bool) -> float | None:
    """The step schedule's lr at ``step`` (1-based): 0.01 while ``warming``, ``lr`` to half the budget,
    ``lr/10`` to three quarters, ``lr/100`` after; ``None`` for the one-cycle schedule (its own)."""
    if recipe.schedule != "step":
        return None
    if warming:
        return 0.01
    return lr * (0.1 ** ((step > steps // 2) + (step > (3 * steps) // 4)))


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
    recipe: Recipe = RECIPES["small"],
    warmup: bool = False,
) -> list[dict[str, float]]:
    """SGD (momentum 0.9, weight decay 1e-4, as the paper) under ``recipe``'s schedule and augmentation.

    Mini-batches (and augmentations) come from a generator seeded with ``seed``, so every network
    sees the same ones. ``warmup`` holds lr at 0.01 until the training error of a logging window is
    below 80 % (He et al., 110 layers). Returns one dict per ``log_every`` steps: ``step``, ``lr``,
    the mean training ``train_loss`` and ``train_error`` over those steps (training mode, as the
    paper's thin curves), and ``test_error`` on ``test`` in eval mode (NaN without ``test``). No
    gradient clipping: a diverging network shows up as a NaN loss.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = None
    if recipe.schedule == "one_cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15,
                                                    anneal_strategy="cos")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    model.train()
    log: list[dict[str, float]] = []
    loss_sum = err_sum = 0.0
    count = 0
    for step in range(1, steps + 1):
        step_lr = learning_rate(recipe, lr, step, steps, warmup)
        if step_lr is not None:
            for group in opt.param_groups:
                group["lr"] = step_lr
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x, y = images[idx], labels[idx]
        x = pad_crop_flip(x, g) if recipe.augment else x
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        loss_sum += float(loss.detach())
        err_sum += float((logits.detach().argmax(1) != y).float().mean())
        count += 1
        if step % log_every == 0 or step == steps:
            test_error = error_rate(model, *test) if test is not None else math.nan
            log.append({"step": step, "lr": opt.param_groups[0]["lr"], "train_loss": loss_sum / count,
                        "train_error": err_sum / count, "test_error": test_error})  # fmt: skip
            warmup = warmup and err_sum / count >= 0.8
            loss_sum = err_sum = 0.0
            count = 0
    return log


def _check_options(depths: Sequence[int], families: Sequence[str], recipe: str, sizes: dict[str, int], lr: float) -> None:
    check_depths(depths)
    if not families or any(f not in FAMILIES for f in families) or len(set(families)) != len(families):
        raise MedsegError(f"families {list(families)}: give distinct names from {', '.join(FAMILIES)}")
    if recipe not in RECIPES:
        raise MedsegError(f"recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    for name, (value, low) in sizes.items():
        if value < low:
            raise MedsegError(f"degradation option {name}={value}: give at least {low}")
    if not lr > 0:
        raise MedsegError(f"degradation option lr={lr}: give a positive learning rate")


def run_degradation(
    out_dir: str | Path,
    depths: Sequence[int] = (20, 56),
    steps: int = 1000,
    batch_size: int | None = None,
    lr: float | None = None,
    n_train: int = 5000,
    n_test: int = 500,
    image_size: int = 12,
    log_points: int = 20,
    seed: int = 0,
    families: Sequence[str] = ("plain", "resnet"),
    recipe: str = "small",
    data: str | Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> DegradationResult:
    """Train every family at each depth under one budget; write CSVs and figures to ``out_dir``.

    ``batch_size``/``lr`` default to the recipe's (small: 32 / 0.025; he: 128 / 0.1). ``data`` is a
    CIFAR-10 python folder or a class-per-folder tree (``None``: the generated task of
    ``n_train`` images of ``image_size`` pixels); local sets are cut to ``n_train``/``n_test``
    images (0 = all). Every network starts from ``torch.manual_seed(seed)`` and sees the same batches.
    Writes ``curves.csv``, ``summary.csv``, ``gradient_norms.csv``, ``response_std.csv``,
    ``degradation.png``, ``gradient_norms.png`` and ``response_std.png``.
    """
    chosen = RECIPES.get(recipe)
    batch_size = batch_size or (chosen.batch_size if chosen else 32)
    lr = lr if lr is not None else (chosen.lr if chosen else 0.025)
    _check_options(depths, families, recipe, {"steps": (steps, 1), "batch_size": (batch_size, 2),
                   "n_train": (n_train, 0 if data else 2), "n_test": (n_test, 0 if data else 1),
                   "image_size": (image_size, 4), "log_points": (log_points, 1)}, lr)  # fmt: skip
    t0 = time.perf_counter()
    out_dir, say, recipe_ = Path(out_dir), on_progress or (lambda _msg: None), RECIPES[recipe]
    images = load_images(data, n_train, n_test, image_size, seed)
    images = subtract_pixel_mean(images) if recipe_.mean_subtraction else images
    say(f"{images.source}: {len(images.train[1])} training, {len(images.test[1])} held-out images, "
        f"{images.num_classes} classes, recipe {recipe}")  # fmt: skip
    rows: dict[str, list[dict[str, object]]] = {"curves": [], "summary": [], "grads": [], "responses": []}
    curves: dict[str, list[dict[str, float]]] = {}
    for family in families:
        for depth in depths:
            curves[network_name(depth, family)] = _train_one(
                family, depth, images, rows, steps, batch_size, lr, seed, max(1, steps // log_points), recipe_, say
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / n for n in ("curves.csv", "summary.csv", "gradient_norms.csv", "response_std.csv")]
    for path, fields, key in zip(files, (CURVE_FIELDS, SUMMARY_FIELDS, GRADIENT_FIELDS, RESPONSE_FIELDS),
                                 ("curves", "summary", "grads", "responses")):  # fmt: skip
        _write_csv(path, fields, rows[key])
    files.append(plot_curves(curves, families, depths, out_dir / "degradation.png"))
    files.append(plot_gradient_norms(rows["grads"], out_dir / "gradient_norms.png"))
    files.append(plot_response_stds(rows["responses"], out_dir / "response_std.png"))
    return DegradationResult(out_dir, rows["summary"], files, time.perf_counter() - t0)


def _train_one(
    family: str, depth: int, images: ImageSet, rows: dict[str, list[dict[str, object]]], steps: int,
    batch_size: int, lr: float, seed: int, log_every: int, recipe: Recipe, say: Callable[[str], None],
) -> list[dict[str, float]]:  # fmt: skip
    """Measure, train and measure one network; append its rows; return its curve."""
    name, (x, y), probe = network_name(depth, family), images.train, (images.train[0][:32], images.train[1][:32])
    key = {"network": name, "family": family, "depth": depth}

    def record(net: nn.Module, bn: bool, phase: str) -> None:
        rows["grads"] += [{**key, "batch_norm": bn, "phase": phase, "index": i, "layer": layer, "grad_norm": norm}
                          for i, (layer, norm) in enumerate(gradient_norms(net, *probe), start=1)]  # fmt: skip

    def build(bn: bool) -> Classifier:  # the same initialisation with and without batch norm
        torch.manual_seed(seed)
        return build_network(depth, family, batch_norm=bn, num_classes=images.num_classes, in_channels=x.shape[1])

    record(build(False), False, "init")  # the no-BN twin is measured at initialisation only
    net = build(True)
    record(net, True, "init")
    say(f"training {name} for {steps} steps")
    started = time.perf_counter()
    warmup = recipe.warmup_depth is not None and depth >= recipe.warmup_depth
    log = train_network(net, x, y, steps, batch_size, lr, seed, log_every, images.test, recipe, warmup)
    seconds = time.perf_counter() - started
    record(net, True, "trained")
    rows["responses"] += [{**key, "index": i, "layer": layer, "std": std}
                          for i, (layer, std) in enumerate(response_stds(net, images.test[0][:250]), start=1)]  # fmt: skip
    rows["curves"] += [{**key, **r} for r in log]
    tail = log[-max(1, len(log) // 10) :]
    rows["summary"].append({
        **key, "parameters": sum(p.numel() for p in net.parameters()), "steps": steps,
        "final_train_loss": sum(r["train_loss"] for r in tail) / len(tail),
        "final_train_error": sum(r["train_error"] for r in tail) / len(tail),
        "final_test_error": log[-1]["test_error"], "seconds": round(seconds, 1),
    })  # fmt: skip
    say(f"{name}: train error {100 * float(rows['summary'][-1]['final_train_error']):.1f}%, "  # type: ignore[arg-type]
        f"test error {100 * log[-1]['test_error']:.1f}% ({seconds:.0f}s)")  # fmt: skip
    return log


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
