"""The one normalisation factory of medseg's encoders and decoders, on MONAI's ``Norm`` factory.

``norm="group"`` has one rule everywhere: ``gcd(groups, channels)`` groups, the largest group count
that divides both, so every channel count works and a power-of-two ``groups`` gives the largest
power of two (up to ``groups``) that divides ``channels``. The encoders pass their ``norm_groups``
option (default 32, Wu & He 2018); the decoders pass :data:`medseg.models.blocks.DECODER_NORM_GROUPS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from monai.networks.layers.factories import Norm
from torch import nn

from medseg.errors import MedsegError


def group_count(groups: int, channels: int) -> int:
    """The number of groups ``norm="group"`` uses: ``gcd(groups, channels)``."""
    return math.gcd(int(groups), int(channels))


#: ``norm=`` choices: ``fn(spatial_dims, channels, groups) -> module``. Instance norm is affine.
NORMS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "batch": lambda dims, c, groups: Norm[Norm.BATCH, dims](c),
    "instance": lambda dims, c, groups: Norm[Norm.INSTANCE, dims](c, affine=True),
    "group": lambda dims, c, groups: Norm[Norm.GROUP, dims](group_count(groups, c), c),
    "none": lambda dims, c, groups: nn.Identity(),
}


def make_norm(norm: str, spatial_dims: int, channels: int, groups: int = 32) -> nn.Module:
    """The normalisation layer ``norm`` (a key of :data:`NORMS`) for ``channels`` channels."""
    if norm not in NORMS:
        raise MedsegError(f"norm={norm!r} is not valid; choose one of {', '.join(map(repr, NORMS))}")
    return NORMS[norm](spatial_dims, channels, groups)
