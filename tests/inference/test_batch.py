"""Folder prediction: channel files grouped into cases, a resumed call keeps finished outputs,
reading ahead gives the same masks as reading in turn."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from inference_helpers import make_run

from medseg.errors import MedsegError
from medseg.inference import Predictor, expand_inputs, output_path, predict_many


def _nifti(path, seed: int) -> None:
    data = np.random.default_rng(seed).normal(0, 1, (12, 12, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


def _three_cases(tmp_path) -> tuple[Predictor, object]:
    """A predictor of a tiny one-channel run, and a folder of three NIfTI cases."""
    run = make_run(tmp_path / "run", spacing=None)
    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        _nifti(images / f"case{k}.nii.gz", k)
    return Predictor(run, precision="fp32"), images


def test_channel_files_become_one_case_each(tmp_path) -> None:
    for case in ("a", "b"):
        for k in range(2):
            _nifti(tmp_path / f"{case}_{k:04d}.nii.gz", k)
    cases = expand_inputs([tmp_path], channels=2)
    assert cases == [[tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"],
                     [tmp_path / "b_0000.nii.gz", tmp_path / "b_0001.nii.gz"]]
    assert output_path(cases[0], tmp_path / "out", True) == tmp_path / "out" / "a_seg.nii.gz"
    assert expand_inputs([tmp_path / "b_0000.nii.gz"], channels=2) == [cases[1]]  # the siblings come along


def test_a_missing_channel_is_one_line_and_a_file_without_siblings_is_one_case(tmp_path) -> None:
    for k in (0, 2):
        _nifti(tmp_path / f"a_{k:04d}.nii.gz", k)
    with pytest.raises(MedsegError, match=r"a: the run takes channels 0000-0002; found 0000, 0002"):
        expand_inputs([tmp_path], channels=3)
    (tmp_path / "a_0002.nii.gz").unlink()
    _nifti(tmp_path / "photo.nii.gz", 0)
    # no sibling channel files: each file holds its channels itself (an RGB image for an RGB run)
    assert expand_inputs([tmp_path], channels=3) == [tmp_path / "a_0000.nii.gz", tmp_path / "photo.nii.gz"]


def test_a_two_channel_run_predicts_a_folder_of_cases(tmp_path) -> None:
    run = make_run(tmp_path / "run", spacing=None, in_channels=2, preset="mri")
    images = tmp_path / "images"
    images.mkdir()
    for case in ("a", "b"):
        for k in range(2):
            _nifti(images / f"{case}_{k:04d}.nii.gz", k)
    report = predict_many(Predictor(run, precision="fp32"), [images], tmp_path / "out")
    assert not report.failed, report.failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_seg.nii.gz", "b_seg.nii.gz"]


def test_resume_keeps_what_an_earlier_call_wrote(tmp_path) -> None:
    predictor, images = _three_cases(tmp_path)
    out = tmp_path / "out"
    first = predict_many(predictor, [images / "case0.nii.gz", images / "case1.nii.gz"], out)
    assert len(first.written) == 2
    marker = (out / "case0_seg.nii.gz").stat().st_mtime_ns
    again = predict_many(predictor, [images], out, resume=True)
    assert [t.name for _, t in again.kept] == ["case0_seg.nii.gz", "case1_seg.nii.gz"]
    assert [t.name for _, t in again.written] == ["case2_seg.nii.gz"]
    assert (out / "case0_seg.nii.gz").stat().st_mtime_ns == marker


def test_reading_ahead_gives_the_same_masks_and_records_failures(tmp_path) -> None:
    predictor, images = _three_cases(tmp_path)
    (images / "case1b.nii.gz").write_bytes(b"broken")
    ahead = predict_many(predictor, [images], tmp_path / "ahead", prefetch=True)
    turn = predict_many(predictor, [images], tmp_path / "turn", prefetch=False)
    for report in (ahead, turn):
        assert [s.name for s, _ in report.failed] == ["case1b.nii.gz"] and len(report.written) == 3
    for k in range(3):
        a = np.asarray(nib.load(str(tmp_path / "ahead" / f"case{k}_seg.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "turn" / f"case{k}_seg.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)


def test_sigkill_mid_folder_then_continue_finishes_the_rest(tmp_path) -> None:
    """A folder prediction killed with SIGKILL and run again with --continue: every output readable,
    the ones written before the kill kept as they were."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = make_run(tmp_path / "run", spacing=None)
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for k in range(10):
        _nifti(images / f"case{k}.nii.gz", k)
    cmd = [sys.executable, "-m", "medseg", "predict", str(images), "--run", str(run), "-o", str(out),
           "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*_seg.nii.gz"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}
    assert 3 <= len(before) < 10, "the kill came too late to test anything"
    again = subprocess.run([*cmd, "--continue"], env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"kept {len(before)} output(s)" in again.stderr
    written = sorted(out.glob("*_seg.nii.gz"))
    assert len(written) == 10 and not list(out.glob(".tmp-*"))
    for path in written:
        assert np.asarray(nib.load(str(path)).dataobj).shape == (12, 12, 8)
        if path.name in before:
            assert path.stat().st_mtime_ns == before[path.name]


def test_an_rgb_run_predicts_plainly_named_rgb_files_and_names_a_grey_one(tmp_path) -> None:
    from PIL import Image

    run = make_run(tmp_path / "run", spatial_dims=2, preset="rgb2d", in_channels=3)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("lesion.png", "ISIC_0001.png"):  # the second looks like a channel file but has no siblings
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(images / name)
    Image.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(images / "grey.png")
    report = predict_many(Predictor(run, precision="fp32"), [images], tmp_path / "out")
    assert sorted(t.name for _, t in report.written) == ["ISIC_0001_seg.png", "lesion_seg.png"]
    assert [(s.name, "has 1 channel(s) but the run was trained on 3" in str(e)) for s, e in report.failed] == [
        ("grey.png", True)
    ]
