"""The plane-by-plane route of the map back gives the slab route's values, in the output's memory order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medseg.data import interpolate
from medseg.inference.resample import empty_fortran, to_original


def _slabs(values: torch.Tensor, mapping: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.full((values.shape[0], *shape), float("nan"))
    for index, slab in interpolate.resample_slabs(values, mapping, shape):
        out[(slice(None), *index)] = slab
    return out


def _planes(values: torch.Tensor, mapping: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.full((values.shape[0], *shape), float("nan"))
    seen = []
    for k, plane in interpolate.resample_planes(values, mapping, shape):
        assert plane.shape == (values.shape[0], *shape[:-1])
        assert plane.stride()[1] == 1  # first axis fastest: a NIfTI's order
        out[..., k] = plane
        seen.append(k)
    assert seen == list(range(shape[-1]))
    return out


def _axis_aligned(scales: tuple[float, ...], net: tuple[int, ...]) -> np.ndarray:
    """Original index -> network index: scale per axis, flipped axes start at the network's far end."""
    dims = len(scales)
    mapping = np.eye(dims + 1)
    for axis, s in enumerate(scales):
        mapping[axis, axis] = s
        mapping[axis, dims] = (net[axis] - 1.3) if s < 0 else 0.2
    return mapping


@pytest.mark.parametrize("chunk", [1, 1 << 21], ids=["two-planes-at-a-time", "one-chunk"])
@pytest.mark.parametrize("scales", list(itertools.product([-1.9, 0.45], [1.3, -0.6], [0.7, -0.35, 2.6])))
def test_planes_equal_slabs_for_flips_zoom_and_skipped_planes(scales, chunk, monkeypatch) -> None:
    """Up- and down-sampling (2.6: network planes skipped), flipped axes, the smallest plane cache."""
    monkeypatch.setattr(interpolate, "SLAB_VOXELS", chunk)
    values = torch.randn(3, 31, 22, 13, generator=torch.Generator().manual_seed(0))
    mapping = _axis_aligned(scales, tuple(values.shape[1:]))
    shape = (17, 18, 19)
    torch.testing.assert_close(_planes(values, mapping, shape), _slabs(values, mapping, shape), atol=1e-6, rtol=1e-6)


def test_planes_follow_permuted_axes_and_2d() -> None:
    values = torch.randn(2, 31, 22, 13, generator=torch.Generator().manual_seed(1))
    permuted = np.array([[0, 0.5, 0, 1.0], [-0.7, 0, 0, 20.0], [0, 0, 1.2, 0.3], [0, 0, 0, 1]])
    torch.testing.assert_close(_planes(values, permuted, (40, 30, 10)), _slabs(values, permuted, (40, 30, 10)))
    flat = values[:, :, :, 0]
    mapping = np.array([[-0.4, 0, 30.0], [0, 0.8, 0.5], [0, 0, 1]])
    torch.testing.assert_close(_planes(flat, mapping, (70, 25)), _slabs(flat, mapping, (70, 25)))


def test_oblique_mappings_fall_back_to_the_sampling_grid() -> None:
    values = torch.randn(1, 12, 11, 10, generator=torch.Generator().manual_seed(2))
    angle = 0.3
    mapping = np.eye(4)
    mapping[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert interpolate.separable(mapping) is None
    torch.testing.assert_close(_planes(values, mapping, (9, 9, 8)), _slabs(values, mapping, (9, 9, 8)))


def test_map_back_writes_fortran_ordered_labels_and_probabilities() -> None:
    """Labels and each class's probabilities come back first-axis-fastest (NIfTI's order), equal to
    the argmax and softmax of the slab route's interpolated logits."""
    logits = torch.randn(3, 16, 14, 9, generator=torch.Generator().manual_seed(3))
    net_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    orig_affine = np.diag([-1.0, 1.0, 1.5, 1.0])
    orig_affine[0, 3] = 30.0
    shape = (32, 28, 18)
    mapping = np.linalg.solve(net_affine, orig_affine)
    expected = _slabs(logits[1:] - logits[:1], mapping, shape)
    full = torch.cat([torch.zeros_like(expected[:1]), expected])
    labels, prob = to_original(logits.clone(), net_affine, orig_affine, shape, resampled=True, probabilities=True)
    assert labels.flags.f_contiguous and labels.dtype == np.uint8
    assert prob is not None and prob[1].flags.f_contiguous and prob.shape == (3, *shape)
    np.testing.assert_array_equal(labels, full.argmax(0).numpy())
    np.testing.assert_allclose(prob, torch.softmax(full, 0).numpy(), atol=1e-6)


def test_empty_fortran_strides() -> None:
    volume = empty_fortran((4, 5, 6), torch.uint8)
    assert volume.shape == (4, 5, 6) and volume.stride() == (1, 4, 20)
    maps = empty_fortran((2, 4, 5, 6), torch.float32, channels=True)
    assert maps.shape == (2, 4, 5, 6) and maps.stride() == (120, 1, 4, 20)
