"""``medseg compare``: train several models under one budget, evaluate them alike, report side by side.

Every model gets the same dataset, split, seed, preprocessing and budget (epochs, or a wall-clock
limit). Each is evaluated on the held-out (validation) cases with :func:`medseg.evaluation.evaluate`,
and the results become ``comparison.csv``, ``comparison.md``, ``grid.png``, ``dice_bars.png`` and a
self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import ExperimentConfig, load_config, resolve_config
from medseg.data.io import read_image
from medseg.data.resolve import resolve_data
from medseg.errors import MedsegError
from medseg.evaluation import evaluate
from medseg.evaluation.figures import mid_slice, plot_bars, plot_grid
from medseg.evaluation.report import html_table, markdown_table, write_report
from medseg.inference import Predictor, output_path
from medseg.models.summary import forward_gflops
from medseg.run import labels_from, split_name
from medseg.training import TrainResult, train
from medseg.training.checkpoint import load_state
from medseg.utils import atomic_write_text

DEFAULT_MODELS = ("fcn", "unet", "unet_resnet", "dual_unet_resnet")
COLUMNS = ["model", "dice", "iou", "hd95", "params_m", "gflops", "train_minutes", "epochs", "infer_seconds_per_case"]
#: HD95 is in mm; n/a means no held-out case had a finite distance (empty predictions count as infinite).


@dataclass
class ModelOutcome:
    """One model's run, evaluation and costs."""

    name: str
    run_dir: Path
    pred_dir: Path
    summary: dict[str, Any]
    params: int
    gflops: float
    train_seconds: float
    epochs: int
    infer_seconds: float


@dataclass
class Comparison:
    """Everything ``compare`` wrote."""

    out_dir: Path
    outcomes: list[ModelOutcome]
    n_cases: int
    files: dict[str, Path]


def _stat(summary: dict[str, Any], metric: str) -> tuple[float, float]:
    """Mean and std of ``metric`` over every held-out case and foreground class (finite values)."""
    pooled = summary.get("overall", {}).get(metric, {})
    mean, std = pooled.get("mean"), pooled.get("std")
    return (float("nan") if mean is None else float(mean)), (float("nan") if std is None else float(std))


def compare(
    models: Sequence[str] = DEFAULT_MODELS,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: Sequence[str] = (),
    out: Path = Path("runs/compare"),
    reuse: bool = False,
    quiet: bool = False,
    on_progress: Callable[[str], None] | None = None,
    encoders: Sequence[str] = (),
) -> Comparison:
    """Train (or reuse) each model in ``models`` and compare them on the held-out cases.

    With ``encoders``, every model is trained on each encoder instead (``unet_resnet+resnext50_32x4d``,
    …): the lecture's "evolution of ResNet" measured under one split, budget and report.
    """
    say = on_progress or (lambda _m: None)
    if not models:
        raise MedsegError("--models is empty; name at least one model, e.g. --models unet,dual_unet_resnet")
    configs = variant_configs(models, encoders, config, overrides, sets)
    first = next(iter(configs.values()))
    for name, cfg in configs.items():
        if (cfg.data.path, cfg.data.demo, cfg.train.seed, cfg.data.patch_size) != (
            first.data.path, first.data.demo, first.train.seed, first.data.patch_size
        ):
            raise MedsegError(f"model {name}: its config uses other data, seed or patch size than {models[0]}; "
                              "give one --config for all models")
    out.mkdir(parents=True, exist_ok=True)
    setup = resolve_data(first)
    labels = labels_from(setup.info.labels)
    outcomes = []
    for name, cfg in configs.items():
        say(f"{name}: training")
        run_dir = out / "runs" / name
        result = _train_or_reuse(cfg, run_dir, reuse, quiet)
        say(f"{name}: predicting {len(setup.val_cases)} held-out cases")
        pred_dir = out / "predictions" / name
        if pred_dir.exists():
            shutil.rmtree(pred_dir)
        predictor = Predictor(run_dir, device=cfg.train.device, precision=cfg.train.precision)
        times = []
        for case in setup.val_cases:
            t0 = time.perf_counter()
            predictor.predict_file(case.images, output_path(case.images[0], pred_dir, True))
            times.append(time.perf_counter() - t0)
        infer_seconds = float(np.median(times))  # the median hides the first call's one-off set-up
        gt_dir = _gt_folder(setup.val_cases, out / "ground_truth")
        evaluation = evaluate(pred_dir, gt_dir, out / "evaluation" / name, labels=labels)
        ref = [1, setup.info.num_channels, *cfg.data.patch_size]
        outcomes.append(ModelOutcome(
            name, run_dir, pred_dir, evaluation.summary, predictor.num_parameters,
            forward_gflops(predictor.model, ref),
            result[0], result[1], infer_seconds,
        ))
    files = _write_outputs(out, outcomes, setup, labels, configs, first)
    return Comparison(out, outcomes, len(setup.val_cases), files)


def variant_configs(
    models: Sequence[str], encoders: Sequence[str], config: str | Path | None, overrides: dict[str, Any] | None,
    sets: Sequence[str],
) -> dict[str, ExperimentConfig]:
    """One config per model, or per model and encoder when ``encoders`` are given (named by the
    encoder alone when there is one model, else ``<model>+<encoder>``)."""
    if not encoders:
        return {m: resolve_config(model=m, config=config, overrides=overrides, sets=sets) for m in models}
    from medseg.encoders import list_encoders
    from medseg.models import model_options

    for model in models:
        if "encoder" not in model_options(model):
            raise MedsegError(f"--encoders: model {model} has no encoder option; use models built on an encoder "
                              "(unet_resnet, dual_unet_resnet, fcn)")
    unknown = [e for e in encoders if e not in list_encoders()]
    if unknown:
        raise MedsegError(f"--encoders: unknown encoder(s) {', '.join(unknown)}; medseg models lists them")
    return {(e if len(models) == 1 else f"{m}+{e}"): resolve_config(model=m, config=config, overrides=overrides,
                                       sets=[*sets, f"model.options.encoder={e}"])
            for m in models for e in encoders}


def _pm(mean: float, std: float, digits: int) -> str:
    """``mean ± std``; ``n/a`` where no case had a finite value (e.g. HD95 with every prediction empty)."""
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _train_or_reuse(cfg: ExperimentConfig, run_dir: Path, reuse: bool, quiet: bool) -> tuple[float, int]:
    """Train into ``run_dir`` unless ``reuse`` and a finished run with the same config is there."""
    saved = run_dir / "config.yaml"
    finished = saved.is_file() and (run_dir / "best.safetensors").is_file()
    if reuse and finished and load_config(saved).completes(cfg):  # the same request, maybe planned
        state = load_state(run_dir / "state.pt")
        return float(state["wall_seconds"]), int(state["epoch"])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result: TrainResult = train(cfg, run_dir=run_dir, quiet=quiet)
    return result.wall_seconds, result.epochs_done


def _gt_folder(cases: Sequence[Any], folder: Path) -> Path:
    """A folder of the held-out labels named like the predictions' inputs, for folder evaluation."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        target = folder / f"{split_name(case.images[0])[0]}{split_name(case.label)[1]}"
        if not target.exists():
            shutil.copyfile(case.label, target)
    return folder


def _write_outputs(
    out: Path,
    outcomes: list[ModelOutcome],
    setup: Any,
    labels: dict[int, str],
    configs: dict[str, ExperimentConfig],
    first: ExperimentConfig,
) -> dict[str, Path]:
    rows = []
    for o in outcomes:
        dice, dice_sd = _stat(o.summary, "dice")
        iou, iou_sd = _stat(o.summary, "iou")
        hd, hd_sd = _stat(o.summary, "hd95")
        rows.append({
            "model": o.name, "dice": _pm(dice, dice_sd, 4), "iou": _pm(iou, iou_sd, 4), "hd95": _pm(hd, hd_sd, 2), "params_m": f"{o.params / 1e6:.2f}", "gflops": f"{o.gflops:.2f}",
            "train_minutes": f"{o.train_seconds / 60:.1f}", "epochs": str(o.epochs),
            "infer_seconds_per_case": f"{o.infer_seconds:.2f}",
        })
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    files = {"csv": out / "comparison.csv", "md": out / "comparison.md", "grid": out / "grid.png",
             "bars": out / "dice_bars.png", "html": out / "report.html"}
    atomic_write_text(files["csv"], buffer.getvalue())
    n = len(setup.val_cases)
    note = (f"Held-out cases: {n} (validation split of {setup.root}, seed {first.train.seed}). "
            f"With {n} cases, differences smaller than the standard deviations are noise, not a ranking.")
    budget = f"Budget per model: {first.train.epochs} epochs" + (
        f" or {first.train.max_minutes} min, whichever came first" if first.train.max_minutes else "")
    atomic_write_text(files["md"], f"# Model comparison\n\n{note}\n\n{budget}.\n\n{markdown_table(rows, COLUMNS)}\n")
    _grid(outcomes, setup, files["grid"])
    plot_bars({o.name: o.summary for o in outcomes}, "dice", files["bars"])
    sections: list[tuple[str, Any]] = [
        ("Summary", f"<p>{note}</p><p>{budget}. Dice, IoU and HD95 (mm) are mean ± std over held-out cases "
                    f"and foreground classes ({', '.join(v for k, v in labels.items() if k)}).</p>"),
        ("Comparison table", html_table(rows, COLUMNS)),
        ("Image | Mask | Prediction", files["grid"]),
        ("Dice per model", files["bars"]),
    ]
    sections += [(f"Training curves: {o.name}", o.run_dir / "curves.png") for o in outcomes
                 if (o.run_dir / "curves.png").is_file()]
    sections += [(f"Config: {name}", ("pre", cfg.to_yaml())) for name, cfg in configs.items()]
    write_report(files["html"], "medseg model comparison", sections)
    return files


def _grid(outcomes: list[ModelOutcome], setup: Any, out_png: Path) -> None:
    """Rows are models; columns Image | Mask | Prediction for three held-out cases (mid-slices in 3D)."""
    cases = setup.val_cases[:3]
    rows = []
    for o in outcomes:
        panels = []
        for case in cases:
            image, _ = read_image(case.images[0])
            mask, _ = read_image(case.label)
            pred, _ = read_image(output_path(case.images[0], o.pred_dir, True))
            image, mask, pred = (np.squeeze(a) for a in (image, mask, pred))
            if image.ndim == 3 and setup.info.spatial_dims == 2:  # RGB: show it as grey
                image = image.mean(-1)
            if mask.ndim == 3:
                k = mid_slice(mask)
                image, mask, pred = image[..., k], mask[..., k], pred[..., k]
            panels.append((image, mask, pred))
        rows.append((o.name, panels))
    plot_grid(rows, out_png)
