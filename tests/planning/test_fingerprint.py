"""The fingerprint measures exactly what was drawn: geometry, crop boxes, classes, objects, intensities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medseg.planning import fingerprint
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.measure import sample_indices


def _stats_match(stats, values: np.ndarray) -> None:
    values = values.astype(np.float64)
    assert stats.num_samples == values.size
    assert stats.mean == pytest.approx(values.mean())
    assert stats.std == pytest.approx(values.std())
    assert stats.median == pytest.approx(np.median(values))
    assert (stats.min, stats.max) == (values.min(), values.max())
    assert stats.p00_5 == pytest.approx(np.percentile(values, 0.5))
    assert stats.p99_5 == pytest.approx(np.percentile(values, 99.5))


def test_gray2d_geometry_classes_objects_and_guessed_modality(gray2d):
    root, truth = gray2d
    fp = fingerprint(root)
    assert (fp.layout, fp.spatial_dims, fp.num_channels, fp.num_cases) == ("folder", 2, 1, 3)
    assert [c.shape for c in fp.cases] == truth["shapes"]
    assert [c.cropped_shape for c in fp.cases] == truth["cropped"]
    assert [c.crop_start for c in fp.cases] == truth["starts"]
    assert fp.median_spacing == (1.0, 1.0) and fp.median_shape == (40.0, 30.0)
    assert fp.median_cropped_shape == (28.0, 27.0)
    assert all(c.orientation == "" for c in fp.cases)  # PNG has no geometry
    by_value = {c.value: c for c in fp.classes}
    assert set(by_value) == {1, 2} and fp.labels == {0: "background", 1: "cell", 2: "debris"}
    for v in (1, 2):
        c = by_value[v]
        assert c.voxels == truth["voxels"][v]
        assert c.fraction == pytest.approx(truth["voxels"][v] / truth["total"])
        assert c.num_objects == len(truth["sizes"][v]) and c.num_cases == truth["cases"][v]
        assert c.smallest_object_voxels == min(truth["sizes"][v])
        assert c.median_object_voxels == np.median(truth["sizes"][v])
        assert c.smallest_object_mm == min(truth["sizes"][v])  # 1 mm² pixels
    assert fp.background_fraction == pytest.approx(1 - (55 + 11) / truth["total"])
    assert fp.size_unit == "mm²"
    _stats_match(fp.channels[0].foreground, truth["foreground"][0])
    assert fp.modalities == ["gray"] and fp.channels[0].modality_guessed
    (warning,) = fp.warnings
    assert "modality not declared" in warning and "guessed gray" in warning
    assert '"modality": {"0": "gray"}' in warning


def test_rgb2d_crop_box_is_the_union_of_the_channels(rgb2d):
    root, truth = rgb2d
    fp = fingerprint(root)
    assert fp.num_channels == 3 and all(c.num_channels == 3 for c in fp.cases)
    assert all(c.cropped_shape == truth["cropped"] and c.crop_start == truth["start"] for c in fp.cases)
    assert fp.modalities == ["rgb", "rgb", "rgb"] and "2D image with 3 channels" in fp.warnings[0]
    for c in range(3):
        _stats_match(fp.channels[c].foreground, truth["foreground"][c])
    assert fp.channels[1].foreground.max == 0.0


def test_ct3d_anisotropic_oblique_volumes(ct3d):
    root, truth = ct3d
    fp = fingerprint(root)
    assert fp.spatial_dims == 3 and fp.name == "toy-ct"
    np.testing.assert_allclose([c.spacing for c in fp.cases], truth["spacings"], rtol=1e-6)
    np.testing.assert_allclose(fp.median_spacing, (0.8, 0.8, 3.0), rtol=1e-6)
    np.testing.assert_allclose(fp.spacing_p10, np.percentile(truth["spacings"], 10, axis=0), rtol=1e-6)
    np.testing.assert_allclose(fp.min_spacing, (0.8, 0.8, 2.5), rtol=1e-6)
    assert [c.shape for c in fp.cases] == truth["shapes"] and fp.median_shape == (20.0, 18.0, 8.0)
    assert [c.cropped_shape for c in fp.cases] == truth["cropped"]
    assert [c.orientation for c in fp.cases] == truth["orientations"]
    assert all(c.dtype == "int16" for c in fp.cases)
    organ, lesion = fp.classes
    sizes = [s for case in truth["sizes"][1] for s in case]
    mm3 = [s * v for case, v in zip(truth["sizes"][1], truth["voxel_mm3"]) for s in case]
    assert (organ.num_objects, organ.num_cases, organ.smallest_object_voxels) == (4, 3, 6)
    assert organ.median_object_voxels == np.median(sizes) == 17.5
    assert organ.smallest_object_mm == pytest.approx(min(mm3)) and organ.smallest_object_mm == pytest.approx(6 * 1.92)
    assert organ.median_object_mm == pytest.approx(np.median(mm3))
    assert (lesion.num_objects, lesion.num_cases, lesion.median_object_voxels) == (1, 1, 8.0)
    assert lesion.median_object_mm == pytest.approx(8 * 1.6) and fp.size_unit == "mm³"
    _stats_match(fp.channels[0].foreground, truth["foreground"][0])
    channel = fp.channels[0]
    assert (channel.image_min, channel.image_max, channel.whole_numbers) == (-1000.0, 300.0, True)
    assert channel.modality == "CT" and channel.modality_guessed
    (warning,) = fp.warnings
    assert "guessed CT" in warning and "Hounsfield" in warning and '"modality": {"0": "CT"}' in warning


def test_nnunet_two_channels_declared_modalities(nnunet2ch):
    root, truth = nnunet2ch
    fp = fingerprint(root)
    assert fp.layout == "nnunet" and fp.num_channels == 2 and fp.modalities == ["T1", "T2"]
    assert not fp.modality_guessed and fp.warnings == ()
    assert fp.labels == {0: "background", 1: "tumour"}
    for c in range(2):
        _stats_match(fp.channels[c].foreground, truth["foreground"][c])
        assert not fp.channels[c].whole_numbers
    assert fp.classes[0].num_objects == 2 and fp.classes[0].smallest_object_mm == pytest.approx(4 * 4 * 3 * 1.5)


def test_sampling_is_bounded_seeded_and_inside_the_mask(ct3d):
    root, _ = ct3d
    small = fingerprint(root, max_voxels_per_case=5, seed=1, cache=False)
    assert small.channels[0].foreground.num_samples == 15 and small.max_voxels_per_case == 5
    assert fingerprint(root, max_voxels_per_case=5, seed=1, cache=False) == small
    mask = np.zeros((30, 7, 5), bool)
    mask[3:25, 2:6, 1:4] = True
    mask[10, 0, 0] = True
    for k in (1, 50, mask.sum() - 1):
        where = sample_indices(mask, int(k), np.random.default_rng(0))
        flat = np.ravel_multi_index(where, mask.shape)
        assert len(np.unique(flat)) == k and mask[where].all()
    assert len(sample_indices(mask, 10**6, np.random.default_rng(0))[0]) == mask.sum()


def test_json_and_yaml_round_trip(ct3d):
    fp = fingerprint(ct3d[0])
    data = json.loads(json.dumps(fp.to_dict(), allow_nan=False))
    assert Fingerprint.from_dict(data) == fp
    assert Fingerprint.from_dict(yaml.safe_load(yaml.safe_dump(fp.to_dict(), allow_unicode=True))) == fp
    assert data["summary"]["median_shape"] == [20.0, 18.0, 8.0] and data["labels"]["1"] == "organ"


def test_empty_class_has_no_object_sizes(gray2d):
    root, _ = gray2d
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["3"] = "ghost"
    (root / "dataset.json").write_text(json.dumps(meta))
    ghost = fingerprint(root).classes[-1]
    assert (ghost.value, ghost.voxels, ghost.num_objects, ghost.smallest_object_voxels) == (3, 0, 0, None)
