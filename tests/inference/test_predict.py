"""Predictor: preprocessing from the run, sliding window, and the exact way back to the input's grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import ellipsoid_case, make_run, oblique_affine, write_nifti
from monai.data import MetaTensor
from monai.transforms import Invertd, KeepLargestConnectedComponent

import medseg.data.interpolate as interpolate
import medseg.inference.resample as resample
from medseg.data import io, transforms
from medseg.errors import MedsegError
from medseg.inference import Predictor, keep_largest_components


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def label_round_trip(image, label, spacing):
    """The label through the run's forward preprocessing and back (nearest both ways), as MONAI does it."""
    pipeline = transforms.build_transforms("val", preset="ct", spatial_dims=3, patch_size=[16, 16, 16], spacing=spacing)
    data = pipeline({"image": str(image), "label": str(label)})
    back = Invertd(keys="label", transform=pipeline, orig_keys="label", nearest_interp=True)(data)
    return back["label"][0].numpy()


@pytest.fixture
def oblique_case(tmp_path):
    image, label = ellipsoid_case((64, 64, 16), radii_mm=(16.0, 14.0, 28.0))
    affine = oblique_affine()
    return (write_nifti(tmp_path / "scan.nii.gz", image, affine),
            write_nifti(tmp_path / "truth.nii.gz", label, affine), label)


def test_prediction_of_a_known_label_maps_back_to_the_original_grid(tmp_path, threshold_model, oblique_case):
    image, truth, label = oblique_case
    spacing = [0.8, 0.8, 2.0]  # resampled on every axis: finer along z, coarser in plane
    run = make_run(tmp_path / "run", threshold_model(), spacing=spacing)
    result = Predictor(run, precision="fp32").predict(image)

    assert result.labels.shape == label.shape and result.labels.dtype == np.uint8
    # the issue asks for Dice >= 0.99 against the label sent through the preprocessing and back; the
    # prediction is closer to the untouched label than that round trip (nearest both ways) is
    assert dice(result.labels, label) >= 0.99
    assert dice(result.labels, label) >= dice(label_round_trip(image, truth, spacing), label)
    header = io.read_header(image)
    assert result.meta.shape == header.shape
    np.testing.assert_allclose(result.meta.affine, header.affine, atol=1e-6)


@pytest.mark.parametrize("spacing", [None, [1.1, 0.9, 2.0]], ids=["orientation-only", "resampled"])
def test_way_back_equals_monai_invertd(tmp_path, oblique_case, spacing, monkeypatch):
    """Slab- and plane-wise linear mapping of logits equal MONAI's Invertd; orientation-only is an exact re-ordering."""
    image = oblique_case[0]
    pipeline = transforms.build_transforms("infer", preset="ct", spatial_dims=3, patch_size=[16] * 3,
                                           spacing=spacing, label=False)
    data = pipeline({"image": str(image)})
    net = data["image"]
    torch.manual_seed(0)
    logits = torch.randn(3, *net.shape[1:])
    net_affine = np.asarray(net.affine, dtype=np.float64)
    orig_affine = np.asarray(net.meta["original_affine"], dtype=np.float64)
    mapping = np.linalg.solve(net_affine, orig_affine)
    shape = io.read_header(image).shape
    data["pred"] = MetaTensor(logits, meta=net.meta, applied_operations=net.applied_operations)
    reference = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=spacing is None)(data)
    reference = reference["pred"].numpy()
    axes = resample._axis_map(mapping, tuple(logits.shape[1:]), shape)
    if spacing is None:
        assert axes is not None
        np.testing.assert_array_equal(resample._reorder(logits, axes, channel=True).numpy(), reference)
    else:
        assert axes is None
        monkeypatch.setattr(interpolate, "SLAB_VOXELS", 1500)  # several slabs
        assert interpolate.separable(mapping) is not None  # MONAI's steps are axis-aligned
        for separable in (True, False):  # one axis at a time, and the general grid_sample path
            if not separable:
                monkeypatch.setattr(interpolate, "separable", lambda mapping: None)
            out = np.full(reference.shape, np.nan, dtype=np.float32)
            for index, slab in interpolate.resample_slabs(logits, mapping, shape):
                out[(slice(None), *index)] = slab.numpy()
            np.testing.assert_allclose(out, reference, atol=1e-4)
            planes = np.full(reference.shape, np.nan, dtype=np.float32)  # the map back's plane-by-plane route
            for k, plane in interpolate.resample_planes(logits, mapping, shape):
                planes[..., k] = plane.numpy()
            np.testing.assert_allclose(planes, reference, atol=1e-4)


def test_array_input_equals_file_input(tmp_path, threshold_model, oblique_case):
    image, _, _ = oblique_case
    run = make_run(tmp_path / "run", threshold_model(), spacing=[1.0, 1.0, 2.5])
    predictor = Predictor(run, precision="fp32")
    from_file = predictor.predict(image)
    array, meta = io.read_image(image)
    from_array = predictor.predict(array, affine=meta.affine)
    np.testing.assert_array_equal(from_array.labels, from_file.labels)
    assert from_array.meta.shape == meta.shape
    np.testing.assert_allclose(from_array.meta.spacing, meta.spacing, atol=1e-6)
    np.testing.assert_allclose(from_array.meta.origin, meta.origin, atol=1e-6)
    np.testing.assert_allclose(from_array.meta.direction, meta.direction, atol=1e-6)
    out = io.write_like(from_array.labels, from_array.meta, tmp_path / "from_array.nrrd")
    assert sitk.ReadImage(str(out)).GetSize() == meta.shape


def test_tta_runs_every_flip_and_undoes_it(tmp_path, threshold_model, oblique_case):
    """A voxel-wise model gives the same labels with and without flip TTA only if every flip is undone."""
    image = oblique_case[0]
    run = make_run(tmp_path / "run", threshold_model(), spacing=[1.0, 1.0, 2.5], patch_size=[48, 48, 32])
    plain = Predictor(run, precision="fp32").predict(image)
    tta = Predictor(run, precision="fp32", tta=True)
    calls = []
    tta.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    flipped = tta.predict(image)
    np.testing.assert_array_equal(flipped.labels, plain.labels)
    assert len(calls) % 8 == 0 and len(calls) >= 8  # 2^3 flip combinations, each a full sliding window


def test_tta_averages_flipped_logits(tmp_path):
    run = make_run(tmp_path / "run", spacing=None)
    predictor = Predictor(run, precision="fp32", tta=True)
    torch.manual_seed(1)
    image = torch.rand(1, 20, 16, 12)
    expected = 0
    from monai.inferers import sliding_window_inference

    for dims in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]:
        x = torch.flip(image, dims)[None] if dims else image[None]
        with torch.no_grad():
            out = sliding_window_inference(x, [16, 16, 16], 4, predictor.model, overlap=0.5, mode="gaussian")[0]
        expected = expected + (torch.flip(out, dims) if dims else out) / 8
    with torch.no_grad():
        torch.testing.assert_close(predictor.logits(image), expected, atol=1e-5, rtol=1e-4)


def test_largest_component_equals_monai():
    rng = np.random.default_rng(3)
    labels = (rng.random((24, 20, 10)) > 0.7).astype(np.uint8) * rng.integers(1, 3, (24, 20, 10)).astype(np.uint8)
    expected = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=True)(torch.as_tensor(labels[None]))
    np.testing.assert_array_equal(keep_largest_components(labels.copy(), [1, 2]), expected[0].numpy())


def test_largest_component_and_probabilities(tmp_path, threshold_model):
    image = np.full((40, 36, 10), -50, dtype=np.int16)
    image[5:20, 5:20, 2:8] = 200  # the organ
    image[30:34, 28:32, 4:6] = 200  # a small false positive
    affine = oblique_affine(spacing=(0.9, 0.9, 3.0))
    path = write_nifti(tmp_path / "two.nii.gz", image, affine)
    run = make_run(tmp_path / "run", threshold_model(), spacing=[1.0, 1.0, 2.0])
    both = Predictor(run, precision="fp32").predict(path).labels
    assert both[31, 29, 4] == 1 and both[10, 10, 5] == 1
    predictor = Predictor(run, precision="fp32", largest_component=True, save_probabilities=True)
    result = predictor.predict(path)
    assert result.labels[31, 29, 4] == 0 and result.labels[10, 10, 5] == 1
    prob = result.probabilities
    assert prob.shape == (2, *image.shape) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prob.argmax(0).astype(np.uint8), both)
    out = predictor.predict_file(path, tmp_path / "two_seg.nii.gz")
    prob_file = tmp_path / "two_seg_prob_organ.nii.gz"
    written = sitk.ReadImage(str(prob_file))
    assert written.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(written.GetDirection(), sitk.ReadImage(str(out)).GetDirection(), atol=1e-6)


def test_2d_png_prediction_is_exact(tmp_path, threshold_model):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = (rng.random((37, 53)) * 255).astype(np.uint8)
    rows[0, 0], rows[-1, -1] = 0, 255  # min-max scaling maps the threshold 0.5 to 127.5
    Image.fromarray(rows).save(tmp_path / "cell.png")
    run = make_run(tmp_path / "run", threshold_model(2), spatial_dims=2, preset="gray2d", patch_size=[32, 32])
    predictor = Predictor(run, precision="fp32")
    result = predictor.predict(tmp_path / "cell.png")
    np.testing.assert_array_equal(result.labels, (rows.T > 127.5).astype(np.uint8))
    out = predictor.predict_file(tmp_path / "cell.png", tmp_path / "cell_seg.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), (rows > 127.5).astype(np.uint8))


def test_folder_with_bmp_and_png_predicts_each_once_as_png(tmp_path, threshold_model):
    from PIL import Image

    from medseg.inference import predict_many

    rng = np.random.default_rng(1)
    rows = (rng.random((30, 41)) * 255).astype(np.uint8)
    rows[0, 0], rows[-1, -1] = 0, 255
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rows).save(folder / "scan.bmp")
    Image.fromarray(rows).save(folder / "other.png")
    (folder / "other_seg.png").write_bytes(b"an earlier output, never an input")
    run = make_run(tmp_path / "run", threshold_model(2), spatial_dims=2, preset="gray2d", patch_size=[32, 32])
    report = predict_many(Predictor(run, precision="fp32"), [folder], tmp_path / "out")
    assert not report.failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other_seg.png", "scan_seg.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "scan_seg.png")), (rows > 127.5).astype(np.uint8))


def test_wrong_channels_and_corrupt_files_are_user_errors(tmp_path):
    run = make_run(tmp_path / "run", spacing=None)
    predictor = Predictor(run, precision="fp32")
    two = np.zeros((2, 12, 12, 8), dtype=np.float32)
    with pytest.raises(MedsegError, match="2 channel"):
        predictor.predict(two)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    with pytest.raises(MedsegError, match=r"broken\.nii\.gz"):
        predictor.predict(bad)
    with pytest.raises(MedsegError, match=r"no config\.yaml"):
        Predictor(tmp_path / "nowhere")


@pytest.mark.parametrize("classes", [1, 2, 5])
def test_argmax_matches_torch_with_ties(classes):
    scores = torch.randint(-2, 3, (classes, 7, 6, 5)).float()  # many ties: the first maximum wins
    np.testing.assert_array_equal(resample.argmax(scores).numpy(), scores.argmax(0).numpy())
    with_background = torch.cat([torch.zeros_like(scores[:1]), scores])
    np.testing.assert_array_equal(resample.argmax(scores, implicit_zero=True).numpy(),
                                  with_background.argmax(0).numpy())


def test_inputs_unlike_the_training_data_predict_with_one_warning_line_each(tmp_path, threshold_model):
    envelope = {"spacing_min": [0.7, 0.7, 5.0], "spacing_max": [0.7, 0.7, 5.0], "orientations": ["RAS"],
                "num_channels": 1, "intensity": [[-1000.0, 400.0]], "modalities": ["CT"]}
    run = make_run(tmp_path / "run", threshold_model(), spacing=None, envelope=envelope)
    predictor = Predictor(run, precision="fp32")
    image, _ = ellipsoid_case(spacing=(0.7, 0.7, 5.0))
    alike = write_nifti(tmp_path / "alike.nii.gz", image.astype(np.float32), np.diag([0.7, 0.7, 5.0, 1.0]))
    assert predictor.predict(alike).warnings == []
    unlike = write_nifti(tmp_path / "unlike.nii.gz", image.astype(np.float32) * 20 + 3000, np.diag([2.0, 2.0, 1.0, 1.0]))
    warnings = predictor.predict(unlike).warnings
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "spacing 2x2x1 mm is outside the training range 0.7x0.7x5" in warnings[0]
    assert "intensities" in warnings[1] and "outside the training range -1000 to 400" in warnings[1]
