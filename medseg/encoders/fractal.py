"""FractalNet (Larsson, Maire & Shakhnarovich 2017) as a 2D/3D encoder and a classifier family.

A fractal block of ``C`` columns is the expansion ``f_1(z) = conv(z)``,
``f_{C+1}(z) = join(f_C(f_C(z)), conv(z))``, where ``conv`` is conv3x3-norm-ReLU and ``join`` the
element-wise mean. Drawn out, column ``c`` (1 = shortest) is a chain of ``2^(c-1)`` convs, and
wherever several columns end at the same depth one join takes the mean of all of them, as in the
paper's Figure 1 (nested joins at one point are one join). A block therefore has ``2^C - 1`` convs
and a deepest path of ``2^(C-1)``; ``B`` blocks with pooling between them make a network of
``B · 2^(C-1)`` layers, and C = 3, B = 5 is the paper's 20-layer CIFAR network.

Drop-path, the paper's regulariser, acts while training: per mini-batch, with probability
``global_ratio`` one column is drawn and the whole network computes only that column (global);
otherwise every join drops each of its inputs with probability ``drop_path``, keeping at least one
(local). Evaluation joins every column; :meth:`FractalEncoder.use_column` computes one column alone,
as the paper does to show that the deepest column is a good plain network by itself.

Batch norm's running statistics are what evaluation normalises with, and a layer's inputs differ
between a global drop-path pass (one column's chain) and a joined pass (means of columns). Each
batch norm inside the blocks therefore keeps two sets (state-dict keys ``running_*`` and
``column_running_*``): global drop-path batches and :meth:`~FractalEncoder.use_column` read and
update the single-column set, every other pass the joined one. With one shared set, half of the
training batches pull it towards single-column inputs and the joined network evaluates near
chance (measured: docs/encoders.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from medseg.encoders.base import EncoderBase
from medseg.encoders.norms import NORMS, make_norm
from medseg.encoders.registry import register_encoder
from medseg.encoders.resnet_blocks import conv
from medseg.errors import MedsegError
from medseg.registry import check_options, keyword_options


def join(inputs: Sequence[torch.Tensor], drop: float = 0.0) -> torch.Tensor:
    """The element-wise mean of ``inputs``; with ``drop > 0`` each is left out with that probability
    (one mask per mini-batch), and one drawn at random is kept if all were left out."""
    if drop <= 0 or len(inputs) == 1:
        return inputs[0] if len(inputs) == 1 else torch.stack(list(inputs)).mean(0)
    keep = torch.rand(len(inputs)) >= drop
    if not keep.any():
        keep[int(torch.randint(len(inputs), (1,)))] = True
    return torch.stack([x for x, k in zip(inputs, keep.tolist()) if k]).mean(0)


def _unit(spatial_dims: int, cin: int, cout: int, norm: str) -> nn.Sequential:
    """The paper's convolutional layer: conv3x3, norm, ReLU."""
    return nn.Sequential(conv(spatial_dims, cin, cout, 3), make_norm(norm, spatial_dims, cout, 8), nn.ReLU(inplace=True))


class FractalBlock(nn.Module):
    """One fractal block of ``columns`` columns; ``self.columns[c]`` holds column ``c + 1``'s ``2^c`` convs."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, columns: int, norm: str = "batch") -> None:
        super().__init__()
        self.num_columns = columns
        self.depth = 2 ** (columns - 1)
        self.columns = nn.ModuleList(
            nn.ModuleList(_unit(spatial_dims, cin if i == 0 else cout, cout, norm) for i in range(2**c))
            for c in range(columns)
        )

    def forward(self, x: torch.Tensor, column: int | None = None, drop: float = 0.0) -> torch.Tensor:
        """All columns joined (``column=None``, local drop-path rate ``drop``), or column ``column``
        (0-based; clipped to this block's deepest) alone, with no other conv computed."""
        active = range(self.num_columns) if column is None else [min(column, self.num_columns - 1)]
        state = dict.fromkeys(active, x)
        for t in range(1, self.depth + 1):
            ending = [c for c in active if t % (self.depth >> c) == 0]
            if not ending:
                continue
            y = join([self.columns[c][t // (self.depth >> c) - 1](state[c]) for c in ending], drop)
            state.update(dict.fromkeys(ending, y))
        return y


class FractalEncoder(EncoderBase):
    """A 2D or 3D FractalNet returning one map per stage (and the stem's first, if any).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        columns: columns ``C`` of every block, unless ``blocks`` says otherwise.
        widths: channels per stage; stages after the first start with a 2x max pool.
        blocks: the column counts of each stage's blocks, e.g. ``((3, 2), (3, 2), (3, 2))``; default
            one block of ``columns`` per stage (the paper's layout).
        stem: channels of a conv3x3-norm-ReLU before the first stage (its output is the first map);
            0 for none, as in the paper.
        drop_path: local drop-path rate of every join while training (paper: 0.15).
        global_ratio: share of training mini-batches that use global drop-path (paper: 0.5).
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        num_classes: add ``fc`` for ``classify(x)`` (global average pool + linear).
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, *, columns: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512, 512), blocks: Sequence[Sequence[int]] | None = None,
        stem: int = 0, drop_path: float = 0.15, global_ratio: float = 0.5, norm: str = "batch",
        num_classes: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        widths = [int(w) for w in widths]
        layout = [[int(c) for c in stage] for stage in blocks] if blocks is not None else [[columns]] * len(widths)
        _check(spatial_dims, in_channels, widths, layout, stem, drop_path, global_ratio, norm)
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.drop_path, self.global_ratio = float(drop_path), float(global_ratio)
        self.max_columns = max(c for stage in layout for c in stage)
        self.column: int | None = None
        self.stem = _unit(spatial_dims, in_channels, stem, norm) if stem else None
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, ceil_mode=True)
        stages, cin = [], stem or in_channels
        for width, stage in zip(widths, layout, strict=True):
            stages.append(nn.ModuleList(
                FractalBlock(spatial_dims, cin if i == 0 else width, width, c, norm) for i, c in enumerate(stage)
            ))  # fmt: skip
            cin = width
        self.stages = nn.ModuleList(stages)
        self.depth = (1 if stem else 0) + sum(b.depth for stage in self.stages for b in stage)
        self.out_channels = (*([stem] if stem else []), *widths)
        self.reductions = (*([1] if stem else []), *(2**i for i in range(len(widths))))
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        _add_column_stats(self.stages)
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        column, drop = self._draw_path()
        with _column_stats(self.stages, column is not None):
            return self._forward_path(x, column, drop)

    def _forward_path(self, x: torch.Tensor, column: int | None, drop: float) -> list[torch.Tensor]:
        features = [self.stem(x)] if self.stem is not None else []
        y = features[-1] if features else x
        for i, stage in enumerate(self.stages):
            y = self.pool(y) if i else y
            for block in stage:
                y = block(y, column, drop)
            features.append(y)
        return features

    def _draw_path(self) -> tuple[int | None, float]:
        """``(column, local drop rate)`` for this forward pass: the forced column, or drop-path's draw."""
        if self.column is not None:
            return self.column, 0.0
        if not self.training:
            return None, 0.0
        if self.global_ratio > 0 and float(torch.rand(())) < self.global_ratio:
            return int(torch.randint(self.max_columns, ())), 0.0
        return None, self.drop_path

    @contextlib.contextmanager
    def use_column(self, column: int) -> Iterator[FractalEncoder]:
        """Compute only column ``column`` (1 = shortest, ``max_columns`` = deepest) inside the block."""
        if not 1 <= column <= self.max_columns:
            raise MedsegError(f"column {column}: choose 1 (shortest) to {self.max_columns} (deepest)")
        previous, self.column = self.column, column - 1
        try:
            yield self
        finally:
            self.column = previous

    def convs_per_block(self) -> list[int]:
        """The number of convolutions of each block, input side first (``2^C - 1`` each)."""
        return [sum(len(col) for col in block.columns) for stage in self.stages for block in stage]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``: global average pool of the last map, then ``fc``."""
        if self.fc is None:
            raise MedsegError("encoder has no classifier: build it with num_classes=N to use classify()")
        return self.fc(self(x)[-1].flatten(2).mean(-1))


_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _add_column_stats(module: nn.Module) -> None:
    """Give every batch norm in ``module`` a second set of running statistics for single-column passes."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for name in _STATS:
                m.register_buffer(f"column_{name}", m._buffers[name].clone())  # type: ignore[union-attr]


@contextlib.contextmanager
def _column_stats(module: nn.Module, active: bool) -> Iterator[None]:
    """While active, batch norms in ``module`` read and update their single-column statistics."""
    norms = [m for m in module.modules() if "column_running_mean" in m._buffers] if active else []
    _swap_stats(norms)
    try:
        yield
    finally:
        _swap_stats(norms)


def _swap_stats(norms: list[nn.Module]) -> None:
    for m in norms:
        for name in _STATS:
            m._buffers[name], m._buffers[f"column_{name}"] = m._buffers[f"column_{name}"], m._buffers[name]


def _check(
    spatial_dims: int, in_channels: int, widths: list[int], layout: list[list[int]], stem: int,
    drop_path: float, global_ratio: float, norm: str,
) -> None:  # fmt: skip
    if spatial_dims not in (2, 3):
        raise MedsegError(f"encoder option spatial_dims={spatial_dims} is invalid; choose one of: 2, 3")
    if norm not in NORMS:
        raise MedsegError(f"encoder option norm={norm!r} is invalid; choose one of: {', '.join(NORMS)}")
    if not widths or min(widths) < 1 or in_channels < 1 or stem < 0:
        raise MedsegError(f"encoder options widths={widths} in_channels={in_channels} stem={stem}: give "
                          "positive widths, at least 1 input channel and a stem width of 0 or more")
    if len(layout) != len(widths) or any(not s or min(s) < 1 or max(s) > 8 for s in layout):
        raise MedsegError(f"encoder option blocks={layout}: give one list of column counts (1 to 8) per "
                          f"stage, {len(widths)} stages for widths={widths}")
    if not (0 <= drop_path < 1 and 0 <= global_ratio <= 1):
        raise MedsegError(f"encoder options drop_path={drop_path} global_ratio={global_ratio}: give a "
                          "drop_path in [0, 1) and a global_ratio in [0, 1]")


FRACTAL_OPTIONS = keyword_options(FractalEncoder)


def cifar_fractal_blocks(depth: int, max_columns: int = 3) -> list[list[int]]:
    """The block layout of a CIFAR-style FractalNet of ``depth`` = 6n+2 layers (stem + deepest path
    + classifier, counted as the CIFAR ResNets are): each of the three stages gets a deepest path of
    ``2n`` convs, in blocks of ``max_columns`` columns and one smaller block for the remainder."""
    if depth < 8 or (depth - 2) % 6:
        raise MedsegError(f"depth {depth}: CIFAR-style networks have 6n+2 layers (8, 14, 20, 32, 44, 56, 110)")
    path, stage = 2 * ((depth - 2) // 6), []
    while path:
        c = min(max_columns, path.bit_length())  # the largest block whose deepest path 2^(c-1) fits
        stage.append(c)
        path -= 2 ** (c - 1)
    return [stage, stage, stage]


def _fractal(columns: int, spatial_dims: int, in_channels: int, options: dict[str, Any]) -> FractalEncoder:
    check_options("FractalEncoder", options, FRACTAL_OPTIONS)
    return FractalEncoder(spatial_dims, in_channels, **{"columns": columns, **options})


@register_encoder("fractal20", "FractalNet, 20 layers (Larsson 2017): 5 blocks of 3 columns, 64-512 channels",
                  options=FRACTAL_OPTIONS)
def fractal20(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> FractalEncoder:
    """FractalNet-20 (C=3, B=5): 5 maps, reductions (1, 2, 4, 8, 16), channels (64, 128, 256, 512, 512)."""
    return _fractal(3, spatial_dims, in_channels, options)


@register_encoder("fractal40", "FractalNet, 40 layers (Larsson 2017): 5 blocks of 4 columns, 64-512 channels",
                  options=FRACTAL_OPTIONS)
def fractal40(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> FractalEncoder:
    """FractalNet-40 (C=4, B=5): 5 maps, reductions (1, 2, 4, 8, 16), channels (64, 128, 256, 512, 512)."""
    return _fractal(4, spatial_dims, in_channels, options)
