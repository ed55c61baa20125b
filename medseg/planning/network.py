"""Sizing the user's network for the machine and the budget: width ladders per model, step time measured.

Each model names the options that set its size (:data:`SIZERS`); a planner tries scales of them,
largest first, and keeps the first whose training step fits the budget. One step time is measured
on this machine (a few real optimiser steps on random data of the planned shape); the others are
scaled from it by their forward FLOPs, which is what a CPU spends its time on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.losses import DiceCELoss

from medseg import runtime
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.models.summary import forward_gflops

#: Option names that fix a model's size: when the user sets any, the planner leaves the network alone.
SIZE_OPTIONS = frozenset({"features", "strides", "decoder_channels", "encoder_options", "features2", "aspp_channels"})
#: Default model per dimensionality when the user names none (see docs/planning.md for the measurements).
DEFAULT_MODELS = {2: "unet_resnet", 3: "unet"}


def _widths(base: Sequence[int], scale: float, least: int = 4) -> list[int]:
    return [max(least, round(b * scale / 4) * 4) for b in base]


def pooling_strides(
    patch: Sequence[int], spacing: Sequence[float] | None, most: int = 5, smallest: int = 4
) -> list[list[int]]:
    """Per-level, per-axis pooling factors by nnU-Net's rule: an axis is pooled while it keeps at least
    ``smallest`` voxels and its spacing is under twice the finest pooled axis's, so a thick axis waits
    until the others have caught up with it. At most ``most`` levels."""
    size = [float(p) for p in patch]
    current = [float(s) for s in (spacing or [1.0] * len(patch))]
    strides: list[list[int]] = []
    while len(strides) < most - 1:
        room = [i for i, n in enumerate(size) if n >= 2 * smallest]
        if not room:
            break
        finest = min(current[i] for i in room)
        level = [2 if i in room and current[i] < 2 * finest else 1 for i in range(len(size))]
        strides.append(level)
        size = [n / f for n, f in zip(size, level, strict=True)]
        current = [s * f for s, f in zip(current, level, strict=True)]
    return strides or [[1] * len(patch)]


def _unet(scale: float, patch: Sequence[int], spacing: Sequence[float] | None) -> dict[str, Any]:
    strides = pooling_strides(patch, spacing)
    features = _widths([32 * 2**i for i in range(len(strides) + 1)], scale)
    if all(s == 2 for level in strides for s in level):
        return {"features": features}
    return {"features": features, "strides": strides}


def _resnet(scale: float) -> dict[str, Any]:
    return {"encoder_options": {"widths": _widths([64, 128, 256, 512], scale, 8)}}


def _unet_resnet(scale: float, patch: Sequence[int], spacing: Sequence[float] | None) -> dict[str, Any]:
    return {**_resnet(scale), "decoder_channels": _widths([256, 128, 64, 32, 16], scale)}


def _dual(scale: float, patch: Sequence[int], spacing: Sequence[float] | None) -> dict[str, Any]:
    return {**_unet_resnet(scale, patch, spacing), "features2": _widths([16, 32, 64, 128], scale),
            "aspp_channels": _widths([64], scale, 8)[0]}


#: Options of each model at a width ``scale`` (1 = the model's defaults) for a patch at a spacing.
SIZERS: dict[str, Callable[[float, Sequence[int], Sequence[float] | None], dict[str, Any]]] = {
    "unet": _unet,
    "unet_resnet": _unet_resnet,
    "dual_unet_resnet": _dual,
    "fcn": lambda scale, patch, spacing: _resnet(scale),
}


def sized_options(
    name: str, options: dict[str, Any], scale: float, patch: Sequence[int], spacing: Sequence[float] | None = None,
    norm: str | None = None,
) -> dict[str, Any]:
    """``options`` with the size options of ``name`` at ``scale`` (and ``norm`` where the user set none:
    :func:`with_norm`); unchanged for a model without a sizer."""
    sizer = SIZERS.get(name)
    if sizer is None:
        return dict(options)
    sized = {**options, **sizer(scale, patch, spacing)}
    return with_norm(name, sized, norm, len(patch)) if norm else sized


#: Fewer patches a step than this and a batch norm's statistics are those of one or two cases' patches,
#: not the population's its running averages hold at validation. nnU-Net uses instance norms throughout.
BATCH_NORM_MIN_PATCHES = 8


def norm_for(patches: int, ct: bool = False) -> str:
    """The normalisation for ``patches`` patches a training step: instance norms for small batches of
    MRI-like data, batch norms for large batches and for CT.

    Measured in 3-minute 3D runs (2 patches a step, docs/planning.md): on a 3-channel MRI set instance
    norms learned a class of 0.03 % of voxels to validation Dice 0.97 where batch norms reached 0.40;
    on a CT set (absolute Hounsfield units, whose level per patch an instance norm takes out) instance
    norms reached 0.69 where batch norms reached 0.92.
    """
    return "batch" if patches >= BATCH_NORM_MIN_PATCHES or ct else "instance"


def with_norm(name: str, options: dict[str, Any], norm: str, spatial_dims: int) -> dict[str, Any]:
    """``options`` with ``norm`` for the decoder blocks and the encoder, wherever the user set none and the
    model (and its encoder) takes the option; pretrained encoder weights keep their batch norms."""
    if norm == "batch":  # every medseg model's and encoder's default
        return dict(options)
    decoder = {**options, "norm": options.get("norm", norm)}
    encoder_norm = "batch" if options.get("encoder_weights") else norm
    encoder_options = {"norm": encoder_norm, **(options.get("encoder_options") or {})}
    for trial in ({**decoder, "encoder_options": encoder_options}, {**options, "encoder_options": encoder_options},
                  decoder):
        if _builds(name, spatial_dims, trial):
            return trial
    return dict(options)


def _builds(name: str, spatial_dims: int, options: dict[str, Any]) -> bool:
    """Whether model ``name`` takes ``options`` (built on the meta device: nothing is allocated)."""
    try:
        with torch.device("meta"):
            build_model(name, spatial_dims=spatial_dims, **{k: v for k, v in options.items() if k != "encoder_weights"})
    except (TypeError, ValueError, MedsegError):
        return False
    return True


def gflops(name: str, spatial_dims: int, in_channels: int, classes: int, options: dict[str, Any],
           patch: Sequence[int]) -> float:
    """Forward GFLOPs of one patch, counted on the meta device (nothing is computed)."""
    with torch.device("meta"):
        model = build_model(name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=classes, **options)
    return forward_gflops(model, [1, in_channels, *patch])


def measure_step_seconds(
    build_args: dict[str, Any], patch: Sequence[int], batch: int, device: torch.device,
    precision: runtime.Precision, channels_last: bool, steps: int = 3, warmup: int = 2,
) -> float:
    """Median seconds of ``steps`` real training steps (after ``warmup`` ones: oneDNN builds its
    kernels for each new shape on the first) on random data. Three, not two: on a shared 2-core VM
    the median of two was one slow step away from planning a narrower network (0.58-0.9 s for a
    step that ran at 0.62-0.66 s)."""
    dims = int(build_args["spatial_dims"])
    model = runtime.prepare_module(build_model(**build_args), device, dims, channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)  # what training's default loss costs
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, int(build_args["in_channels"]), *patch, generator=g)
    y = torch.randint(0, int(build_args["out_channels"]), (batch, 1, *patch), generator=g).float()
    x = runtime.prepare_batch(x, device, dims, channels_last)
    y = y.to(device)
    times = []
    with runtime.network_allocator(device):
        for i in range(steps + warmup):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast(precision, device):
                out = model(x)
            main = out[0] if isinstance(out, tuple) else out
            loss_fn(main.float(), y).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def measure_forward_seconds(
    build_args: dict[str, Any], patch: Sequence[int], batch: int, device: torch.device,
    precision: runtime.Precision, channels_last: bool, passes: int = 2,
) -> float:
    """Median seconds of ``passes`` inference forward passes over ``batch`` patches, after one warm-up:
    what a sliding window pays per window batch (a 3D window cost 1/3.7 of a training step's patch on a
    2-core AVX2 CPU, where 1/2.5 had been assumed)."""
    dims = int(build_args["spatial_dims"])
    model = runtime.prepare_module(build_model(**build_args), device, dims, channels_last).eval()
    x = runtime.prepare_batch(torch.randn(batch, int(build_args["in_channels"]), *patch), device, dims, channels_last)
    times = []
    with torch.inference_mode(), runtime.network_allocator(device):
        for i in range(passes + 1):
            t0 = time.perf_counter()
            with runtime.autocast(precision, device):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
    return float(statistics.median(times))
