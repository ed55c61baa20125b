"""Images for the degradation experiment: the generated task, local CIFAR-10 batches, a folder of
labelled images, and He et al.'s CIFAR preprocessing (per-pixel mean subtraction, pad-crop-flip).

Nothing is downloaded: CIFAR-10 is read from the ``data_batch_1`` ... ``data_batch_5`` and
``test_batch`` pickles of the python version (``cifar-10-batches-py``), and a folder is read as one
sub-folder per class.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


@dataclass
class ImageSet:
    """Training and held-out images ``(N, 3, H, W)`` float32 with integer labels, and class names."""

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    classes: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def make_task(
    n: int, size: int = 16, num_classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RGB images ``(n, 3, size, size)`` and labels of a generated texture task.

    Class ``k`` is an oriented grating at angle ``k * pi / num_classes`` (jittered) whose spatial
    frequency is one of three, chosen by ``k % 3``, so neighbouring angles differ in frequency too.
    Phase, contrast and colour are random, a second grating of random angle and frequency is added
    as a distractor, and Gaussian noise on top, so that the classes overlap in pixel space and a
    network has to learn orientation and frequency detectors. The same ``seed`` gives the same data.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")

    def grating(angle: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        a, f, p = (v[:, None, None] for v in (angle, freq, phase))
        return torch.cos(f * (xx * torch.cos(a) + yy * torch.sin(a)) + p)

    angle = labels.float() * (math.pi / num_classes) + 0.12 * torch.randn(n, generator=g)
    freq = 0.5 + 0.35 * (labels % 3).float() + 0.04 * torch.randn(n, generator=g)
    wave = grating(angle, freq, 2 * math.pi * torch.rand(n, generator=g))
    distractor = grating(
        math.pi * torch.rand(n, generator=g), 0.3 + 1.0 * torch.rand(n, generator=g),
        2 * math.pi * torch.rand(n, generator=g),
    )  # fmt: skip
    contrast = 0.5 + torch.rand(n, 1, 1, generator=g)
    colour = 0.5 + torch.rand(n, 3, 1, 1, generator=g)
    base = contrast * wave + 0.6 * distractor
    images = colour * base[:, None] + 0.5 * torch.randn(n, 3, size, size, generator=g)
    return images, labels


def generated_set(n_train: int, n_test: int, size: int, seed: int) -> ImageSet:
    """The generated grating task: training images from ``seed``, held-out ones from another seed."""
    return ImageSet(make_task(n_train, size, seed=seed), make_task(n_test, size, seed=seed + 10_000),
                    [f"grating {k}" for k in range(10)], "generated gratings")  # fmt: skip


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise MedsegError(f"{path}: not a CIFAR-10 python batch ({err}); give the cifar-10-batches-py folder") from None


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None or np.asarray(data).shape[1:] != (3072,):
        raise MedsegError(f"{path}: a CIFAR-10 batch holds 'data' (N x 3072 uint8) and 'labels'; this file does not")
    images = torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    return images, torch.as_tensor(labels, dtype=torch.long)


def load_cifar10(folder: str | Path) -> ImageSet:
    """CIFAR-10 from a local ``cifar-10-batches-py`` folder: 50,000 training, 10,000 test images in [0, 1]."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if not (folder / n).is_file()]
    if missing:
        raise MedsegError(f"{folder}: CIFAR-10 python batches missing ({', '.join(missing)}); give the "
                          "extracted cifar-10-batches-py folder")  # fmt: skip
    parts = [_cifar_batch(folder / n) for n in names]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    meta = folder / "batches.meta"
    classes = [c.decode() for c in _unpickle(meta)[b"label_names"]] if meta.is_file() else [str(k) for k in range(10)]
    return ImageSet(train, _cifar_batch(folder / "test_batch"), classes, f"CIFAR-10 ({folder})")


def load_image_folder(folder: str | Path, size: int, holdout: float = 0.1, seed: int = 0) -> ImageSet:
    """Every image under ``folder/<class>/``, as RGB resized to ``size`` x ``size``; ``holdout`` of
    each class (at least one image) is held out, drawn with ``seed``."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    files = {c: sorted(p for p in (folder / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    if len(classes) < 2 or any(len(v) < 2 for v in files.values()):
        raise MedsegError(f"{folder}: give a folder with one sub-folder per class (at least 2 classes, 2 images "
                          f"each; {', '.join(IMAGE_SUFFIXES)})")  # fmt: skip
    rng = np.random.default_rng(seed)
    sets: dict[str, list[tuple[torch.Tensor, int]]] = {"train": [], "test": []}
    for label, name in enumerate(classes):
        order = rng.permutation(len(files[name]))
        n_test = max(1, round(holdout * len(order)))
        for rank, index in enumerate(order):
            path = files[name][index]
            try:
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
            except (OSError, UnidentifiedImageError) as err:
                raise MedsegError(f"{path}: cannot read this image ({err}); remove or replace it") from None
            sets["test" if rank < n_test else "train"].append((torch.from_numpy(pixels / 255).permute(2, 0, 1), label))
    stack = {k: (torch.stack([x for x, _ in v]), torch.tensor([y for _, y in v])) for k, v in sets.items()}
    return ImageSet(stack["train"], stack["test"], classes, f"image folder ({folder})")


def load_images(data: str | Path | None, n_train: int, n_test: int, size: int, seed: int) -> ImageSet:
    """The generated task (``data=None``), CIFAR-10 batches, or a class-per-folder tree; local sets are
    cut to ``n_train`` / ``n_test`` images drawn with ``seed`` (0 = all)."""
    if data is None:
        return generated_set(n_train, n_test, size, seed)
    path = Path(data)
    if not path.is_dir():
        raise MedsegError(f"--data {path}: no such folder; give a cifar-10-batches-py folder or one sub-folder per class")
    images = load_cifar10(path) if (path / "data_batch_1").is_file() else load_image_folder(path, size, seed=seed)
    g = torch.Generator().manual_seed(seed)

    def cut(pair: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not n or n >= len(pair[1]):
            return pair
        keep = torch.randperm(len(pair[1]), generator=g)[:n]
        return pair[0][keep], pair[1][keep]

    return ImageSet(cut(images.train, n_train), cut(images.test, n_test), images.classes, images.source)


def subtract_pixel_mean(images: ImageSet) -> ImageSet:
    """He et al.'s normalisation: the training set's per-pixel mean subtracted from both sets."""
    mean = images.train[0].mean(0, keepdim=True)
    return ImageSet((images.train[0] - mean, images.train[1]), (images.test[0] - mean, images.test[1]),
                    images.classes, images.source)  # fmt: skip


def pad_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """He et al.'s augmentation: zero-pad by ``pad``, crop a random window of the original size, and
    flip horizontally with probability 0.5; one draw per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out
