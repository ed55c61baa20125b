"""Many classes, bounded memory: the class decision taken slab by slab while the windows are stitched.

Holding every class's logits for a whole volume is what runs out of memory with many classes (MONAI's
open #6427: 100 classes at 384³ need 22.5 GB). Here the original grid is cut into slabs along its last
axis; for each slab the network runs its sliding window on the part of the preprocessed image that
slab maps to, plus a patch of context on both sides, and only that part's logits are held, mapped
back (:func:`~medseg.data.interpolate.resample_planes`) and turned into labels before the next slab.
The price is the context: the windows there run twice. Each part starts on the whole-volume window
grid, so the windows that reach a slab's voxels are the ones the whole-volume pass runs, and the labels
are the same (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from medseg.data.interpolate import resample_planes, separable
from medseg.inference.resample import argmax, empty_fortran, label_dtype


def logit_bytes(num_classes: int, shape: Sequence[int]) -> int:
    """Bytes of one volume's fp32 logits (what the whole-volume path holds, twice while blending)."""
    return 4 * num_classes * math.prod(shape)


class SlabPlan(NamedTuple):
    """The network axis the original last axis maps to, and per slab ``(orig start, orig stop, net lo, net hi)``."""

    axis: int
    slabs: list[tuple[int, int, int, int]]


def slab_plan(
    mapping: np.ndarray, net_shape: Sequence[int], orig_shape: Sequence[int], patch: Sequence[int],
    num_classes: int, budget_bytes: int, overlap: float,
) -> SlabPlan | None:
    """The original slabs and the network range each needs along the network axis the original last
    axis maps to; None when the map is not axis-aligned (an oblique grid: the whole-volume path is used).

    Each range has a patch of context on both sides and starts on the sliding window's own grid
    (multiples of its step, ``patch · (1 − overlap)``), so every window that touches a slab's voxels
    is one the whole-volume pass would run too: the labels are the same (tested)."""
    axes = separable(mapping)
    if axes is None:
        return None
    axis, scale, offset = axes[-1]
    n, window = int(net_shape[axis]), int(patch[axis])
    step = max(1, int(window * (1 - overlap)))
    cross = logit_bytes(num_classes, [s for i, s in enumerate(net_shape) if i != axis])
    length = max(2 * window, budget_bytes // max(1, cross) - 2 * window - step)  # network voxels a slab
    per_slab = max(1, int(length / max(abs(scale), 1e-6)))  # original voxels a slab
    plan = []
    for start in range(0, int(orig_shape[-1]), per_slab):
        stop = min(int(orig_shape[-1]), start + per_slab)
        ends = [scale * start + offset, scale * (stop - 1) + offset]
        lo = max(0, (math.floor(min(ends)) - window) // step * step)
        hi = min(n, math.floor(max(ends)) + 2 + window)
        plan.append((start, stop, lo, hi))
    return SlabPlan(axis, plan)


def segment_in_slabs(
    logits: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, mapping: np.ndarray,
    orig_shape: tuple[int, ...], plan: SlabPlan, num_classes: int,
) -> np.ndarray:
    """Labels on the original grid, one slab of :func:`slab_plan` at a time.

    ``logits`` maps a ``(channels, *part)`` image to its ``(classes, *part)`` logits (the predictor's
    sliding window, with its flips); ``image`` is the preprocessed ``(channels, *net)`` volume.
    """
    dims = len(orig_shape)
    axis = plan.axis
    labels = empty_fortran(orig_shape, label_dtype(num_classes))
    for start, stop, lo, hi in plan.slabs:
        part = logits(image.narrow(axis + 1, lo, hi - lo))
        relative = part[1:].sub_(part[:1])
        del part
        shape = (*orig_shape[:-1], stop - start)
        for k, plane in resample_planes(relative, _shifted(mapping, dims, axis, lo, start), shape):
            labels[..., start + k] = argmax(plane, implicit_zero=True)
        del relative
    return labels.numpy()


def _shifted(mapping: np.ndarray, dims: int, axis: int, net_lo: int, orig_start: int) -> np.ndarray:
    """``mapping`` for a part: original indices counted from ``orig_start`` on the last axis, network
    indices from ``net_lo`` on ``axis``."""
    into = np.eye(dims + 1)
    into[dims - 1, dims] = orig_start
    out = np.eye(dims + 1)
    out[axis, dims] = -net_lo
    return out @ mapping @ into
