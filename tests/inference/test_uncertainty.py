"""Uncertainty maps and scores (medseg.inference.uncertainty) and continuous maps back to the input grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.inference.resample import values_to_original
from medseg.inference.uncertainty import UNCERTAIN, Accumulator, case_score, entropy, structure_uncertainty


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), 0)
    return -(p * p.clamp_min(1e-300).log()).sum(0) / math.log(logits.shape[0])


def test_entropy_of_known_distributions() -> None:
    p = torch.tensor([[0.5, 1.0, 0.25], [0.5, 0.0, 0.75]])
    expected = [math.log(2), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    np.testing.assert_allclose(entropy(p).numpy(), expected, atol=1e-6)


def test_one_pass_gives_only_its_normalised_entropy() -> None:
    torch.manual_seed(0)
    logits = 3 * torch.randn(4, 6, 5, 3)
    acc = Accumulator(track_entropy=True)
    acc.add(logits.clone())
    maps = acc.maps()
    assert maps.shape == (1, 6, 5, 3)
    np.testing.assert_allclose(maps[0].numpy(), normalised_entropy(logits).numpy(), atol=1e-5)


@pytest.mark.parametrize("passes", [2, 5])
def test_identical_passes_give_no_disagreement_and_the_single_pass_entropy(passes: int) -> None:
    torch.manual_seed(1)
    logits = 4 * torch.randn(3, 7, 6)
    acc = Accumulator(track_entropy=True)
    for _ in range(passes):
        acc.add(logits.clone())
    assert acc.passes == passes
    maps = acc.maps()
    assert maps.shape == (2, 7, 6)
    np.testing.assert_allclose(maps[0].numpy(), normalised_entropy(logits).numpy(), atol=1e-5)
    np.testing.assert_allclose(maps[1].numpy(), 0.0, atol=1e-5)
    # the mean's log scores like the pass itself: same argmax, same softmax
    np.testing.assert_allclose(torch.softmax(acc.log_mean(), 0).numpy(), torch.softmax(logits, 0).numpy(), atol=1e-5)


def test_two_confident_passes_that_disagree_give_high_disagreement() -> None:
    sure_one = torch.tensor([12.0, -12.0])[:, None, None].expand(2, 3, 4).clone()
    sure_other = -sure_one
    acc = Accumulator(track_entropy=True)
    acc.add(sure_one)
    acc.add(sure_other)
    entropy_map, disagreement = acc.maps()
    assert (entropy_map > 0.99).all() and (entropy_map <= 1.0 + 1e-6).all()  # the mean is 50:50
    assert (disagreement > 0.99).all()  # and all of it is disagreement: each pass was sure

    # two passes that agree on being unsure: as uncertain, but no disagreement
    unsure = Accumulator(track_entropy=True)
    unsure.add(torch.zeros(2, 3, 4))
    unsure.add(torch.zeros(2, 3, 4))
    entropy_map, disagreement = unsure.maps()
    np.testing.assert_allclose(entropy_map.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(disagreement.numpy(), 0.0, atol=1e-6)


def test_accumulated_mean_is_the_mean_of_the_passes_probabilities() -> None:
    torch.manual_seed(2)
    passes = [2 * torch.randn(3, 5, 5) for _ in range(4)]
    acc = Accumulator(track_entropy=False)
    for logits in passes:
        acc.add(logits.clone())
    mean = torch.stack([torch.softmax(p, 0) for p in passes]).mean(0)
    np.testing.assert_allclose(torch.softmax(acc.log_mean(), 0).numpy(), mean.numpy(), atol=1e-6)
    with pytest.raises(AssertionError):
        acc.maps()  # built without entropies


@pytest.mark.parametrize("classes", [2, 5])
def test_maps_lie_in_zero_one(classes: int) -> None:
    torch.manual_seed(classes)
    acc = Accumulator(track_entropy=True)
    for scale in (0.01, 1.0, 30.0):  # near-uniform, moderate and saturated passes
        acc.add(scale * torch.randn(classes, 9, 8, 4))
    maps = acc.maps()
    assert maps.shape == (2, 9, 8, 4) and torch.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    assert (maps[1] <= maps[0] + 1e-6).all()  # mutual information never exceeds the total entropy
    assert maps[0].max() > 0.5 and maps[1].max() > 0.1  # and neither is trivially zero

    uniform = Accumulator(track_entropy=True)
    uniform.add(torch.zeros(classes, 2, 2))
    np.testing.assert_allclose(uniform.maps()[0].numpy(), 1.0, atol=1e-6)  # the maximum is exactly 1


def square_labels() -> np.ndarray:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[3:7, 3:7] = 1
    return labels


def layered_entropy() -> np.ndarray:
    """0 in the square's 2×2 core, 0.6 on its 12 edge voxels and on the 16 voxels just outside
    (4-connected), 1 elsewhere (the dilation's corners included)."""
    e = np.ones((10, 10))
    e[2:8, 3:7] = 0.6
    e[3:7, 2:8] = 0.6
    e[4:6, 4:6] = 0.0
    return e


def test_case_score_is_the_mean_on_the_predicted_border() -> None:
    """The border: one voxel inside the surface and one outside (4-connected); the core and the far
    background do not count."""
    labels = square_labels()
    e = np.full((10, 10), 0.9)  # far background, the dilation's corners included
    e[3:7, 3:7] = 0.2  # the 12 edge voxels of the square ...
    e[4:6, 4:6] = 0.0  # ... around its 2×2 core
    e[2, 3:7] = e[7, 3:7] = e[3:7, 2] = e[3:7, 7] = 0.5  # the 16 voxels just outside
    assert case_score(labels, e) == pytest.approx((12 * 0.2 + 16 * 0.5) / 28)
    assert case_score(labels, layered_entropy()) == pytest.approx(0.6)
    # nothing predicted: the whole image's mean
    rng = np.random.default_rng(0)
    r = rng.random((10, 10))
    assert case_score(np.zeros((10, 10), dtype=np.uint8), r) == pytest.approx(r.mean())


def test_case_score_counts_every_class_as_foreground() -> None:
    labels = square_labels()
    labels[5:7, 3:7] = 2
    assert case_score(labels, layered_entropy()) == pytest.approx(case_score(square_labels(), layered_entropy()))


def test_structure_uncertainty_of_hand_made_maps() -> None:
    labels = square_labels()
    scores = structure_uncertainty(labels, layered_entropy(), {0: "background", 1: "organ", 2: "absent"})
    assert set(scores) == {1, 2}
    organ = scores[1]
    assert organ["entropy_mean"] == pytest.approx((4 * 0.0 + 12 * 0.6) / 16)
    assert organ["entropy_border"] == pytest.approx(0.6)  # 12 inner edge + 16 outer voxels, all 0.6
    assert UNCERTAIN < 0.6
    assert organ["uncertain_fraction"] == pytest.approx(12 / 16)
    assert all(math.isnan(v) for v in scores[2].values())


def test_structure_uncertainty_in_3d() -> None:
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 3
    e = np.where(labels == 3, 0.2, 0.8)
    out = structure_uncertainty(labels, e, {0: "bg", 3: "kidney"})[3]
    assert out["entropy_mean"] == pytest.approx(0.2) and out["uncertain_fraction"] == 0.0
    # border: 64 - 8 (core) = 56 inner voxels at 0.2, 6 faces × 16 outer voxels at 0.8
    assert out["entropy_border"] == pytest.approx((56 * 0.2 + 96 * 0.8) / 152)


# -- values_to_original ----------------------------------------------------------------------------
def test_reorder_only_mapping_is_a_permutation_and_flip() -> None:
    """Original (i, j, k) is network (j, 3 − i, k): a transpose of the first two axes and a flip."""
    orig_shape = (4, 5, 6)
    mapping = np.array([[0, 1, 0, 0], [-1, 0, 0, 3], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    orig_affine = np.diag([0.8, 1.2, 2.5, 1.0])
    orig_affine[:3, 3] = [10.0, -4.0, 7.0]
    net_affine = orig_affine @ np.linalg.inv(mapping)
    torch.manual_seed(0)
    net = torch.rand(2, 5, 4, 6)
    out = values_to_original(net, net_affine, orig_affine, orig_shape, resampled=True)
    assert out.shape == (2, *orig_shape) and out.dtype == np.float32
    expected = np.flip(net.numpy().transpose(0, 2, 1, 3), axis=1)
    np.testing.assert_array_equal(out, expected)
    i, j, k = 1, 3, 2
    assert out[1, i, j, k] == net[1, j, 3 - i, k]


def test_no_resampling_is_the_identity() -> None:
    net = torch.rand(1, 3, 4, 5)
    out = values_to_original(net, np.eye(4), np.eye(4), (3, 4, 5), resampled=False)
    np.testing.assert_array_equal(out, net.numpy())


def _scaled_mapping() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Original index -> network index: scaled and shifted per axis, with the first two axes swapped."""
    mapping = np.array([[0, 0.6, 0, 0.3], [0.5, 0, 0, 0.2], [0, 0, 1.5, 0.1], [0, 0, 0, 1]], dtype=np.float64)
    orig_affine = np.diag([1.0, 1.5, 0.7, 1.0])
    net_affine = orig_affine @ np.linalg.inv(mapping)
    return mapping, net_affine, orig_affine


def _rotated_mapping() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = 0.3
    mapping = np.eye(4)
    mapping[:2, :2] = 0.5 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    mapping[:3, 3] = [2.0, 1.0, 0.5]
    mapping[2, 2] = 0.8
    orig_affine = np.diag([1.0, 1.0, 2.0, 1.0])
    return mapping, orig_affine @ np.linalg.inv(mapping), orig_affine


@pytest.mark.parametrize("make", [_scaled_mapping, _rotated_mapping], ids=["axis-aligned", "oblique"])
def test_a_resampled_constant_map_stays_constant(make) -> None:
    _, net_affine, orig_affine = make()
    net = torch.full((2, 9, 8, 7), 0.37)
    net[1] = 0.81
    out = values_to_original(net, net_affine, orig_affine, (11, 12, 5), resampled=True)
    assert out.shape == (2, 11, 12, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 0.37, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.81, atol=1e-6)


@pytest.mark.parametrize("make", [_scaled_mapping, _rotated_mapping], ids=["axis-aligned", "oblique"])
def test_a_resampled_linear_ramp_is_interpolated_exactly(make, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linear interpolation of a map linear in the network index gives that function at the mapped
    point (inside the network grid), however the slabs are cut."""
    import medseg.data.interpolate as interpolate

    monkeypatch.setattr(interpolate, "SLAB_VOXELS", 100)  # several slabs
    mapping, net_affine, orig_affine = make()
    net_shape, orig_shape = (12, 10, 9), (9, 8, 5)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in net_shape], indexing="ij")
    ramp = 0.05 * grid[0] - 0.03 * grid[1] + 0.02 * grid[2]
    out = values_to_original(torch.from_numpy(ramp).float()[None], net_affine, orig_affine, orig_shape, resampled=True)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in orig_shape], indexing="ij"), -1)
    points = idx @ mapping[:3, :3].T + mapping[:3, 3]
    inside = np.all((points >= 0) & (points <= np.array(net_shape) - 1), axis=-1)
    assert inside.mean() > 0.5
    expected = 0.05 * points[..., 0] - 0.03 * points[..., 1] + 0.02 * points[..., 2]
    np.testing.assert_allclose(out[0][inside], expected[inside], atol=1e-5)
