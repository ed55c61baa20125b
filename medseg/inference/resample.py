"""Mapping network-grid logits back to the input's original voxel grid.

The network sees the image after MONAI's orientation and spacing steps; the label map must come back
in the input's own voxel order. The map from original voxel indices to network voxel indices is
``inv(network affine) @ original affine``. When it only permutes and flips axes (no target spacing,
2D) the argmax is re-ordered exactly; otherwise logits relative to the background are interpolated
linearly, plane by plane along the last axis, and the argmax is taken on the original grid, as nnU-Net
does. No full-resolution float copy per class is ever held (unless probability maps are asked for).
"""

from __future__ import annotations

import numpy as np
import torch

from medseg.data.interpolate import resample_planes


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
    dtype = label_dtype(classes)
    if scores.shape[0] == 0:
        return torch.zeros(scores.shape[1:], dtype=dtype)
    if implicit_zero:
        labels = (scores[0] > 0).to(dtype)
        if scores.shape[0] == 1:  # two classes: the sign decides
            return labels
        best = scores[0].clamp(min=0)
    else:
        labels, best = torch.zeros(scores.shape[1:], dtype=dtype), scores[0].clone()
    first = int(implicit_zero)
    for k in range(1, scores.shape[0]):
        labels.masked_fill_(scores[k] > best, k + first)
        torch.maximum(best, scores[k], out=best)
    return labels


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
    # Fortran order (planes of the last axis are contiguous blocks), the order NIfTI writes
    labels_out = empty_fortran(orig_shape, label_dtype(num_classes))
    prob_out = empty_fortran((num_classes, *orig_shape), torch.float32, channels=True) if probabilities else None
    for k, plane in resample_planes(relative, mapping, orig_shape):
        labels_out[..., k] = argmax(plane, implicit_zero=True)
        if prob_out is not None:
            prob_out[..., k] = torch.softmax(torch.cat([torch.zeros_like(plane[:1]), plane]), 0)
    return labels_out.numpy(), None if prob_out is None else prob_out.numpy()


def empty_fortran(shape: tuple[int, ...], dtype: torch.dtype, channels: bool = False) -> torch.Tensor:
    """An empty tensor of ``shape`` whose spatial axes are stored first-fastest (each channel a NIfTI volume)."""
    c = int(channels)
    return torch.empty((*shape[:c], *shape[c:][::-1]), dtype=dtype).permute(*range(c), *range(len(shape) - 1, c - 1, -1))


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
    out = empty_fortran((values.shape[0], *orig_shape), torch.float32, channels=True)
    for k, plane in resample_planes(values.float(), mapping, orig_shape):
        out[..., k] = plane
    return out.numpy()
