"""bf16 prediction of an fp32-trained model agrees with fp32 prediction (issue: speed by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.data import datasets, synthetic
from medseg.inference import Predictor
from medseg.training.checkpoint import read_metadata

_register()


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prec")
    data = synthetic.generate("nuclei2d", root / "data", n_cases=8, seed=5, size=(64, 64))
    run = root / "run"
    args = ["train", "--model", "unet", "--data", str(data), "--epochs", "4", "--out", str(run), "--quiet",
            "--precision", "fp32", "--batch-size", "2", "--set", "model.options={features: [8, 16, 32]}",
            "--set", "data.patch_size=[64, 64]", "--set", "data.cache=none"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run, data


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
    assert a.any(), "the fp32 model should segment something after 4 epochs"
    agreement = float((a == b).mean())
    print(f"bf16 vs fp32 voxel agreement: {agreement:.5f} over {a.size} voxels")
    assert agreement >= 0.999
