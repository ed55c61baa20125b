"""SeparableSpacingd gives MONAI's Spacingd's values, grid, affine and inverse, by axis or by MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd, Spacingd

import medseg.data.spacing as spacing_module
from medseg.data.spacing import SeparableSpacingd


def _case(shape: tuple[int, ...], affine: np.ndarray, channels: int = 2) -> dict[str, MetaTensor]:
    rng = np.random.default_rng(0)
    image = MetaTensor(torch.as_tensor(rng.normal(size=(channels, *shape)), dtype=torch.float32),
                       affine=torch.as_tensor(affine))  # fmt: skip
    label = MetaTensor(torch.as_tensor(rng.integers(0, 3, (1, *shape)), dtype=torch.float32),
                       affine=torch.as_tensor(affine))  # fmt: skip
    return {"image": image, "label": label}


def _lps(spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS storage, as scanners write
    affine[:3, 3] = (31.0, -12.5, 7.25)
    return affine


def _oblique() -> np.ndarray:
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 0.7, 2.5])
    return affine


def _pipelines(cls: type, pixdim: list[float]) -> Compose:
    return Compose([Orientationd(["image", "label"], axcodes="RAS", labels=None),
                    cls(["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest"), dtype=np.float32)])  # fmt: skip


def _count_resamplings(monkeypatch) -> list[int]:
    """A list that gains an entry each time SeparableSpacingd resamples by axis."""
    calls: list[int] = []
    original = spacing_module.resample_slabs

    def counted(*args, **kwargs):
        calls.append(1)
        yield from original(*args, **kwargs)

    monkeypatch.setattr(spacing_module, "resample_slabs", counted)
    return calls


@pytest.mark.parametrize(
    ("shape", "affine", "pixdim", "fast"),
    [((23, 17, 9), _lps((0.8, 0.8, 1.5)), [1.6, 1.6, 3.0], True),  # downsampling, flipped axes
     ((12, 10, 5), _lps((1.0, 0.9, 4.0)), [0.55, 0.7, 1.3], True),  # upsampling, anisotropic
     ((11, 13, 6), _oblique(), [1.1, 1.1, 2.0], True)],  # oblique: the step keeps the direction
    ids=["down", "up", "oblique"],
)  # fmt: skip
def test_values_grid_affine_and_inverse_equal_monai(shape, affine, pixdim, fast, monkeypatch) -> None:
    calls = _count_resamplings(monkeypatch)
    monai, ours = _pipelines(Spacingd, pixdim), _pipelines(SeparableSpacingd, pixdim)
    expected, got = monai(_case(shape, affine)), ours(_case(shape, affine))
    assert bool(calls) == fast  # the image by axis; the labels (nearest) always by MONAI
    for key in ("image", "label"):
        assert got[key].shape == expected[key].shape
        np.testing.assert_allclose(got[key].affine.numpy(), expected[key].affine.numpy(), atol=1e-9)
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-5)
        assert [op["class"] for op in got[key].applied_operations] == [op["class"] for op in expected[key].applied_operations]
    inverted = ours.inverse(got)  # Invertd's route back to the input grid still works
    assert tuple(inverted["image"].shape[1:]) == shape
    np.testing.assert_allclose(inverted["image"].affine.numpy(), affine, atol=1e-6)


def _fortran_case(shape: tuple[int, ...], affine: np.ndarray) -> dict[str, MetaTensor]:
    """One channel stored x fastest, as a NIfTI's array comes from nibabel (no C-ordered copy)."""
    data = np.asfortranarray(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    return {"image": MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(affine))}


def _sagittal() -> np.ndarray:
    """Axes stored as (A→P, I→S, R→L)-like: orientation permutes them as well as flipping."""
    return np.array([[0, 0, -1.2, 40.0], [-0.7, 0, 0, 3.0], [0, 2.5, 0, -9.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [_lps((0.8, 0.8, 1.5)), np.diag([0.8, 0.8, 1.5, 1.0]), _sagittal()],
                         ids=["lps", "ras", "permuted"])
def test_lazy_orientation_is_resampled_with_the_spacing_step(affine, monkeypatch) -> None:
    """medseg's pipeline (lazy orientation, one resampling, x-fastest input) equals MONAI's eager one."""
    shape, pixdim = (23, 17, 9), [1.6, 1.6, 3.0]
    calls = _count_resamplings(monkeypatch)
    monai = Compose([Orientationd("image", axcodes="RAS", labels=None), Spacingd("image", pixdim=pixdim)])
    ours = Compose([Orientationd("image", axcodes="RAS", labels=None, lazy=True),
                    SeparableSpacingd("image", pixdim=pixdim, dtype=np.float32)], lazy=None)  # fmt: skip
    expected, got = monai(_fortran_case(shape, affine)), ours(_fortran_case(shape, affine))
    assert calls == [1]  # orientation and spacing in one pass, by axis
    np.testing.assert_allclose(got["image"].affine.numpy(), expected["image"].affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(got["image"].numpy(), expected["image"].numpy(), atol=1e-5)
    classes = [op["class"] for op in got["image"].applied_operations]
    assert classes == [op["class"] for op in expected["image"].applied_operations] and classes[0] == "Orientation"
    inverted = ours.inverse(got)
    assert tuple(inverted["image"].shape[1:]) == shape
    np.testing.assert_allclose(inverted["image"].affine.numpy(), affine, atol=1e-6)


def test_resampling_reads_either_memory_order_alike() -> None:
    """The x-fastest route (planes first) gives the C-ordered route's values."""
    from medseg.data.interpolate import resample_slabs

    values = torch.randn(2, 31, 22, 13)
    mapping = np.array([[-1.9, 0, 0, 30.0], [0, 1.3, 0, 0.2], [0, 0, 0.7, 0.1], [0, 0, 0, 1]])
    out_shape = (17, 18, 19)
    fortran = values.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)
    assert fortran.stride()[1] == 1
    results = []
    for source in (values, fortran):
        out = torch.empty((2, *out_shape))
        for index, slab in resample_slabs(source, mapping, out_shape):
            out[(slice(None), *index)] = slab
        results.append(out)
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("order", ["F", "C"], ids=["x-fastest", "c-ordered"])
@pytest.mark.parametrize("affine", [_lps((0.8, 0.8, 1.5)), _sagittal(), _oblique()], ids=["lps", "permuted", "oblique"])
def test_an_int16_image_is_resampled_as_its_float32_copy(affine, order) -> None:
    """No float copy first: an integer CT is cast as it is resampled, to the values of a float32 input."""
    shape, pixdim = (23, 17, 9), [1.6, 1.6, 3.0]
    hu = np.random.default_rng(2).integers(-1024, 3000, shape).astype(np.int16)
    ours = Compose([Orientationd("image", axcodes="RAS", labels=None, lazy=True),
                    SeparableSpacingd("image", pixdim=pixdim, dtype=np.float32)], lazy=None)  # fmt: skip

    def case(array: np.ndarray) -> dict[str, MetaTensor]:
        data = np.asfortranarray(array) if order == "F" else np.ascontiguousarray(array)
        return {"image": MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(affine))}

    got, expected = ours(case(hu))["image"], ours(case(hu.astype(np.float32)))["image"]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-3)
    np.testing.assert_allclose(got.affine.numpy(), expected.affine.numpy())
