"""The degradation experiment's images: local CIFAR-10 batches, a class-per-folder tree, He et al.'s
preprocessing, and the CLI on a local set."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.experiments.degradation_data import (
    ImageSet,
    load_cifar10,
    load_image_folder,
    load_images,
    pad_crop_flip,
    subtract_pixel_mean,
)


def write_cifar(folder: Path, per_batch: int = 4) -> np.ndarray:
    """The python CIFAR-10 layout: five training batches, a test batch and batches.meta (bytes keys)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": name.encode()}))
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return first


def test_cifar_batches_load_as_channels_first_images_in_0_1(tmp_path: Path) -> None:
    first = write_cifar(tmp_path / "cifar-10-batches-py")
    images = load_cifar10(tmp_path / "cifar-10-batches-py")
    assert images.train[0].shape == (20, 3, 32, 32) and images.test[0].shape == (4, 3, 32, 32)
    assert images.classes[0] == "airplane" and images.num_classes == 10
    # row 0 of data_batch_1: 1024 red values, then green, then blue, each row-major 32x32
    torch.testing.assert_close(images.train[0][0, 1, 0, :3], torch.tensor(first[0, 1024:1027] / 255, dtype=torch.float32))
    torch.testing.assert_close(images.train[0][0, 2, 31, 31], torch.tensor(first[0, 3071] / 255, dtype=torch.float32))


def test_cifar_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "cifar"
    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(MedsegError, match="data_batch_3") as err:
        load_cifar10(folder)
    assert "\n" not in str(err.value)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(MedsegError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_cifar10(folder)


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 14)) -> None:
    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8) if name != "grey" else np.full((*size,), 128, np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{i}.png")
    (root / "notes.txt").write_text("ignored")


def test_an_image_folder_is_one_class_per_sub_folder_resized_and_split_per_class(tmp_path: Path) -> None:
    write_folder(tmp_path / "set", {"cells": 10, "grey": 5, "noise": 3})
    images = load_image_folder(tmp_path / "set", size=16, holdout=0.2, seed=0)
    assert images.classes == ["cells", "grey", "noise"]
    assert images.train[0].shape[1:] == (3, 16, 16) and images.test[0].shape[1:] == (3, 16, 16)
    assert torch.bincount(images.test[1]).tolist() == [2, 1, 1]  # 20 % of each class, at least one
    assert torch.bincount(images.train[1]).tolist() == [8, 4, 2]
    grey = images.train[0][images.train[1] == 1]
    torch.testing.assert_close(grey, torch.full_like(grey, 128 / 255))  # greyscale read as RGB
    assert load_image_folder(tmp_path / "set", size=16, holdout=0.2, seed=0).test[0].equal(images.test[0])


def test_folder_errors(tmp_path: Path) -> None:
    write_folder(tmp_path / "one", {"only": 3})
    for path in (tmp_path / "one", tmp_path / "missing"):
        with pytest.raises(MedsegError, match="one sub-folder per class"):
            load_images(path, 0, 0, 16, 0)
    write_folder(tmp_path / "bad", {"a": 2, "b": 2})
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(MedsegError, match=r"broken\.png: cannot read"):
        load_image_folder(tmp_path / "bad", 8)


def test_load_images_cuts_local_sets_to_the_requested_counts(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c")
    images = load_images(tmp_path / "c", n_train=7, n_test=0, size=12, seed=0)
    assert len(images.train[1]) == 7 and len(images.test[1]) == 4
    generated = load_images(None, n_train=9, n_test=3, size=10, seed=0)
    assert generated.train[0].shape == (9, 3, 10, 10) and generated.num_classes == 10


def test_pixel_mean_subtraction_uses_the_training_mean_only() -> None:
    train = torch.rand(6, 3, 4, 4)
    test = torch.rand(2, 3, 4, 4)
    out = subtract_pixel_mean(ImageSet((train, torch.zeros(6)), (test, torch.zeros(2)), ["a"], "x"))
    torch.testing.assert_close(out.train[0].mean(0), torch.zeros(3, 4, 4))
    torch.testing.assert_close(out.test[0], test - train.mean(0, keepdim=True))


def test_pad_crop_flip_returns_a_shifted_window_maybe_mirrored() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    seen_flip = seen_shift = False
    for _ in range(20):
        out = pad_crop_flip(x, g, pad=2)
        assert out.shape == x.shape
        for i in range(2):
            padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
            windows = [padded[:, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
            match = [w for w in windows if torch.equal(w, out[i]) or torch.equal(w.flip(-1), out[i])]
            assert match  # a window of the padded image, or its mirror
            seen_flip |= not any(torch.equal(w, out[i]) for w in windows)
            seen_shift |= not torch.equal(out[i], x[i]) and not torch.equal(out[i], x[i].flip(-1))
    assert seen_flip and seen_shift


def test_cli_trains_on_a_local_cifar_copy(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar", per_batch=8)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["experiment", "degradation", "--data", str(tmp_path / "cifar"), "--out", str(tmp_path / "run"),
                  "--depths", "8", "--families", "fractal,highway", "--recipe", "he", "--steps", "2",
                  "--batch-size", "4", "--n-train", "0", "--n-test", "0"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code in (0, None)
    with (tmp_path / "run" / "summary.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["network"] for r in rows] == ["fractal-8", "highway-8"]


@pytest.mark.parametrize(("option", "value"), [("--families", "plain,dense"), ("--recipe", "paper")])
def test_cli_rejects_unknown_names_in_one_line(tmp_path: Path, option: str, value: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "degradation", option, value, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option} '{value}': ")
