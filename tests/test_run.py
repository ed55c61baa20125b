"""The run format: the Preprocess contract, checkpoints with metadata, run folders and output names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from medseg.errors import MedsegError
from medseg.run import (
    FORMAT_VERSION,
    Preprocess,
    case_name,
    checkpoint_metadata,
    find_run,
    is_prediction,
    new_run_dir,
    point_latest,
    prediction_name,
    read_checkpoint,
    read_metadata,
    save_weights,
)

#: What ``medseg train`` wrote into ``preprocess`` before the run format had its own module.
OLD_PREPROCESS = {
    "preset": "ct", "spatial_dims": 3, "patch_size": [64, 64, 32], "spacing": [1.5, 1.5, 3.0],
    "ct_window": [-160.0, 240.0], "in_channels": 1, "labels": {"0": "background", "1": "organ", "2": "lesion"},
}


def test_preprocess_reads_runs_written_before_it_existed() -> None:
    pre = Preprocess.from_metadata(OLD_PREPROCESS)
    assert pre.labels == {0: "background", 1: "organ", 2: "lesion"} and pre.num_classes == 3
    assert pre.patch_size == (64, 64, 32) and pre.spacing == (1.5, 1.5, 3.0) and pre.foreground == [1, 2]
    assert pre.to_metadata() == OLD_PREPROCESS  # byte-for-byte the same metadata as before


def test_preprocess_round_trip_keeps_plan_and_fingerprint() -> None:
    pre = Preprocess("gray2d", 2, (96, 128), 1, {0: "background", 1: "cell"},
                     plan={"patch_size": {"value": [96, 128]}}, fingerprint={"cases": 3}, colours={1: (255, 0, 0)})
    back = Preprocess.from_metadata(json.loads(json.dumps(pre.to_metadata())))
    assert back == pre and back.plan == pre.plan and back.fingerprint == pre.fingerprint and back.spacing is None
    assert back.colours == {1: (255, 0, 0)}


def test_broken_preprocess_metadata_is_one_line() -> None:
    with pytest.raises(MedsegError, match="preprocessing metadata lacks"):
        Preprocess.from_metadata({"preset": "ct"}, "best.safetensors")


def test_preprocess_builds_the_stage_transforms() -> None:
    pre = Preprocess.from_metadata(OLD_PREPROCESS)
    names = [type(t).__name__ for t in pre.transforms("infer").transforms]
    assert names[:2] == ["LoadImaged", "EnsureChannelFirstd"] and "SeparableSpacingd" in names
    train = pre.transforms("train").transforms
    random_part = [type(t).__name__ for t in train[-1].transforms]  # the untracked random Compose
    assert type(train[-1]).__name__ == "UntrackedCompose" and "RandCropByPosNegLabeld" in random_part


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = nn.Conv2d(1, 2, 1)
    pre = Preprocess.from_metadata({**OLD_PREPROCESS, "spatial_dims": 2, "patch_size": [8, 8], "spacing": None,
                                    "preset": "gray2d"})
    save_weights(tmp_path / "best.safetensors", model, checkpoint_metadata({"name": "x"}, pre, epoch=3))
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.preprocess == pre and ckpt.build_args == {"name": "x"} and ckpt.metadata["epoch"] == 3
    assert read_metadata(tmp_path / "best.safetensors")["medseg_format"] == FORMAT_VERSION


def test_checkpoint_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match=r"--checkpoint last"):
        read_checkpoint(tmp_path, "best")
    save_weights(tmp_path / "best.safetensors", nn.Linear(1, 1), {"epoch": 1})
    with pytest.raises(MedsegError, match="not written by medseg train"):
        read_checkpoint(tmp_path)
    meta = {"build_args": {"name": "x"}, "preprocess": OLD_PREPROCESS, "medseg_format": FORMAT_VERSION + 1}
    save_weights(tmp_path / "best.safetensors", nn.Linear(1, 1), meta)
    with pytest.raises(MedsegError, match="upgrade medseg"):
        read_checkpoint(tmp_path)
    (tmp_path / "best.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MedsegError, match="not a readable safetensors"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(("source", "expected"), [
    ("scan.nii.gz", "scan_seg.nii.gz"), ("scan.nrrd", "scan_seg.nrrd"), ("cell.bmp", "cell_seg.png"),
    ("lesion.jpg", "lesion_seg.png"), ("slice.dcm", "slice_seg.nii.gz"), ("series_dir", "series_dir_seg.nii.gz"),
])
def test_prediction_names(source: str, expected: str) -> None:
    assert prediction_name(Path(source)) == expected
    assert is_prediction(Path(expected)) and not is_prediction(Path(source))
    assert case_name(expected, prediction=True) == case_name(source) == expected.split("_seg")[0]


def test_run_dirs_are_unique_and_latest_follows(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "unet")
    first.mkdir()
    second = new_run_dir(tmp_path, "unet")
    assert second != first and second.name.startswith(first.name)
    second.mkdir()
    (second / "config.yaml").write_text("model: {name: unet}\n")
    point_latest(second)
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert find_run(tmp_path / "latest") == second.resolve()
    with pytest.raises(MedsegError, match=r"no config\.yaml"):
        find_run(first)


def test_weights_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.safetensors"
    save_weights(path, nn.Linear(2, 2), {"epoch": 1})
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("medseg.run.save_file", broken)
    with pytest.raises(OSError):
        save_weights(path, nn.Linear(2, 2), {"epoch": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
