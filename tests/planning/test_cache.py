"""The fingerprint and the check are cached under one file key: hits read no voxels, any change recomputes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medseg.data import io
from medseg.errors import MedsegError
from medseg.planning import analyse, cache, fingerprint


def _no_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("read_image called on a cache hit")

    for module in ("medseg.data.check", "medseg.data.io", "medseg.data.datasets"):
        monkeypatch.setattr(f"{module}.read_image", refuse)


def _touch(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_second_call_reads_no_voxels(ct3d, monkeypatch):
    root, _ = ct3d
    first = analyse(root)
    assert not first.cached and (root / ".medseg" / "fingerprint.json").is_file()
    stored = json.loads((root / ".medseg" / "fingerprint.json").read_text())
    assert stored["key"] == first.fingerprint.key and set(stored) >= {"format", "fingerprint", "check"}
    _no_reading(monkeypatch)
    second = analyse(root)
    assert second.cached and second.fingerprint == first.fingerprint and second.check == first.check
    assert fingerprint(root) == first.fingerprint


def test_touching_or_changing_a_file_recomputes(ct3d):
    root, _ = ct3d
    first = analyse(root)
    _touch(root / "imagesTr" / "ct_1.nii.gz")
    touched = analyse(root)
    assert not touched.cached and touched.fingerprint.key != first.fingerprint.key
    label, meta = io.read_image(root / "labelsTr" / "ct_2.nii.gz")
    label[label == 2] = 1  # the lesion becomes organ
    io.write_like(label, meta, root / "labelsTr" / "ct_2.nii.gz")
    changed = analyse(root)
    assert not changed.cached and changed.fingerprint.classes[1].num_objects == 0
    assert analyse(root).cached


def test_parameters_are_part_of_the_key(ct3d):
    root, _ = ct3d
    assert not analyse(root).cached
    assert not analyse(root, seed=3).cached and not analyse(root, max_voxels_per_case=7).cached
    assert analyse(root, max_voxels_per_case=7).cached
    assert not analyse(root, cache=False).cached


def test_read_only_dataset_falls_back_to_the_user_cache(ct3d, monkeypatch, _user_cache):
    root, _ = ct3d
    real = cache.atomic_write_json

    def read_only(path, obj):
        if root in path.parents:
            raise PermissionError(13, "Read-only file system", str(path))
        real(path, obj)

    monkeypatch.setattr(cache, "atomic_write_json", read_only)
    first = analyse(root)
    assert not (root / ".medseg").exists()
    (stored,) = (_user_cache / "fingerprints").glob("*.json")
    assert json.loads(stored.read_text())["key"] == first.fingerprint.key
    assert analyse(root).cached


def test_cached_check_still_stops_training_and_applies_allow_empty(ct3d):
    root, _ = ct3d
    label, meta = io.read_image(root / "labelsTr" / "ct_1.nii.gz")
    label[0, 0, 0] = 7
    io.write_like(label, meta, root / "labelsTr" / "ct_1.nii.gz")
    other, other_meta = io.read_image(root / "labelsTr" / "ct_2.nii.gz")
    io.write_like(np.zeros_like(other), other_meta, root / "labelsTr" / "ct_2.nii.gz")
    for _ in range(2):  # computed, then from the cache
        with pytest.raises(MedsegError, match=r"ct_1.nii.gz: label value\(s\) \[7\] out of range") as err:
            analyse(root).require_valid()
        assert "and 1 more error(s)" in str(err.value)
    assert analyse(root).cached
    relaxed = analyse(root, allow_empty=True)
    assert relaxed.cached and len(relaxed.check.errors) == 1 and "empty mask" in relaxed.check.warnings[0]


def test_clean_dataset_passes_the_gate(nnunet2ch):
    analysis = analyse(nnunet2ch[0]).require_valid()
    assert analysis.check.ok and analysis.fingerprint.num_cases == 2


def test_unrecognised_folder_is_a_medseg_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(MedsegError, match="unrecognised dataset layout"):
        fingerprint(tmp_path / "x")
