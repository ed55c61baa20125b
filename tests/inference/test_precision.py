"""bf16 against fp32: prediction agreement, and the Dice bf16 training reaches (issue: speed by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.data import datasets, synthetic
from medseg.inference import Predictor
from medseg.run import read_metadata

_register()


def _train(data: Path, run: Path, precision: str) -> None:
    """A tiny U-Net, 10 epochs on 20 training images; 20 more validate (a larger validation set than
    usual, so that the Dice compared below is not decided by two or three images)."""
    args = ["train", "--model", "unet", "--data", str(data), "--epochs", "10", "--out", str(run), "--quiet",
            "--precision", precision, "--batch-size", "4", "--set", "model.options={features: [8, 16, 32]}",
            "--set", "data.patch_size=[64, 64]", "--set", "data.cache=none", "--set", "data.val_fraction=0.5",
            "--set", "train.lr=2e-3", "--set", "train.warmup_epochs=0", "--set", "train.seed=0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prec")
    data = synthetic.generate("nuclei2d", root / "data", n_cases=40, seed=5, size=(64, 64))
    _train(data, root / "run", "fp32")
    return root / "run", data


def test_run_records_the_precision_it_trained_with(fp32_run: tuple[Path, Path]) -> None:
    run, _ = fp32_run
    assert read_metadata(run / "best.safetensors")["precision"] == "fp32"
    assert "precision fp32 (requested)" in (run / "log.txt").read_text(encoding="utf-8")


def test_bf16_prediction_agrees_with_fp32_on_999_per_mille(fp32_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    run, data = fp32_run
    monkeypatch.setenv("MEDSEG_CPU_BF16", "1")  # bf16 autocast also on CPUs without native bf16 (only slower)
    fp32 = Predictor(run, precision="fp32")
    bf16 = Predictor(run, precision="bf16")
    assert bf16.precision.name == "bf16" and fp32.precision.name == "fp32"
    images = [c.images[0] for c in datasets.discover(data).cases]
    a = np.concatenate([fp32.predict(p).labels.ravel() for p in images])
    b = np.concatenate([bf16.predict(p).labels.ravel() for p in images])
    assert a.any(), "the fp32 model should segment something after 10 epochs"
    agreement = float((a == b).mean())
    print(f"bf16 vs fp32 voxel agreement: {agreement:.5f} over {a.size} voxels")
    assert agreement >= 0.999


def test_bf16_training_reaches_the_fp32_validation_dice(
    fp32_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same seed, data and budget: bf16 autocast training ends within 0.01 Dice of fp32 training.

    Training this small is chaotic: rounding differences grow into different trajectories, and over
    seeds 0-2 the bf16 - fp32 gap measured 0.002, 0.010 and 0.005 (seed 2 learned little in either).
    The seed is fixed; ``benchmarks/precision_quality.py`` makes the same comparison on the demo's
    model and data, where it is far smaller (docs/benchmarks.md).
    """
    run, data = fp32_run
    monkeypatch.setenv("MEDSEG_CPU_BF16", "1")
    _train(data, tmp_path / "bf16", "bf16")
    fp32 = read_metadata(run / "best.safetensors")
    bf16 = read_metadata(tmp_path / "bf16" / "best.safetensors")
    assert bf16["precision"] == "bf16"
    dice32, dice16 = float(fp32["val_dice"]), float(bf16["val_dice"])
    print(f"best validation Dice: fp32 {dice32:.4f}, bf16 {dice16:.4f}")
    assert dice32 > 0.6, "the fp32 model should have learned something in 10 epochs"
    assert abs(dice16 - dice32) <= 0.01
