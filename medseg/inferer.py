"""One sliding-window callable for validation and prediction, built from the run's settings.

Validation during training and :class:`medseg.inference.Predictor` both segment whole images with
MONAI's ``sliding_window_inference`` over patches of the training size; this class holds the
choices they share (patch size, overlap, blending, patch batch, precision, memory format), so the
two can never drift apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medseg import runtime
from medseg.config import InferenceConfig


def tta_flips(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of an ``(N, C, *spatial)`` batch: the ``2^dims`` mirrorings."""
    axes = range(2, 2 + spatial_dims)
    return [c for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]


class SlidingWindow:
    """Gaussian-blended sliding-window logits of ``model`` over whole images, in fp32.

    ``model`` must already sit on ``device`` in eval mode; patches run under the precision's
    autocast and the memory format chosen for it.
    """

    def __init__(
        self,
        model: nn.Module,
        patch_size: Sequence[int],
        settings: InferenceConfig,
        device: torch.device,
        precision: runtime.Precision,
        channels_last: bool,
    ) -> None:
        self.model = model
        self.patch_size = [int(p) for p in patch_size]
        self.spatial_dims = len(self.patch_size)
        self.settings = settings
        self.device = device
        self.precision = precision
        self.channels_last = channels_last

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a batch of patches, returned as fp32."""
        with runtime.autocast(self.precision, self.device):
            return self.model(runtime.prepare_batch(x, self.device, self.spatial_dims, self.channels_last)).float()

    def __call__(
        self, x: torch.Tensor, flips: Sequence[tuple[int, ...]] = ((),), stitch: torch.device | None = None
    ) -> torch.Tensor:
        """Logits ``(N, classes, *spatial)`` of ``x``, averaged over ``flips`` (see :func:`tta_flips`).

        Windows run on ``self.device``; their outputs are summed on ``stitch`` (default: where
        ``x`` is), so a volume larger than the GPU's memory can be stitched on the CPU.
        """
        total: torch.Tensor | None = None
        for dims in flips:
            out = torch.as_tensor(sliding_window_inference(
                torch.flip(x, dims) if dims else x, roi_size=self.patch_size,
                sw_batch_size=self.settings.sw_batch_size, predictor=self.patch_logits,
                overlap=self.settings.overlap, mode=self.settings.blend, sw_device=self.device,
                device=stitch if stitch is not None else x.device,
            ))
            if dims:
                out = torch.flip(out, dims)  # a copy; the flipped one is freed below
            if total is None:
                total = out
            else:
                total.add_(out)
            del out
        assert total is not None, "flips must not be empty"
        if len(flips) > 1:
            total.div_(len(flips))
        return runtime.plain(total).float()
