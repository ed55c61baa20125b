"""``medseg train``: every model trains through the CLI, the run directory is complete and readable."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.models import build_model
from medseg.run import read_metadata
from medseg.training import train
from medseg.training.checkpoint import load_state
from tests.training.conftest import tiny_args

_register()
runner = CliRunner()


@pytest.mark.parametrize("model", ["fcn", "unet", "unet_resnet", "dual_unet_resnet"])
def test_each_model_trains_one_epoch_through_the_cli(model: str, tiny_nuclei: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, tiny_args(model, tiny_nuclei, run))
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "plan.yaml", "fingerprint.json", "best.safetensors", "last.safetensors", "state.pt",
                 "metrics.csv", "log.txt", "curves.png"):
        assert (run / name).is_file(), name
    meta = read_metadata(run / "best.safetensors")
    # what the flags leave open is planned: a 2D gray dataset is z-scored per image (nnU-Net's default)
    assert meta["build_args"]["name"] == model and meta["preprocess"]["preset"] == "zscore"
    assert "# data.preset: " in (run / "plan.yaml").read_text(encoding="utf-8")
    assert meta["preprocess"]["fingerprint"]["num_channels"] == 1 and meta["preprocess"]["plan"]["choices"]
    rebuilt = build_model(**meta["build_args"])
    rebuilt.load_state_dict(load_file(str(run / "best.safetensors")))  # the metadata rebuilds the exact network
    state = load_state(run / "state.pt")
    assert state["epoch"] == 1 and "optimizer" in state
    rows = list(csv.DictReader((run / "metrics.csv").open(encoding="utf-8")))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert 0.0 <= float(rows[0]["val_dice"]) <= 1.0 and float(rows[0]["train_loss"]) > 0
    assert (run.parent / "latest").resolve() == run.resolve()


def test_config_typo_is_one_line_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("base: [unet]\ntrain:\n  epohcs: 3\n")
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    # CliRunner lets MedsegError through; medseg.cli.main turns it into 'error: ...' and exit 2
    assert result.exit_code != 0
    assert "unknown key 'train.epohcs'; did you mean 'epochs'?" in str(result.exception)


def test_state_file_holds_only_safe_types(tiny_nuclei: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert runner.invoke(app, tiny_args("unet", tiny_nuclei, run)).exit_code == 0
    state = torch.load(run / "state.pt", weights_only=True)  # raises if anything unsafe was pickled
    assert set(state) >= {"epoch", "optimizer", "scheduler", "scaler", "rng", "best_dice"}

    # the same run, resumed through the Python API with no config: its own config.yaml is used
    config = run / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("epochs: 1\n", "epochs: 2\n"), encoding="utf-8")
    result = train(None, resume=run, quiet=True)
    assert result.epochs_done == 2 and result.run_dir == run


def test_step_with_non_finite_gradients_is_skipped_not_applied(
    tiny_nuclei: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def first_step_overflows(params, max_norm, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        params = list(params)
        if calls["n"] == 1:
            for p in params:
                if p.grad is not None:
                    p.grad.fill_(float("inf"))
        return original(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", first_step_overflows)
    run = tmp_path / "run"
    result = runner.invoke(app, tiny_args("unet", tiny_nuclei, run))
    assert result.exit_code == 0, result.output
    assert "epoch 1: skipped 1 of" in (run / "log.txt").read_text(encoding="utf-8")
    weights = load_file(str(run / "last.safetensors"))
    assert all(torch.isfinite(t.float()).all() for t in weights.values())  # the inf step never reached the weights


def test_validation_dice_is_what_prediction_and_evaluation_give(tiny_nuclei: Path, tmp_path: Path) -> None:
    """Validation in training and medseg predict + evaluate share one sliding window: same Dice."""
    from medseg.config import load_config
    from medseg.data.io import read_image
    from medseg.data.resolve import resolve_data
    from medseg.evaluation.evaluate import evaluate_arrays
    from medseg.inference import Predictor

    run = tmp_path / "run"
    assert runner.invoke(app, tiny_args("unet", tiny_nuclei, run, epochs=2)).exit_code == 0
    rows = list(csv.DictReader((run / "metrics.csv").open(encoding="utf-8")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    best = max(rows, key=lambda r: float(r["val_dice"]))
    predictor = Predictor(run, precision="fp32")
    dices = []
    for case in resolve_data(load_config(run / "config.yaml")).val_cases:
        labels, _ = read_image(case.label)
        prediction = predictor.predict(case.images[0]).labels
        rows_case = evaluate_arrays(prediction, labels.astype("int64"), (1.0, 1.0), {1: "nucleus"}, 1.0, case.id)
        if labels.any():
            dices.append(rows_case[0]["dice"])
    assert sum(dices) / len(dices) == pytest.approx(float(best["val_dice"]), abs=2e-3)


def test_an_undeclared_label_value_stops_training_with_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dataset checks of medseg data check run before training: no traceback from the loss."""
    import json

    import numpy as np

    from medseg.cli import main
    from medseg.data import io

    root = tmp_path / "Dataset001_Bad"
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.zeros((24, 20, 10), np.uint8)
        label[6:12, 5:11, 3:7] = 7 if i == 2 else 1  # case 2 holds a value dataset.json does not declare
        io.write_image(rng.normal(0, 1, label.shape).astype(np.float32), root / "imagesTr" / f"c{i}_0000.nii.gz")
        io.write_image(label, root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1}, "numTraining": 4,
        "file_ending": ".nii.gz"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c2.nii.gz" in err[0] and "7" in err[0], err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_the_plans_advice_is_in_log_txt_and_plan_yaml(
    tiny_nuclei: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.training.loop as loop

    real = loop.plan_experiment

    def advised(*args, **kwargs):  # type: ignore[no-untyped-def]
        plan = real(*args, **kwargs)
        plan.advice.append("short budget: a test line")
        return plan

    monkeypatch.setattr(loop, "plan_experiment", advised)
    run = tmp_path / "run"
    result = runner.invoke(app, tiny_args("fcn", tiny_nuclei, run))
    assert result.exit_code == 0, result.output
    assert "plan note: short budget: a test line" in (run / "log.txt").read_text(encoding="utf-8")
    assert "# note: short budget: a test line" in (run / "plan.yaml").read_text(encoding="utf-8")
