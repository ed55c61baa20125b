"""Tiny datasets and model options so every training test runs in seconds on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data import synthetic

TINY_ENCODER = "{encoder: resnet18, encoder_options: {widths: [8, 16, 16, 16]}"
TINY_OPTIONS = {
    "unet": "{features: [4, 8, 16]}",
    "unet_resnet": TINY_ENCODER + ", decoder_channels: [16, 8, 8, 8, 8]}",
    "dual_unet_resnet": TINY_ENCODER + ", decoder_channels: [16, 8, 8, 8, 8], features2: [4, 8], aspp_channels: 8}",
    "fcn": TINY_ENCODER + "}",
}


def tiny_args(model: str, data: Path, out: Path, epochs: int = 1) -> list[str]:
    """CLI arguments for a seconds-long training run of ``model`` on ``data``."""
    return [
        "train", "--model", model, "--data", str(data), "--epochs", str(epochs), "--out", str(out),
        "--batch-size", "2", "--precision", "fp32", "--quiet",
        "--set", f"model.options={TINY_OPTIONS[model]}",
        "--set", "data.patch_size=[32, 32]", "--set", "data.cache=none", "--set", "data.num_samples=1",
    ]


@pytest.fixture(scope="session")
def tiny_nuclei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 48×48 nuclei images in MSD layout."""
    return synthetic.generate("nuclei2d", tmp_path_factory.mktemp("nuclei") / "ds", n_cases=6, seed=1, size=(48, 48))
