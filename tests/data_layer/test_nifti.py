"""medseg.data.nifti: the ISA-L gzip path reads exactly what nibabel reads."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from monai.data import NibabelReader

from medseg.data import io, nifti, readers


def _write(path, klass, slope: float = 1.0) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, (9, 8, 7)).astype(np.int16)
    affine = np.array([[-0.8, 0.1, 0, 10], [0, 0.8, 0.05, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    img = klass(data, affine)
    img.header.set_slope_inter(slope, 3.0 if slope != 1.0 else 0.0)
    nib.save(img, str(path))


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_gz_reads_as_nibabel_does(tmp_path, klass, slope) -> None:
    path = tmp_path / "case.nii.gz"
    _write(path, klass, slope)
    ours_reader, theirs_reader = nifti.NiftiReader(), NibabelReader()
    ours, our_meta = ours_reader.get_data(ours_reader.read(path))
    theirs, their_meta = theirs_reader.get_data(theirs_reader.read(str(path)))
    np.testing.assert_array_equal(ours, theirs)
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(our_meta["affine"], their_meta["affine"])


@pytest.mark.parametrize("case", ["int16", "big_endian_float", "4d_uint8", "extension", "nifti2"])
def test_unscaled_gz_voxels_are_read_as_nibabel_reads_them(tmp_path, monkeypatch, case) -> None:
    """The threaded ISA-L read of the voxels (offset, dtype, byte order, rank, extensions) is nibabel's."""
    pytest.importorskip("isal")
    rng = np.random.default_rng(2)
    shape, dtype = {"4d_uint8": ((6, 5, 4, 3), np.uint8), "big_endian_float": ((7, 6, 5), np.dtype(">f4"))}.get(
        case, ((9, 8, 7), np.int16))
    data = (rng.standard_normal(shape) * 300).astype(dtype)
    img = (nib.Nifti2Image if case == "nifti2" else nib.Nifti1Image)(data, np.diag([0.7, 0.8, 2.0, 1.0]))
    if case == "extension":  # the voxels start after the extension, not at byte 352
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 1000))
    path = tmp_path / f"{case}.nii.gz"
    nib.save(img, str(path))
    original, calls = nifti.read_gz_voxels, []

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(nifti, "read_gz_voxels", spy)
    reader = nifti.NiftiReader()
    ours, _ = reader.get_data(reader.read(path))
    theirs = np.asanyarray(nib.load(str(path)).dataobj)
    assert len(calls) == 1  # the fast path, not nibabel's
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_truncated_gz_voxels_are_one_line_naming_the_file(tmp_path) -> None:
    pytest.importorskip("isal")
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.int16), np.eye(4)), str(path))

    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[: len(payload) // 2]))  # a complete gzip stream, half the voxels
    with pytest.raises(io.MedsegError, match=r"cut\.nii\.gz: the file ends after .* \(truncated\)"):
        io.read_image(path)


def test_isal_is_used_when_installed() -> None:
    pytest.importorskip("isal")
    assert nifti.igzip is not None


def test_a_gz_that_is_not_gzip_is_one_line(tmp_path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a gzip stream at all")
    with pytest.raises(io.MedsegError, match=r"broken\.nii\.gz: cannot read it"):
        io.read_image(bad)


def test_c_order_copy_equals_numpy_for_every_rank() -> None:
    rng = np.random.default_rng(1)
    for shape in [(5, 4), (5, 4, 3), (5, 4, 3, 2)]:
        array = np.asfortranarray(rng.integers(0, 100, shape).astype(np.int16))
        out = readers.as_c_order(array)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, array)


def test_fortran_order_copy_equals_numpy_for_every_rank() -> None:
    rng = np.random.default_rng(2)
    for shape in [(5, 4, 3), (70, 4, 3), (33, 4, 3, 2)]:  # more than one block of 32 along the first axis
        array = rng.integers(0, 100, shape).astype(np.uint8)
        out = readers.as_fortran_order(array)
        assert out.flags.f_contiguous
        np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_save_nifti_writes_the_bytes_nibabel_writes(tmp_path, klass) -> None:
    """ISA-L compresses a different stream; decompressed it is nibabel's file, and SimpleITK reads it."""
    import gzip

    import SimpleITK as sitk

    labels = np.asfortranarray(np.random.default_rng(1).integers(0, 4, (12, 10, 7)).astype(np.uint8))
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    img = klass(labels, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    ours, theirs = tmp_path / "ours.nii.gz", tmp_path / "theirs.nii.gz"
    nifti.save_nifti(img, ours)
    nib.save(img, str(theirs))
    with gzip.open(ours) as a, gzip.open(theirs) as b:
        assert a.read() == b.read()
    if klass is nib.Nifti1Image:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(ours)))
        np.testing.assert_array_equal(array.transpose(2, 1, 0), labels)
