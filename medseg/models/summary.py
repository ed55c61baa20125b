"""Model size and cost: parameter count and forward GFLOPs for a stated reference input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters (shared ones counted once); ``trainable_only`` counts those requiring grad."""
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in seen.values() if p.requires_grad or not trainable_only)


def forward_gflops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """GFLOPs (1e9 floating-point operations, a multiply-add counts 2) of one eval-mode forward pass.

    ``input_shape`` is the full input shape, batch and channels included, e.g. ``(1, 1, 256, 256)``.
    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, matrix products,
    and the like; element-wise ops are not counted). The input lives on the model's device, so a model
    built under ``torch.device("meta")`` is counted without allocating or computing anything.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(*[int(s) for s in input_shape], device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class Summary:
    """One row of ``medseg models``: what was built, its size and (for models) its forward cost."""

    kind: str  # "encoder" or "model"
    name: str
    parameters: int
    gflops: float | None
    description: str


def reference_shape(spatial_dims: int = 2, size: int = 256, in_channels: int = 1) -> tuple[int, ...]:
    """The reference input ``(1, in_channels, size, ...)`` the GFLOPs of ``medseg models`` refer to."""
    return (1, in_channels, *([size] * spatial_dims))


def summarize(spatial_dims: int = 2, size: int = 256, out_channels: int = 2) -> list[Summary]:
    """Every registered encoder (parameters; ``in_channels=1``, no classifier) and model (parameters and
    forward GFLOPs of :func:`reference_shape`), built on the meta device so nothing is computed."""
    from medseg.encoders import build_encoder, encoder_description, list_encoders
    from medseg.models.registry import build_model, list_models, model_description

    rows: list[Summary] = []
    with torch.device("meta"):
        for name in list_encoders():
            encoder = build_encoder(name, spatial_dims=spatial_dims, in_channels=1)
            rows.append(Summary("encoder", name, count_parameters(encoder), None, encoder_description(name)))
        for name in list_models():
            model = build_model(name, spatial_dims=spatial_dims, in_channels=1, out_channels=out_channels)
            flops = forward_gflops(model, reference_shape(spatial_dims, size))
            rows.append(Summary("model", name, count_parameters(model), flops, model_description(name)))
    return rows
