"""What a prediction will cost, said before the first case: network passes, and seconds timed here.

The passes are the predictor's members (folds) times its mirrorings. The seconds come from timing
one batch of windows of the predictor's first network here (after a warm-up) and multiplying by
the number of window batches MONAI's sliding window takes over the input's size on the network
grid (reoriented, resampled to the run's spacing); stitching and reading are not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from medseg import runtime
from medseg.data import io
from medseg.inferer import tta_flips
from medseg.run import is_cross_validation

if TYPE_CHECKING:
    from medseg.inference.predictor import Predictor


def cost_line(predictor: Predictor, meta: io.ImageMeta | None = None) -> str:
    """``3 folds × 8 mirrorings = 24 network passes per case, about 40 s per case like the first one here (…)``."""
    folds = len(predictor.members)
    mirrors = len(tta_flips(predictor.spatial_dims)) if predictor.inference.tta else 1
    passes = predictor.passes
    members = f"{folds} fold{'s' if folds > 1 else ''}" if is_cross_validation(predictor.run_dir) else "1 model"
    parts = [members, f"{mirrors} mirroring{'s' if mirrors > 1 else ''}"]
    line = f"{' × '.join(parts)} = {passes} network pass{'es' if passes > 1 else ''} per case"
    if meta is None:
        return line
    net = network_shape(predictor, meta)
    windows = window_count(net, predictor.preprocess.patch_size, predictor.inference.overlap)
    seconds = passes * pass_seconds(predictor, windows)
    return (f"{line}, about {seconds:.1f} s per case like the first one here "
            f"({'×'.join(map(str, net))} network voxels, {windows} windows a pass)")


def network_shape(predictor: Predictor, meta: io.ImageMeta) -> list[int]:
    """The network-grid size of an image: reoriented (voxel axis j is the world axis its direction
    points along most), resampled to the run's spacing, at least one patch."""
    dims = predictor.spatial_dims
    world = [int(np.argmax(np.abs(np.asarray(meta.direction)[:dims, j]))) for j in range(dims)]
    world = world if len(set(world)) == dims else list(range(dims))  # 45° obliques: keep the voxel order
    sizes = [0] * dims
    target = predictor.preprocess.spacing
    for j, i in enumerate(world):
        extent = meta.shape[j] * (meta.spacing[j] if target is not None else 1.0)
        sizes[i] = max(1, round(extent / (target[i] if target is not None else 1.0)))
    return [max(n, p) for n, p in zip(sizes, predictor.preprocess.patch_size, strict=True)]


def window_count(net: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Sliding windows over ``net`` (MONAI's scan: steps of ``patch × (1 − overlap)``)."""
    count = 1
    for n, p in zip(net, patch, strict=True):
        step = max(1, int(p * (1 - overlap)))
        count *= math.ceil(max(n - p, 0) / step) + 1
    return count


def pass_seconds(predictor: Predictor, windows: int) -> float:
    """One pass of ``windows`` windows: its window batches, one of them timed here (after a warm-up)."""
    batch = predictor.inference.sw_batch_size
    x = torch.zeros((batch, predictor.preprocess.in_channels, *predictor.preprocess.patch_size))
    with torch.inference_mode(), runtime.network_allocator(predictor.device):
        for _ in range(2):
            started = time.perf_counter()
            predictor.window.patch_logits(x)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize(predictor.device)
    return (time.perf_counter() - started) * math.ceil(windows / batch)
