"""Mapping network-grid logits back to the input's original voxel grid.

The network sees the image after MONAI's orientation and spacing steps; the label map must come back
in the input's own voxel order. The map from original voxel indices to network voxel indices is
``inv(network affine) @ original affine``. When it only permutes and flips axes (no target spacing,
2D) the argmax is re-ordered exactly; otherwise logits relative to the background are interpolated
linearly, slab by slab along the last axis, and the argmax is taken on the original grid, as nnU-Net
does. No full-resolution float copy per class is ever held (unless probability maps are asked for).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

#: Voxels per slab when mapping logits back to the original grid (bounds the temporaries).
SLAB_VOXELS = 1 << 21


def affine_nd(affine: np.ndarray, dims: int) -> np.ndarray:
    """The ``dims``-D part of an affine (MONAI keeps 4×4 affines for 2D images too)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape[0] == dims + 1:
        return a
    out = np.eye(dims + 1)
    out[:dims, :dims] = a[:dims, :dims]
    out[:dims, dims] = a[:dims, -1]
    return out


def _axis_map(mapping: np.ndarray, net_shape: tuple[int, ...], orig_shape: tuple[int, ...]) -> list[tuple[int, bool]] | None:
    """``[(network axis, flipped)]`` per original axis when ``mapping`` only permutes and flips axes, else None."""
    dims = len(orig_shape)
    rot, shift = mapping[:dims, :dims], mapping[:dims, dims]
    if not np.allclose(np.abs(rot), np.round(np.abs(rot)), atol=1e-5) or not np.allclose(np.abs(rot).sum(0), 1, atol=1e-5):
        return None
    axes: list[tuple[int, bool]] = []
    for j in range(dims):  # original axis j is network axis i, maybe reversed
        i = int(np.argmax(np.abs(rot[:, j])))
        flipped = rot[i, j] < 0
        n = orig_shape[j]
        if net_shape[i] != n or abs(shift[i] - ((n - 1) if flipped else 0)) > 1e-3:
            return None
        axes.append((i, flipped))
    return axes


def _reorder(x: torch.Tensor, axes: list[tuple[int, bool]], channel: bool = False) -> torch.Tensor:
    """Network-grid array to original voxel order, by :func:`_axis_map`'s permutation and flips."""
    c = int(channel)
    x = x.permute(*range(c), *(i + c for i, _ in axes))
    flips = [j + c for j, (_, flipped) in enumerate(axes) if flipped]
    return (torch.flip(x, flips) if flips else x).contiguous()


def label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int16


def argmax(scores: torch.Tensor, implicit_zero: bool = False) -> torch.Tensor:
    """Index of the largest score over axis 0 (the first one on ties), as uint8 (int16 above 256 classes).

    ``implicit_zero``: a channel of zeros (the background) stands before ``scores``. A running
    comparison, because ``argmax`` over a leading axis is slow on the CPU and returns int64.
    """
    classes = scores.shape[0] + int(implicit_zero)
    labels = torch.zeros(scores.shape[1:], dtype=label_dtype(classes))
    if scores.shape[0] == 0:
        return labels
    best = scores[0].clamp(min=0) if implicit_zero else scores[0].clone()
    first = int(implicit_zero)
    if implicit_zero:
        labels[scores[0] > 0] = 1
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        labels[better] = k + first
        torch.maximum(best, scores[k], out=best)
    return labels


def separable(mapping: np.ndarray) -> list[tuple[int, float, float]] | None:
    """``[(network axis, scale, offset)]`` per original axis when each original axis maps to one network axis.

    That is the case for MONAI's orientation and spacing steps (a permutation, flips and per-axis
    scaling); then linear interpolation is a product of 1D interpolations and needs no sampling grid.
    """
    dims = mapping.shape[0] - 1
    rot = mapping[:dims, :dims]
    nonzero = np.abs(rot) > 1e-6 * max(1.0, float(np.abs(rot).max()))  # float noise of the affine solve
    if not (nonzero.sum(0) == 1).all() or not (nonzero.sum(1) == 1).all():
        return None
    axes = []
    for j in range(dims):
        i = int(np.argmax(nonzero[:, j]))
        axes.append((i, float(rot[i, j]), float(mapping[i, dims])))
    return axes


def _lerp_weights(n: int, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper neighbour indices and the upper weight of fractional indices (border padding)."""
    u = coords.clamp(0, n - 1)
    lo = u.floor().long().clamp(max=n - 1)
    return lo, (lo + 1).clamp(max=n - 1), u - lo


def _lerp_axis(x: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``axis`` at fractional indices ``coords`` (border padding)."""
    lo, hi, w = _lerp_weights(x.shape[axis], coords)
    shape = [1] * x.dim()
    shape[axis] = -1
    out = x.index_select(axis, lo)
    return out.add_(x.index_select(axis, hi).sub_(out).mul_(w.to(x.dtype).reshape(shape)))


def resample_slabs(
    values: torch.Tensor, mapping: np.ndarray, out_shape: tuple[int, ...]
) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
    """Linearly interpolate ``values`` (channels first, network grid) at the original grid, slab by slab.

    ``mapping`` takes original voxel indices to network voxel indices; outside the network grid the
    border value is used (as MONAI's ``Spacingd`` pads). Yields ``(index, (channels, *slab))`` for
    slabs along the last original axis. Axis-aligned mappings (MONAI's) are interpolated one axis
    at a time; anything else goes through ``grid_sample``. Both equal MONAI's bilinear ``Invertd``.
    """
    dims = len(out_shape)
    step = max(1, SLAB_VOXELS // max(1, math.prod(out_shape[:-1])))
    axes = separable(mapping)
    if axes is not None:
        # view the network array with its axes in the original order, then interpolate the slab's
        # (last) axis first, so the other axes only ever see one slab
        ordered = values.permute(0, *(i + 1 for i, _, _ in axes))
        coords = [scale * torch.arange(n, dtype=torch.float64) + offset
                  for (_, scale, offset), n in zip(axes, out_shape, strict=True)]
        for start in range(0, out_shape[-1], step):
            stop = min(out_shape[-1], start + step)
            slab = _lerp_axis(ordered, dims, coords[-1][start:stop]).contiguous()
            for j in range(dims - 1):
                slab = _lerp_axis(slab, j + 1, coords[j])
            yield (*[slice(None)] * (dims - 1), slice(start, stop)), slab
        return
    net = values.shape[1:]
    m = torch.as_tensor(mapping, dtype=torch.float64)
    # grid_sample wants coordinates in [-1, 1] (align_corners=True: -1 and 1 are the end voxels' centres),
    # the last one indexing the input's last axis
    scale = torch.tensor([2.0 / (n - 1) if n > 1 else 0.0 for n in net], dtype=torch.float64)
    base = [torch.arange(n, dtype=torch.float64) for n in out_shape[:-1]]
    batch = values[None]
    for start in range(0, out_shape[-1], step):
        stop = min(out_shape[-1], start + step)
        grid = torch.meshgrid(*base, torch.arange(start, stop, dtype=torch.float64), indexing="ij")
        points = torch.stack(grid, -1) @ m[:dims, :dims].T + m[:dims, dims]
        points = (points * scale - (scale > 0).double()).flip(-1).to(torch.float32)
        slab = F.grid_sample(batch, points[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
        yield (*[slice(None)] * (dims - 1), slice(start, stop)), slab


def grid_mapping(net_affine: np.ndarray, orig_affine: np.ndarray, dims: int, resampled: bool) -> np.ndarray:
    """Original voxel index -> network voxel index (homogeneous), through world coordinates."""
    if not resampled:
        return np.eye(dims + 1)
    return np.linalg.solve(affine_nd(net_affine, dims), affine_nd(orig_affine, dims))


def to_original(
    logits: torch.Tensor, net_affine: np.ndarray, orig_affine: np.ndarray, orig_shape: tuple[int, ...],
    resampled: bool, probabilities: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and softmax probabilities, if asked) on the original grid from ``(classes, *net)`` logits.

    ``logits`` is consumed (modified in place) when the run resampled.
    """
    dims = len(orig_shape)
    num_classes = logits.shape[0]
    mapping = grid_mapping(net_affine, orig_affine, dims, resampled)
    axes = _axis_map(mapping, tuple(logits.shape[1:]), orig_shape)
    if axes is not None:  # orientation only: exact re-ordering of the network's output
        labels = _reorder(argmax(logits), axes).numpy()
        prob = _reorder(torch.softmax(logits, 0), axes, channel=True).numpy() if probabilities else None
        return labels, prob
    # Scores relative to the background have the same argmax and softmax as the logits, and linear
    # interpolation commutes with that subtraction: one channel fewer to resample (one in all for 2 classes).
    relative = logits[1:].sub_(logits[:1])
    labels_out = torch.empty(orig_shape, dtype=label_dtype(num_classes))
    prob_out = np.empty((num_classes, *orig_shape), dtype=np.float32) if probabilities else None
    for index, slab in resample_slabs(relative, mapping, orig_shape):
        labels_out[index] = argmax(slab, implicit_zero=True)
        if prob_out is not None:
            full = torch.cat([torch.zeros_like(slab[:1]), slab])
            prob_out[(slice(None), *index)] = torch.softmax(full, 0).numpy()
    return labels_out.numpy(), prob_out


def values_to_original(
    values: torch.Tensor, net_affine: np.ndarray, orig_affine: np.ndarray, orig_shape: tuple[int, ...],
    resampled: bool,
) -> np.ndarray:
    """Continuous maps ``(channels, *net)`` (an uncertainty map, say) on the original grid, float32:
    re-ordered exactly when only the orientation differs, else linearly interpolated as the logits are."""
    mapping = grid_mapping(net_affine, orig_affine, len(orig_shape), resampled)
    axes = _axis_map(mapping, tuple(values.shape[1:]), orig_shape)
    if axes is not None:
        return _reorder(values, axes, channel=True).numpy().astype(np.float32, copy=False)
    out = np.empty((values.shape[0], *orig_shape), dtype=np.float32)
    for index, slab in resample_slabs(values, mapping, orig_shape):
        out[(slice(None), *index)] = slab.numpy()
    return out
