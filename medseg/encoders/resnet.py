"""ResNet encoders for 2D and 3D, in one code path: the encoder and its named builders.

Reads top to bottom as timm's ``resnet.py`` does. MONAI's layer factories pick the 2D or 3D layer
from ``spatial_dims``, so there is no branch on the dimension anywhere. Module names follow
torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``) so ImageNet,
timm, MONAI and MedicalNet state dicts load 1:1 (see :mod:`medseg.encoders.weights`).

References: He et al. 2015 (ResNet, shortcut options A/B/C, CIFAR ResNets), He et al. 2016
(pre-activation units), Huang et al. 2016 (stochastic depth).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from medseg.encoders.base import EncoderBase
from medseg.encoders.norms import NORMS
from medseg.encoders.registry import register_encoder
from medseg.encoders.resnet_blocks import BLOCKS, SHORTCUTS, STEMS, BlockSpec, stem_conv
from medseg.errors import MedsegError
from medseg.registry import B, check_options, keyword_options

# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


def _choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise MedsegError(
            f"encoder option {option}={value!r} is invalid; choose one of: {', '.join(map(str, choices))}"
        )


def _check_options(
    layers: list[int], widths: list[int], in_channels: int, drop_path: float, residual: bool,
    zero_init_residual: bool, num_classes: int | None,
) -> None:
    """One-line errors for ResNetEncoder options that cannot build a network."""
    if not layers or len(layers) != len(widths) or min(layers) < 1 or min(widths) < 1:
        raise MedsegError(
            f"encoder options layers={layers} widths={widths}: give one positive block count and one "
            "positive width per stage"
        )
    if in_channels < 1:
        raise MedsegError(f"encoder option in_channels={in_channels}: give at least 1")
    if not 0.0 <= drop_path < 1.0:
        raise MedsegError(f"encoder option drop_path={drop_path}: give a probability in [0, 1)")
    if not residual and (drop_path > 0 or zero_init_residual):
        raise MedsegError(
            "encoder options residual=False with drop_path/zero_init_residual: a plain network has no "
            "shortcut to fall back on; set drop_path=0 and zero_init_residual=False"
        )
    if num_classes is not None and num_classes < 1:
        raise MedsegError(f"encoder option num_classes={num_classes}: give a positive number or None")


class ResNetEncoder(EncoderBase):
    """A 2D or 3D ResNet returning its feature pyramid, highest resolution first.

    ``forward(x)`` returns ``[stem, layer1, ..., layerN]`` where ``stem = relu(bn1(conv1(x)))`` and
    layer1 follows the max-pool (ImageNet stem). Reductions are nominal: ``(2, 4, 8, 16, 32)`` for the
    ImageNet stem with 4 stages, ``(1, 1, 2, 4)`` for the CIFAR stem with 3; an axis of odd size ``s``
    gives ``ceil(s / reduction)`` voxels. With ``preact=True`` the last map is ``relu(final_norm(layerN))``
    and the other stage outputs are the raw sums, as pre-activation units expect them.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (any number).
        block: ``basic`` or ``bottleneck``.
        layers: blocks per stage; the first stage has stride 1, the others stride 2.
        widths: per-stage width ("planes"); a stage outputs ``width * expansion`` channels (4 for bottleneck).
        stem: ``imagenet`` (7x7 stride-2 conv, 3x3 stride-2 max-pool), ``cifar`` (3x3 stride-1 conv) or
            ``deep`` (three 3x3 convs, the first stride 2, ending at ``2 * stem_width``; then the max-pool).
        shortcut: ``A`` (parameter-free: subsample, zero-pad channels), ``B`` (1x1 projection where the
            shape changes), ``C`` (a projection on every block), ``D`` (average-pool, then a stride-1
            projection: ResNet-D).
        preact: pre-activation units (He et al. 2016) and a final norm-ReLU (``final_norm``).
        residual: ``False`` builds the plain twin: the same layers with no shortcut at all.
        norm: ``batch``, ``instance`` (affine), ``group`` (``gcd(norm_groups, channels)`` groups) or ``none``.
        norm_groups: groups for ``norm='group'``.
        zero_init_residual: start each residual branch at zero (last norm's weight, or last conv for
            pre-activation units / ``norm='none'``), so every block starts as the identity.
        drop_path: stochastic depth; the drop probability grows linearly from 0 (first block) to this.
        num_classes: add ``fc`` for ``classify(x)`` (global average pool + linear); ``forward`` is unchanged.
        stem_width: channels of the stem (default ``widths[0]``; the deep stem ends at twice this).
        groups: groups of each bottleneck's 3x3 conv (ResNeXt's cardinality).
        base_width: bottleneck width per group for ``planes=64``; the 3x3 conv has
            ``planes * base_width / 64 * groups`` channels (ResNeXt 32x4d: 32 and 4; Wide ResNet: 128).
        se_ratio: squeeze-and-excitation in every bottleneck, reducing to this share of the channels
            (SE-ResNet: 1/16); 0 for none.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        *,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        shortcut: str = "B",
        preact: bool = False,
        residual: bool = True,
        norm: str = "batch",
        norm_groups: int = 32,
        zero_init_residual: bool = False,
        drop_path: float = 0.0,
        num_classes: int | None = None,
        stem_width: int | None = None,
        groups: int = 1,
        base_width: int = 64,
        se_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        _choice("spatial_dims", spatial_dims, (2, 3))
        _choice("block", block, tuple(BLOCKS))
        _choice("stem", stem, tuple(STEMS))
        _choice("shortcut", shortcut, tuple(SHORTCUTS))
        _choice("norm", norm, tuple(NORMS))
        layers, widths = [int(n) for n in layers], [int(w) for w in widths]
        _check_options(layers, widths, in_channels, drop_path, residual, zero_init_residual, num_classes)

        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.preact, self.residual = preact, residual
        if (groups != 1 or base_width != 64 or se_ratio) and (block != "bottleneck" or preact):
            raise MedsegError("encoder options groups/base_width/se_ratio shape post-activation bottlenecks; "
                              "use block='bottleneck' with preact=False")
        spec = BlockSpec(spatial_dims, norm, norm_groups, residual, int(groups), int(base_width), float(se_ratio))
        stem_spec = STEMS[stem]
        block_cls = BLOCKS[block][int(preact)]
        self.conv1, stem_width = stem_conv(spec, stem_spec, in_channels, int(stem_width or widths[0]))
        self.bn1 = spec.norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1) if stem_spec.max_pool else nn.Identity()
        )

        total, index = sum(layers), 0
        cin, channels = stem_width, [stem_width]
        reduction = stem_spec.stride
        reductions = [reduction]
        reduction *= 2 if stem_spec.max_pool else 1
        self.stage_names: list[str] = []
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for j in range(n):
                rate = drop_path * index / max(total - 1, 1)
                blocks.append(block_cls(spec, cin, width, stride if j == 0 else 1, shortcut, rate))
                cin, index = width * block_cls.expansion, index + 1
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            channels.append(cin)
            reductions.append(reduction)
        self.final_norm = spec.norm_layer(cin) if preact else None
        self.out_channels = tuple(channels)
        self.reductions = tuple(reductions)
        self.num_classes = num_classes
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming-normal convs (fan-out, as torchvision), unit norms; optionally zero each branch's end."""
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "last_layers"):
                    last_conv, last_norm = m.last_layers()
                    target = last_norm if isinstance(getattr(last_norm, "weight", None), torch.Tensor) else last_conv
                    nn.init.zeros_(target.weight)

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """The stem's conv and norm (see :meth:`BasicBlock.conv_norm_pairs`)."""
        return [("conv1", "bn1")]

    def stages(self) -> list[nn.Module]:
        """``[layer1, ..., layerN]``."""
        return [getattr(self, name) for name in self.stage_names]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps ``[stem, layer1, ..., layerN]``; see ``out_channels`` and ``reductions``."""
        self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
            features.append(x)
        if self.final_norm is not None:
            features[-1] = self.relu(self.final_norm(features[-1]))
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``: global average pool of the last map, then ``fc``."""
        if self.fc is None:
            raise MedsegError("encoder has no classifier: build it with num_classes=N to use classify()")
        pooled = self(x)[-1].flatten(2).mean(-1)
        return self.fc(pooled)


# ---------------------------------------------------------------------------------------------
# Named builders
# ---------------------------------------------------------------------------------------------

#: The options every named builder takes: ``ResNetEncoder``'s keyword-only parameters.
RESNET_OPTIONS = keyword_options(ResNetEncoder)
_IMAGENET: dict[str, Any] = {"stem": "imagenet", "widths": (64, 128, 256, 512), "shortcut": "B"}
_CIFAR: dict[str, Any] = {"stem": "cifar", "widths": (16, 32, 64), "shortcut": "A"}


def _build(spatial_dims: int, in_channels: int, options: dict[str, Any], **defaults: Any) -> ResNetEncoder:
    """``ResNetEncoder(**defaults)`` with the caller's ``options`` on top; unknown options are a MedsegError."""
    check_options("ResNetEncoder", options, RESNET_OPTIONS)
    return ResNetEncoder(spatial_dims=spatial_dims, in_channels=in_channels, **{**defaults, **options})


def _register(name: str, description: str) -> Callable[[B], B]:
    """``register_encoder`` declaring :data:`RESNET_OPTIONS`, which every builder below takes."""
    return register_encoder(name, description, options=RESNET_OPTIONS)


def _cifar_layers(depth: int) -> tuple[int, int, int]:
    n = (depth - 2) // 6
    return (n, n, n)


@_register("resnet10", "ImageNet stem, basic blocks 1-1-1-1, shortcut B (MedicalNet's smallest)")
def resnet10(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-10 (MedicalNet / MONAI ``resnet10``); 5 maps, reductions 2..32, channels 64, 64..512."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(1, 1, 1, 1), **_IMAGENET)


@_register("resnet18", "ImageNet stem, basic blocks 2-2-2-2, shortcut B (torchvision)")
def resnet18(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-18 (He et al. 2015); 5 maps, reductions 2..32, channels (64, 64, 128, 256, 512)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(2, 2, 2, 2), **_IMAGENET)


@_register("resnet34", "ImageNet stem, basic blocks 3-4-6-3, shortcut B (torchvision)")
def resnet34(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-34; 5 maps, reductions 2..32, channels (64, 64, 128, 256, 512)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(3, 4, 6, 3), **_IMAGENET)


@_register("resnet50", "ImageNet stem, bottlenecks 3-4-6-3, shortcut B (torchvision v1.5)")
def resnet50(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-50; 5 maps, reductions 2..32, channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, block="bottleneck", layers=(3, 4, 6, 3), **_IMAGENET)


@_register("resnet101", "ImageNet stem, bottlenecks 3-4-23-3, shortcut B (torchvision v1.5)")
def resnet101(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-101; 5 maps, reductions 2..32, channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, block="bottleneck", layers=(3, 4, 23, 3), **_IMAGENET)


@_register("resnet152", "ImageNet stem, bottlenecks 3-8-36-3, shortcut B (torchvision v1.5)")
def resnet152(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """ResNet-152; 5 maps, reductions 2..32, channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, block="bottleneck", layers=(3, 8, 36, 3), **_IMAGENET)


@_register("resnet20", "CIFAR ResNet-20: 3x3 stem, 16/32/64 x 3 blocks, shortcut A")
def resnet20(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """CIFAR ResNet-20 (6n+2, n=3); 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(20), **_CIFAR)


@_register("resnet32", "CIFAR ResNet-32: 3x3 stem, 16/32/64 x 5 blocks, shortcut A")
def resnet32(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """CIFAR ResNet-32 (n=5); 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(32), **_CIFAR)


@_register("resnet44", "CIFAR ResNet-44: 3x3 stem, 16/32/64 x 7 blocks, shortcut A")
def resnet44(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """CIFAR ResNet-44 (n=7); 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(44), **_CIFAR)


@_register("resnet56", "CIFAR ResNet-56: 3x3 stem, 16/32/64 x 9 blocks, shortcut A")
def resnet56(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """CIFAR ResNet-56 (n=9); 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(56), **_CIFAR)


@_register("resnet110", "CIFAR ResNet-110: 3x3 stem, 16/32/64 x 18 blocks, shortcut A")
def resnet110(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """CIFAR ResNet-110 (n=18); 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(110), **_CIFAR)


@_register("plain_resnet18", "Plain twin of resnet18: same layers, no shortcuts")
def plain_resnet18(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of ResNet-18: same convs and norms, no shortcut; as many parameters as option A."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(2, 2, 2, 2), residual=False,
                  **{**_IMAGENET, "shortcut": "A"})  # fmt: skip


@_register("plain_resnet34", "Plain twin of resnet34: same layers, no shortcuts")
def plain_resnet34(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of ResNet-34: same convs and norms, no shortcut; as many parameters as option A."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(3, 4, 6, 3), residual=False,
                  **{**_IMAGENET, "shortcut": "A"})  # fmt: skip


def _plain_cifar(depth: int, spatial_dims: int, in_channels: int, options: dict[str, Any]) -> ResNetEncoder:
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(depth),
                  residual=False, **_CIFAR)  # fmt: skip


@_register("plain_resnet20", "Plain twin of CIFAR resnet20: same layers, no shortcuts")
def plain_resnet20(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of CIFAR ResNet-20 (degradation experiments)."""
    return _plain_cifar(20, spatial_dims, in_channels, options)


@_register("plain_resnet32", "Plain twin of CIFAR resnet32: same layers, no shortcuts")
def plain_resnet32(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of CIFAR ResNet-32."""
    return _plain_cifar(32, spatial_dims, in_channels, options)


@_register("plain_resnet44", "Plain twin of CIFAR resnet44: same layers, no shortcuts")
def plain_resnet44(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of CIFAR ResNet-44."""
    return _plain_cifar(44, spatial_dims, in_channels, options)


@_register("plain_resnet56", "Plain twin of CIFAR resnet56: same layers, no shortcuts")
def plain_resnet56(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of CIFAR ResNet-56 (degradation experiments)."""
    return _plain_cifar(56, spatial_dims, in_channels, options)


@_register("plain_resnet110", "Plain twin of CIFAR resnet110: same layers, no shortcuts")
def plain_resnet110(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Plain twin of CIFAR ResNet-110."""
    return _plain_cifar(110, spatial_dims, in_channels, options)


@_register("preact_resnet18", "Pre-activation ResNet-18 (He 2016), ImageNet stem, shortcut B")
def preact_resnet18(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Pre-activation ResNet-18; 5 maps, channels (64, 64, 128, 256, 512); the last map is final-normed."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(2, 2, 2, 2), preact=True,
                  **_IMAGENET)  # fmt: skip


@_register("preact_resnet34", "Pre-activation ResNet-34 (He 2016), ImageNet stem, shortcut B")
def preact_resnet34(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Pre-activation ResNet-34; 5 maps, channels (64, 64, 128, 256, 512)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=(3, 4, 6, 3), preact=True,
                  **_IMAGENET)  # fmt: skip


@_register("preact_resnet50", "Pre-activation ResNet-50 (He 2016), bottlenecks, shortcut B")
def preact_resnet50(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Pre-activation ResNet-50; 5 maps, channels (64, 256, 512, 1024, 2048)."""
    return _build(spatial_dims, in_channels, options, block="bottleneck", layers=(3, 4, 6, 3), preact=True,
                  **_IMAGENET)  # fmt: skip


@_register("preact_resnet110", "Pre-activation CIFAR ResNet-110 (He 2016), 16/32/64, shortcut A")
def preact_resnet110(spatial_dims: int = 2, in_channels: int = 1, **options: Any) -> ResNetEncoder:
    """Pre-activation CIFAR ResNet-110; 4 maps, reductions (1, 1, 2, 4), channels (16, 16, 32, 64)."""
    return _build(spatial_dims, in_channels, options, block="basic", layers=_cifar_layers(110), preact=True,
                  **_CIFAR)  # fmt: skip
