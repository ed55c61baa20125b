"""``medseg train --folds K``: the parent run directory, keeping finished folds, refusing another
cross-validation's --out, the out-of-fold summary, and a SIGKILL while a later fold trains."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import ExperimentConfig, load_config, resolve_config
from medseg.data.io import read_image
from medseg.errors import MedsegError
from medseg.experiments.crossval import summarise
from medseg.inference import Predictor
from medseg.inference.postprocess import read_postprocessing
from medseg.inference.uncertainty import case_score
from medseg.run import CV_FILE, fold_dir, is_cross_validation, read_checkpoint
from medseg.training.checkpoint import load_state
from medseg.training.folds import fold_config, parent_config, parent_dir, read_cv, request_of, train_folds
from medseg.training.loop import resume_config
from tests.training.conftest import tiny_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: Two short epochs of 30 steps: enough for the tiny U-Net to find nuclei (Dice about 0.5) in about 2 s a fold.
TRAIN = {"epochs": 2, "steps_per_epoch": 30, "batch_size": 2, "precision": "fp32", "device": "cpu"}


def tiny_config(data: Path, out: Path, **train: object) -> ExperimentConfig:
    return resolve_config(model="unet", overrides={
        "model": {"options": {"features": [4, 8, 16]}},
        "data": {"path": str(data), "patch_size": [32, 32], "cache": "none", "num_samples": 1},
        "train": {**TRAIN, **train}, "out": str(out),
    })


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


class Trained:
    def __init__(self, cfg: ExperimentConfig, parent: Path, result) -> None:
        self.cfg, self.parent, self.result = cfg, parent, result


@pytest.fixture(scope="module")
def trained(tiny_nuclei: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("folds")
    cfg = tiny_config(tiny_nuclei, root / "runs")
    parent = root / "runs" / "cv"
    result = train_folds(cfg, 2, parent, quiet=True)
    return Trained(cfg, parent, result)


@pytest.fixture(scope="module")
def summary(trained: Trained):
    return summarise(trained.parent, device="cpu", precision="fp32")


def test_train_folds_writes_a_parent_run_directory(trained: Trained, tiny_nuclei: Path) -> None:
    parent, result = trained.parent, trained.result
    assert result.parent == parent and result.folds == 2 and result.complete
    assert sorted(result.trained) == [0, 1] and result.kept == []
    assert [result.trained[k].run_dir for k in (0, 1)] == [fold_dir(parent, 0), fold_dir(parent, 1)]

    cv = json.loads((parent / CV_FILE).read_text(encoding="utf-8"))
    assert cv["medseg_cv"] == 1 and cv["folds"] == 2 and cv["finished"] == [0, 1]
    assert cv["request"] == request_of(trained.cfg, 2)
    assert cv["request"]["data"] == str(tiny_nuclei.resolve())
    assert is_cross_validation(parent)

    splits = json.loads((parent / "splits.json").read_text(encoding="utf-8"))
    cases = sorted(p.name.removesuffix(".png") for p in (tiny_nuclei / "imagesTr").iterdir())
    assert len(splits) == 2 and len(cases) == 6
    vals = [set(s["val"]) for s in splits]
    assert vals[0].isdisjoint(vals[1]) and sorted(vals[0] | vals[1]) == cases  # the val sets partition the cases
    for s in splits:
        assert sorted(set(s["train"]) | set(s["val"])) == cases and not set(s["train"]) & set(s["val"])

    for k in (0, 1):
        run = fold_dir(parent, k)
        for name in ("config.yaml", "best.safetensors", "last.safetensors", "state.pt", "metrics.csv"):
            assert (run / name).is_file(), (k, name)
        assert json.loads((run / "splits.json").read_text(encoding="utf-8")) == splits  # the parent's folds
        cfg = load_config(run / "config.yaml")
        assert cfg.data.fold == k and cfg.data.num_folds == 2
        assert Path(cfg.data.split_file).resolve() == (parent / "splits.json").resolve()
        assert not (run / "latest").exists()
    # every fold reads the images the same way (fold 0 planned them all): an ensemble is well defined
    assert read_checkpoint(fold_dir(parent, 0)).preprocess == read_checkpoint(fold_dir(parent, 1)).preprocess
    assert (parent / "config.yaml").read_text(encoding="utf-8") == (fold_dir(parent, 0) / "config.yaml").read_text(encoding="utf-8")
    assert not (parent / "latest").exists()
    latest = Path(trained.cfg.out) / "latest"
    assert latest.is_symlink() and latest.resolve() == parent.resolve()
    predictor = Predictor(latest, device="cpu", precision="fp32", tta=False)  # runs/latest predicts with both folds
    assert len(predictor.members) == 2


def test_a_second_call_keeps_every_fold(trained: Trained) -> None:
    parent = trained.parent
    before = {(k, n): digest(fold_dir(parent, k) / n) for k in (0, 1) for n in ("best.safetensors", "last.safetensors")}
    again = train_folds(trained.cfg, 2, parent, quiet=True)
    assert again.kept == [0, 1] and again.trained == {} and again.complete
    assert {(k, n): digest(fold_dir(parent, k) / n) for k, n in before} == before
    only = train_folds(trained.cfg, 2, parent, only=[1], quiet=True)
    assert only.kept == [1] and only.trained == {}


def test_another_request_on_the_same_out_is_refused_in_one_line(trained: Trained, tiny_nuclei: Path, tmp_path: Path) -> None:
    parent = trained.parent
    cv_before = (parent / CV_FILE).read_text(encoding="utf-8")
    other_seed = tiny_config(tiny_nuclei, tmp_path / "runs", seed=7)
    for cfg, folds in ((other_seed, 2), (trained.cfg, 3)):
        with pytest.raises(MedsegError) as info:
            train_folds(cfg, folds, parent, quiet=True)
        message = str(info.value)
        assert "\n" not in message and str(parent) in message and "--out" in message
    assert (parent / CV_FILE).read_text(encoding="utf-8") == cv_before  # nothing rewritten

    plain = tmp_path / "not_cv"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(MedsegError, match="is not a cross-validation") as info:
        train_folds(trained.cfg, 2, plain, quiet=True)
    assert "\n" not in str(info.value) and not (plain / CV_FILE).exists()
    with pytest.raises(MedsegError, match="at least 2 folds"):
        train_folds(trained.cfg, 1, tmp_path / "one", quiet=True)
    with pytest.raises(MedsegError, match="--fold 2"):
        train_folds(trained.cfg, 2, tmp_path / "bad_fold", only=[2], quiet=True)
    assert not (tmp_path / "one").exists() and not (tmp_path / "bad_fold").exists()


def test_a_broken_cv_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / CV_FILE).write_text('{"folds": "two"}', encoding="utf-8")
    with pytest.raises(MedsegError) as info:
        read_cv(tmp_path)
    assert "\n" not in str(info.value) and CV_FILE in str(info.value)


def test_parent_dir_continues_an_unfinished_cross_validation_of_the_same_request(tiny_nuclei: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cfg = tiny_config(tiny_nuclei, runs)
    old = runs / "old_cv"
    old.mkdir(parents=True)
    (runs / "latest").symlink_to("old_cv", target_is_directory=True)
    cv = {"medseg_cv": 1, "folds": 2, "request": request_of(cfg, 2), "finished": [0]}
    (old / CV_FILE).write_text(json.dumps(cv), encoding="utf-8")
    assert parent_dir(cfg, 2, None) == old.resolve()  # the same command continues it
    assert parent_dir(cfg, 2, tmp_path / "given") == tmp_path / "given"
    fresh = parent_dir(cfg, 3, None)  # another request: a new parent
    assert fresh.parent == runs and fresh.name.endswith("_unet_cv3") and not fresh.exists()
    cv["finished"] = [0, 1]
    (old / CV_FILE).write_text(json.dumps(cv), encoding="utf-8")
    assert parent_dir(cfg, 2, None) != old.resolve()  # a finished one is not continued


def test_fold_configs_share_the_parent_split_and_fold_0s_plan(trained: Trained, tmp_path: Path) -> None:
    parent = trained.parent
    one = fold_config(trained.cfg, parent, 1, 2)
    planned = load_config(fold_dir(parent, 0) / "config.yaml")
    assert one.data.fold == 1 and Path(one.data.split_file) == (parent / "splits.json").resolve()
    assert one.data.preset == planned.data.preset and one.data.patch_size == planned.data.patch_size
    with pytest.raises(MedsegError, match="fold 0 has not started"):
        fold_config(trained.cfg, tmp_path, 1, 2)
    whole = parent_config(parent)
    assert whole.data.fold is None and whole.data.split_file is None
    budget = tiny_config(Path(trained.cfg.data.path), tmp_path, max_minutes=3.0)
    assert fold_config(budget, tmp_path, 0, 3).train.max_minutes == pytest.approx(1.0)  # the budget is shared


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    a, b = pred > 0, gt > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def test_summarise_writes_per_fold_and_pooled_dice(trained: Trained, summary, tiny_nuclei: Path) -> None:
    parent = trained.parent
    files = summary.files
    assert files["json"] == parent / "cv_summary.json" and files["figure"] == parent / "uncertainty.png"
    written = json.loads((parent / "cv_summary.json").read_text(encoding="utf-8"))
    assert written["folds"] == [0, 1] and written["cases"] == 6
    splits = json.loads((parent / "splits.json").read_text(encoding="utf-8"))

    # the Dice of the out-of-fold masks on disk, computed here
    per_case: dict[str, float] = {}
    for split in splits:
        for case in split["val"]:
            pred, _ = read_image(parent / "oof" / f"{case}_seg.png")
            gt, _ = read_image(tiny_nuclei / "labelsTr" / f"{case}.png")
            per_case[case] = _dice(pred, np.rint(gt))
            for kind in ("entropy", "disagreement"):  # TTA of the run: several passes
                assert (parent / "oof" / f"{case}_seg_{kind}.tif").is_file()
    nucleus = written["dice"]["nucleus"]
    for k, split in enumerate(splits):
        assert nucleus["folds"][str(k)] == pytest.approx(np.mean([per_case[c] for c in split["val"]]), abs=1e-6)
    assert nucleus["pooled"] == pytest.approx(np.mean(list(per_case.values())), abs=1e-6)
    assert nucleus["mean"] == pytest.approx(np.mean([nucleus["folds"]["0"], nucleus["folds"]["1"]]))
    assert nucleus["std"] == pytest.approx(np.std([nucleus["folds"]["0"], nucleus["folds"]["1"]], ddof=1))
    assert nucleus["pooled"] > 0.2, "two short epochs should find some nuclei"

    rows = list(csv.DictReader((parent / "cv_metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 12 and {r["postprocessed"] for r in rows} == {"False", "True"}
    fold_of = {c: k for k, s in enumerate(splits) for c in s["val"]}
    assert all(int(r["fold"]) == fold_of[r["case"]] for r in rows)

    # post-processing chosen on the pooled cases, readable by predict, consistent with the summary
    choice = json.loads((parent / "postprocessing.json").read_text(encoding="utf-8"))
    rule = choice["classes"]["1"]
    assert choice["cases"] == 6 and choice["size_unit"] == "mm2"
    assert rule["dice_before"] == pytest.approx(nucleus["pooled"])
    assert rule["dice_after"] == pytest.approx(written["dice_postprocessed"]["nucleus"]["pooled"])
    assert rule["dice_after"] >= rule["dice_before"]
    assert read_postprocessing(parent)[1]["operation"] == rule["operation"]
    assert written["postprocessing"] == choice

    ranking = written["uncertainty"]
    assert ranking["cases"] == 6 and sorted(ranking["per_case"]) == sorted(per_case)
    assert all(0.0 <= v <= 1.0 for v in ranking["per_case"].values())
    for case, score in ranking["per_case"].items():  # the score of the mask and entropy map written to oof/
        mask, _ = read_image(parent / "oof" / f"{case}_seg.png")
        entropy_map, _ = read_image(parent / "oof" / f"{case}_seg_entropy.tif")
        assert entropy_map.shape == mask.shape
        assert score == pytest.approx(case_score(mask, entropy_map), abs=1e-6)
    with Image.open(parent / "uncertainty.png") as figure:
        figure.verify()


def test_summarise_needs_a_finished_fold(tmp_path: Path) -> None:
    (tmp_path / CV_FILE).write_text(json.dumps({"medseg_cv": 1, "folds": 2, "request": {}, "finished": []}))
    (tmp_path / "splits.json").write_text("[]")
    with pytest.raises(MedsegError, match="no fold has finished"):
        summarise(tmp_path)
    (tmp_path / "splits.json").unlink()
    with pytest.raises(MedsegError, match=r"splits\.json") as info:
        summarise(tmp_path)
    assert "\n" not in str(info.value)


def _finished(parent: Path) -> list[int]:
    try:
        return read_cv(parent)["finished"]
    except MedsegError:
        return []


@pytest.mark.slow
def test_sigkill_while_fold_1_trains_then_the_same_command_keeps_fold_0(tiny_nuclei: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    command = [sys.executable, "-m", "medseg", *tiny_args("unet", tiny_nuclei, out, epochs=4), "--folds", "2",
               "--set", "train.steps_per_epoch=12"]
    proc = subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fold_1 = fold_dir(out, 1)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (fold_1 / "state.pt").is_file() and (fold_1 / "metrics.csv").is_file() and _epochs(fold_1):
            break  # fold 1's first epoch is saved, three are to come
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "the cross-validation exited early"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _finished(out) == [0], "killed while fold 1 trained"
    assert resume_config(fold_1).data.fold == 1
    weights_0 = {n: digest(fold_dir(out, 0) / n) for n in ("best.safetensors", "last.safetensors", "state.pt")}
    assert 1 <= load_state(fold_1 / "state.pt")["epoch"] < 4

    again = subprocess.run(command, env=ENV, cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert again.returncode == 0, again.stderr
    assert {n: digest(fold_dir(out, 0) / n) for n in weights_0} == weights_0  # fold 0 was not trained again
    assert read_cv(out)["finished"] == [0, 1]
    assert _epochs(fold_1) == [1, 2, 3, 4]  # resumed, no epoch lost or repeated
    assert _epochs(fold_dir(out, 0)) == [1, 2, 3, 4]
    assert "resume at epoch" in (fold_1 / "log.txt").read_text(encoding="utf-8")
    assert (out / "cv_summary.json").is_file() and (out / "postprocessing.json").is_file()
    assert (tmp_path / "latest").resolve() == out.resolve() and not (tmp_path / "runs").exists()


def _epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle)]


def test_cli_resume_parent_and_cv_summarise_without_training(trained: Trained, summary, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli import _register, app

    _register()
    runner = CliRunner()
    parent = trained.parent
    weights = {k: digest(fold_dir(parent, k) / "best.safetensors") for k in (0, 1)}
    resumed = runner.invoke(app, ["train", "--resume", str(parent), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert {k: digest(fold_dir(parent, k) / "best.safetensors") for k in (0, 1)} == weights
    assert "summary:" in resumed.output  # every fold finished: the summary follows

    # (that summary ran at precision auto, bf16 on some CPUs; medseg cv below asks for fp32 again)
    result = runner.invoke(app, ["cv", str(parent), "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "Cross-validation: 6 out-of-fold cases" in result.output and str(parent / "cv_summary.json") in result.output
    rewritten = json.loads((parent / "cv_summary.json").read_text(encoding="utf-8"))["dice"]
    assert rewritten == summary.summary["dice"]  # the same folds, the same fp32 prediction: the same numbers

    not_cv = runner.invoke(app, ["cv", str(tmp_path)])
    assert not_cv.exit_code != 0 and "not a cross-validation" in str(not_cv.exception)
