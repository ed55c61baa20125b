"""Time to Dice on data medseg did not tune for: medseg's defaults against a tutorial-style MONAI script.

Issue #13: medseg had only been measured on the data it generates for its demo. This benchmark is the
yardstick for that. For each of four generated datasets deliberately unlike the demo (see
``medseg.data.synthetic``: ``micro2d_small`` 16-bit TIFF microscopy with many small cells, Folder
layout; ``derm2d_rgb`` RGB JPEG dermoscopy, Folder layout; ``ct3d_lesion`` anisotropic oblique int16 CT
with small lesions, MSD layout; ``mri3d_2ch`` two-channel MRI with scanner scaling, nnU-Net v2 layout)
it

1. generates the dataset (12 training cases, 3 held-out cases with labels in ``labelsTs/``) under
   ``--out``;
2. runs **medseg exactly as a new user would**: ``medseg train --data DIR --max-minutes M --out RUN``
   and nothing else (a subprocess; medseg's own seed and defaults), then ``medseg predict`` on the
   held-out images (the Python ``Predictor`` in a subprocess for multi-channel cases, which the CLI
   takes one file at a time). A failure (e.g. today's "data.patch_size [128, 128] is 2D ..." on 3D data)
   becomes a row with the error's one line, and the benchmark goes on;
3. runs **a plain MONAI pipeline written the way MONAI's tutorials do it**, in this process, for the
   same wall time M (the clock starts before the ``CacheDataset`` is built and is read after every
   step): 2D ``FlexibleUNet(backbone="resnet34", pretrained=False)``, ``ScaleIntensityd``, 96² crops
   from ``RandCropByPosNegLabeld`` (pos 1, neg 1), 8 crops a step, flips, AdamW 1e-3; 3D
   ``BasicUNet(features=(16, 32, 64, 128, 128, 16))``, native spacing and voxel order,
   ``ScaleIntensityRanged`` -175..250 HU (CT) or ``NormalizeIntensityd(nonzero, channel_wise)`` (MRI),
   64×64×32 pos/neg crops, 2 crops a step, flips, AdamW 2e-3; ``DiceCELoss(to_onehot_y, softmax)``
   both, no validation, the last weights, then ``sliding_window_inference`` (tutorial defaults:
   overlap 0.25, 4 windows a batch) on the held-out images, argmax, written with the image's geometry;
4. scores both sides' files with the **same code**, ``medseg.evaluation.evaluate`` against
   ``labelsTs/``, and reads the mean held-out Dice per class.

The sides alternate which goes first, dataset by dataset, so drifting load on a shared machine hits
both alike. The budgets are alike, not identical: medseg stops after the epoch that passes
``--max-minutes`` (or sooner, at its configured epoch count) and validates as it goes; the MONAI side
stops at the first step past M, in fp32 (the tutorials' default) where medseg picks its own precision.
The wall-time columns say what each side actually took. Printed: the CPU (model name, avx2 / avx512f / avx512_bf16 / amx_bf16), torch version and
threads; a row per dataset and class with medseg's Dice, MONAI's, their ratio and each side's wall
time (training + prediction); then per dataset the ratio of the class-mean Dice and, for 3D data,
whether medseg reaches Dice 0.8 on the smallest class. The table also goes to ``OUT/time_to_dice.md``.
Where ``nnunetv2`` is importable (optional, never a medseg dependency) nnU-Net's plan for the
nnU-Net-layout dataset is printed beside medseg's run config; otherwise one line says it was skipped.

Run: ``python benchmarks/time_to_dice.py [--datasets micro2d_small,ct3d_lesion] [--minutes 5]
[--out runs/time_to_dice] [--seed 0]``; the logs of every medseg command are under ``OUT/work/KIND/``.
``--datasets`` also takes dataset folders of your own (any layout ``medseg train --data`` reads) whose
held-out test images have labels of the same case id in ``labelsTs/``: the same two sides on your data.
A full run is 4 datasets × 2 sides × M minutes, plus prediction.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.data import io, synthetic
from medseg.evaluation import evaluate

DATASETS = ("micro2d_small", "derm2d_rgb", "ct3d_lesion", "mri3d_2ch")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BASIC_UNET_FEATURES = (16, 32, 64, 128, 128, 16)
SMALL_CLASS_BAR = 0.8


@dataclass
class Side:
    """One side's result on one dataset: mean held-out Dice per class name, or the error's one line."""

    name: str
    dice: dict[str, float] = field(default_factory=dict)
    train_s: float = 0.0
    predict_s: float = 0.0
    error: str | None = None
    note: str = ""

    @property
    def wall(self) -> str:
        return f"{self.train_s:.0f} + {self.predict_s:.0f}"


@dataclass
class Dataset:
    """A generated dataset: its root, training and held-out pairs, classes, dimensionality."""

    kind: str
    root: Path
    train: list[tuple[list[Path], Path]]
    test: list[tuple[list[Path], Path]]
    classes: dict[int, str]
    spatial_dims: int
    modality: str = ""

    @property
    def labels_dir(self) -> Path:
        return self.test[0][1].parent


# -- set-up ------------------------------------------------------------------------------------------
def machine_lines() -> list[str]:
    """The CPU's model name and the flags that matter, torch's version and thread count."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [f"CPU: {model} ({os.cpu_count()} logical cores; {have})",
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, GPU: {gpu}"]


def class_map(root: Path) -> dict[int, str]:
    """Foreground classes of a dataset.json in either convention (MSD value -> name, nnU-Net name -> value)."""
    labels = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["labels"]
    pairs = [(int(v), k) for k, v in labels.items()] if all(isinstance(v, int) for v in labels.values()) \
        else [(int(k), v) for k, v in labels.items()]
    return {value: str(name) for value, name in sorted(pairs) if value != 0}


def prepare(kind: str, out: Path, seed: int) -> Dataset:
    """Generate ``kind`` under ``out/data`` and describe it (a folder of the user's: :func:`existing`)."""
    if kind not in DATASETS:
        return existing(Path(kind))
    start = time.perf_counter()
    root = synthetic.generate(kind, out / "data" / kind, seed=seed)
    pairs = synthetic.cases(root)
    dims = io.read_header(pairs["train"][0][0][0]).spatial_dims
    print(f"\n== {kind}: generated {len(pairs['train'])} + {len(pairs['test'])} cases in "
          f"{time.perf_counter() - start:.1f} s at {root}", flush=True)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    modality = str((meta.get("modality") or meta.get("channel_names") or {}).get("0", ""))
    return Dataset(kind, root, pairs["train"], pairs["test"], class_map(root), dims, modality)


def existing(root: Path) -> Dataset:
    """A dataset folder of the user's (any layout ``medseg train --data`` takes) whose test images have
    labels of the same case id in ``labelsTs/``: the held-out cases both sides are scored on."""
    from medseg.data.datasets import discover

    info = discover(root)
    labels = {io.strip_suffix(p.name): p for p in sorted((root / "labelsTs").glob("*")) if p.is_file()}
    test = [(list(c.images), labels[c.id]) for c in info.test_cases if c.id in labels]
    if not test:
        raise SystemExit(f"{root}: no test image with a label of the same case id in {root / 'labelsTs'}; "
                         "put the held-out cases' labels there")
    train = [(list(c.images), c.label) for c in info.cases if c.label is not None]
    print(f"\n== {root.name}: {len(train)} training + {len(test)} held-out cases at {root}", flush=True)
    classes = {v: n for v, n in info.labels.items() if v != 0}
    return Dataset(root.name, root.resolve(), train, test, classes, info.spatial_dims,
                   info.modalities[0] if info.modalities else "")


def case_id(label: Path) -> str:
    return io.strip_suffix(label.name)


# -- scoring (one code path for both sides) -----------------------------------------------------------
def score(side: Side, data: Dataset, predictions: Path) -> None:
    """Mean held-out Dice per class of the files in ``predictions``, by ``medseg.evaluation.evaluate``."""
    result = evaluate(predictions, data.labels_dir, predictions / "evaluation", labels=data.classes)
    if result.errors or result.unmatched_gt:
        first = result.errors[0].message if result.errors else f"no prediction for {result.unmatched_gt[0]}"
        side.error = f"evaluation: {first}"
        return
    dice = result.summary["metrics"]["dice"]
    side.dice = {name: float(dice[name]["mean"]) for name in data.classes.values()}


def smallest_class(data: Dataset) -> str:
    """The foreground class with the fewest voxels in the held-out labels."""
    counts = dict.fromkeys(data.classes, 0)
    for _, label in data.test:
        array, _ = io.read_image(label)
        for value in counts:
            counts[value] += int((array == value).sum())
    return data.classes[min(counts, key=lambda v: counts[v])]


# -- medseg, as a new user runs it -------------------------------------------------------------------
def run_logged(args: list[str], log: Path, timeout_s: float) -> tuple[float, str | None]:
    """Run a command, its output to ``log``; (seconds, None) or (seconds, the error's one line)."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        try:
            proc = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return time.perf_counter() - start, f"killed after {timeout_s:.0f} s (see {log})"
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return seconds, None
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "failed"))] or lines[-1:] or ["(no output)"]
    return seconds, f"exit {proc.returncode}: {errors[-1]}"


MEDSEG = [sys.executable, "-m", "medseg"]
def medseg_predict(data: Dataset, run: Path, predictions: Path, log: Path) -> tuple[float, str | None]:
    """``medseg predict TEST_FOLDER --run RUN -o PRED``: a two-channel run takes each case's
    ``_0000``/``_0001`` files as one input."""
    folder = data.test[0][0][0].parent
    return run_logged([*MEDSEG, "predict", str(folder), "--run", str(run), "-o", str(predictions)], log, 1800)


def medseg_side(data: Dataset, work: Path, minutes: float) -> Side:
    """Train with ``medseg train --data DIR --max-minutes M --out RUN``, predict, score."""
    side, run = Side("medseg"), work / "medseg_run"
    args = [*MEDSEG, "train", "--data", str(data.root), "--max-minutes", f"{minutes:g}", "--out", str(run)]
    side.train_s, side.error = run_logged(args, work / "medseg_train.log", 2 * minutes * 60 + 600)
    if side.error is not None:
        return side
    predictions = work / "medseg_pred"
    side.predict_s, side.error = medseg_predict(data, run, predictions, work / "medseg_predict.log")
    if side.error is None:
        score(side, data, predictions)
    side.note = medseg_plan(run)
    return side


def medseg_plan(run: Path) -> str:
    """What medseg chose, from the run's config.yaml: model, patch, spacing, batch, preset."""
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return "medseg plan: no config.yaml in the run"
    data, train = cfg.get("data", {}), cfg.get("train", {})
    return (f"medseg plan: model {cfg.get('model', {}).get('name')}, patch {data.get('patch_size')}, "
            f"spacing {data.get('spacing')}, preset {data.get('preset')}, batch {train.get('batch_size')}, "
            f"loss {train.get('loss')}, lr {train.get('lr')}, tta {cfg.get('inference', {}).get('tta')}; "
            f"{data_wait(run)}")


DATA_WAIT = re.compile(r"epoch \d+: (\d+) steps in ([\d.]+) s, ([\d.]+) s of it waiting for data")


def data_wait(run: Path) -> str:
    """The share of the training steps' time spent waiting for the next batch, from the run's log.txt."""
    try:
        found = DATA_WAIT.findall((run / "log.txt").read_text(encoding="utf-8"))
    except OSError:
        found = []
    if not found:
        return "data wait: not logged"
    steps, spent, waited = (sum(float(f[i]) for f in found) for i in range(3))
    return f"data wait {waited:.1f} s of {spent:.0f} s in {steps:.0f} steps ({100 * waited / spent:.1f} %)"


# -- MONAI, the way its tutorials do it --------------------------------------------------------------
def monai_setup(data: Dataset) -> dict[str, Any]:
    """Crop size, crops per case, cases per step and the network of the tutorial recipe for ``data``."""
    from monai.networks.nets import BasicUNet, FlexibleUNet

    in_ch, out_ch = len(data.train[0][0]) * io.read_header(data.train[0][0][0]).num_channels, len(data.classes) + 1
    if data.spatial_dims == 2:
        net = FlexibleUNet(in_channels=in_ch, out_channels=out_ch, backbone="resnet34", pretrained=False, spatial_dims=2)
        return {"crop": (96, 96), "samples": 4, "cases": 2, "lr": 1e-3, "net": net}
    net = BasicUNet(spatial_dims=3, in_channels=in_ch, out_channels=out_ch, features=BASIC_UNET_FEATURES)
    return {"crop": (64, 64, 32), "samples": 2, "cases": 1, "lr": 2e-3, "net": net}


def monai_transforms(data: Dataset, crop: tuple[int, ...], samples: int, train: bool) -> Any:
    """LoadImaged, EnsureChannelFirstd, the modality's intensity step; for training pos/neg crops and flips."""
    from monai import transforms as T

    keys = ["image", "label"] if train else ["image"]
    reader = "PILReader" if data.spatial_dims == 2 else None  # MONAI's default reader for TIFF needs itk
    if data.spatial_dims == 2:
        intensity = T.ScaleIntensityd(keys="image")
    elif data.modality == "CT":
        intensity = T.ScaleIntensityRanged(keys="image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)
    else:
        intensity = T.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)
    steps = [T.LoadImaged(keys=keys, reader=reader, image_only=True), T.EnsureChannelFirstd(keys=keys), intensity]
    if train:
        steps += [
            T.SpatialPadd(keys=keys, spatial_size=crop),
            T.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=crop, pos=1, neg=1,
                                     num_samples=samples, image_key="image", image_threshold=0),
            *[T.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(data.spatial_dims)],
        ]
    return T.Compose(steps)


def monai_items(pairs: list[tuple[list[Path], Path]]) -> list[dict[str, Any]]:
    return [{"image": [str(p) for p in images] if len(images) > 1 else str(images[0]), "label": str(label)}
            for images, label in pairs]


def monai_train(data: Dataset, setup: dict[str, Any], budget_s: float, device: torch.device) -> tuple[int, int]:
    """Train until ``budget_s`` seconds have passed since this call; (steps, complete epochs)."""
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss

    start = time.perf_counter()
    transform = monai_transforms(data, setup["crop"], setup["samples"], train=True)
    dataset = CacheDataset(monai_items(data.train), transform, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(dataset, batch_size=setup["cases"], shuffle=True, num_workers=0)
    model = setup["net"].to(device).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=setup["lr"], weight_decay=1e-5)
    steps = epochs = 0
    while True:
        for batch in loader:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"].to(device)), batch["label"].to(device))
            loss.backward()
            optimiser.step()
            steps += 1
            if time.perf_counter() - start >= budget_s:
                return steps, epochs
        epochs += 1


def monai_predict(data: Dataset, setup: dict[str, Any], predictions: Path, device: torch.device) -> None:
    """Sliding-window argmax of every held-out case, written in the image's geometry (as medseg predict does)."""
    from monai.inferers import sliding_window_inference

    transform = monai_transforms(data, setup["crop"], setup["samples"], train=False)
    model = setup["net"].eval()
    with torch.no_grad():
        for (images, label), item in zip(data.test, monai_items(data.test)):
            x = transform({"image": item["image"]})["image"].as_tensor()[None].to(device)
            logits = sliding_window_inference(x, setup["crop"], 4, model)
            labels = torch.argmax(logits, dim=1)[0].cpu().numpy().astype(np.uint8)
            io.write_like(labels, images[0], predictions / f"{case_id(label)}{label.name[len(case_id(label)):]}")


def monai_side(data: Dataset, work: Path, minutes: float, seed: int) -> Side:
    """The tutorial recipe for the same wall time, then prediction and the shared scoring."""
    from monai.utils import set_determinism

    side = Side("MONAI")
    set_determinism(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        start = time.perf_counter()
        setup = monai_setup(data)
        steps, epochs = monai_train(data, setup, minutes * 60, device)
        side.train_s = time.perf_counter() - start
        start = time.perf_counter()
        monai_predict(data, setup, work / "monai_pred", device)
        side.predict_s = time.perf_counter() - start
    except Exception as err:  # a row with the one line, and on to the next dataset
        side.error = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        return side
    finally:
        set_determinism(None)
    side.note = (f"MONAI recipe: {type(setup['net']).__name__}, crop {list(setup['crop'])}, "
                 f"{setup['cases'] * setup['samples']} crops a step, {steps} steps ({epochs} full epochs)")
    score(side, data, work / "monai_pred")
    return side


# -- nnU-Net's plan, where nnunetv2 is installed (optional) -------------------------------------------
def nnunet_plan(data: Dataset, work: Path) -> str:
    """nnU-Net's fingerprint + plan for an nnU-Net-layout dataset, in a scratch nnUNet_raw; one line.

    Optional and untested here (nnunetv2 is not installed in medseg's environment): never a dependency.
    """
    if importlib.util.find_spec("nnunetv2") is None:
        return "nnU-Net plan: nnunetv2 not installed: skipped"
    if not (data.root / "imagesTr").is_dir() or "channel_names" not in json.loads((data.root / "dataset.json").read_text()):
        return "nnU-Net plan: only for the nnU-Net-layout dataset here: skipped"
    base = work / "nnunet"
    raw = base / "raw" / "Dataset913_medseg"
    raw.parent.mkdir(parents=True, exist_ok=True)
    if not raw.exists():
        raw.symlink_to(data.root.resolve(), target_is_directory=True)
    env = {**os.environ, "nnUNet_raw": str(base / "raw"), "nnUNet_preprocessed": str(base / "pre"),
           "nnUNet_results": str(base / "results")}
    for command in (["nnUNetv2_extract_fingerprint", "-d", "913"], ["nnUNetv2_plan_experiment", "-d", "913"]):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return f"nnU-Net plan: {command[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    plans = json.loads((base / "pre" / "Dataset913_medseg" / "nnUNetPlans.json").read_text())
    parts = [f"{name}: patch {c.get('patch_size')}, spacing {c.get('spacing')}, batch {c.get('batch_size')}"
             for name, c in plans.get("configurations", {}).items() if "patch_size" in c]
    return "nnU-Net plan: " + "; ".join(parts)


# -- report ------------------------------------------------------------------------------------------
def _dice(side: Side, name: str) -> str:
    if side.error is not None:
        short = side.error if len(side.error) <= 160 else side.error[:157] + "..."
        return f"failed: {short}"
    return f"{side.dice[name]:.3f}"


def table_rows(data: Dataset, medseg: Side, monai: Side) -> list[str]:
    """One markdown row per class: medseg Dice, MONAI Dice, ratio, each side's wall time."""
    rows = []
    for name in data.classes.values():
        ok = medseg.error is None and monai.error is None and monai.dice[name] > 0
        ratio = f"{medseg.dice[name] / monai.dice[name]:.2f}" if ok else "-"
        rows.append(f"| {data.kind} | {name} | {_dice(medseg, name)} | {_dice(monai, name)} | {ratio} | "
                    f"{medseg.wall} | {monai.wall} |")
    return rows


def summary_line(data: Dataset, medseg: Side, monai: Side) -> str:
    """Ratio of the class-mean Dice; for 3D, whether medseg reaches the bar on the smallest class."""
    if medseg.error is not None or monai.error is not None:
        which = "medseg" if medseg.error is not None else "MONAI"
        line = f"{data.kind}: no ratio ({which} failed)"
    else:
        ours, theirs = np.mean(list(medseg.dice.values())), np.mean(list(monai.dice.values()))
        line = (f"{data.kind}: class-mean Dice medseg {ours:.3f} / MONAI {theirs:.3f} = "
                f"{ours / theirs if theirs > 0 else float('nan'):.2f}")
    if data.spatial_dims == 3:
        small = smallest_class(data)
        reached = medseg.error is None and medseg.dice[small] >= SMALL_CLASS_BAR
        line += f"; smallest 3D class '{small}' >= {SMALL_CLASS_BAR}: {'yes' if reached else 'no'}"
    return line


HEADER = ["| dataset | class | medseg Dice | MONAI Dice | medseg / MONAI | medseg wall (s) | MONAI wall (s) |",
          "|---|---|---:|---:|---:|---:|---:|"]


def write_markdown(out: Path, intro: list[str], rows: list[str], summaries: list[str], notes: list[str]) -> Path:
    path = out / "time_to_dice.md"
    body = [*intro, "", *HEADER, *rows, "", *[f"- {s}" for s in summaries], "", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(body).rstrip() + "\n", encoding="utf-8")
    return path


# -- main --------------------------------------------------------------------------------------------
def run_dataset(kind: str, index: int, args: argparse.Namespace) -> tuple[list[str], str, list[str]]:
    """Both sides on one dataset (which goes first alternates); its table rows, summary and notes."""
    data = prepare(kind, args.out, args.seed)
    work = args.out / "work" / data.kind
    sides: dict[str, Side] = {}
    order = ("medseg", "MONAI") if index % 2 == 0 else ("MONAI", "medseg")
    for name in order:
        print(f"   {name}: {args.minutes:g} min ...", flush=True)
        sides[name] = (medseg_side(data, work, args.minutes) if name == "medseg"
                       else monai_side(data, work, args.minutes, args.seed))
        side = sides[name]
        print(f"   {name}: {side.error or side.dice} ({side.wall} s)", flush=True)
    rows = table_rows(data, sides["medseg"], sides["MONAI"])
    notes = [f"{data.kind}: {n}" for n in (sides["medseg"].note, sides["MONAI"].note, nnunet_plan(data, work)) if n]
    return rows, summary_line(data, sides["medseg"], sides["MONAI"]), notes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, from {', '.join(DATASETS)}, or dataset folders of your own "
                             "(test images with their labels in labelsTs/)")
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall time per side and dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_dice"), help="data, runs and the table")
    parser.add_argument("--seed", type=int, default=0, help="dataset generation and the MONAI side")
    args = parser.parse_args()
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(d for d in set(args.datasets) - set(DATASETS) if not Path(d).is_dir())
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)}; choose from {', '.join(DATASETS)} "
                     "or give a dataset folder")
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    intro = [*machine_lines(), f"{args.minutes:g} min of training per side and dataset, seed {args.seed}; "
             "wall = training + prediction (s); Dice: mean over the held-out cases (medseg.evaluation.evaluate)."]
    print("\n".join(intro), flush=True)
    rows: list[str] = []
    summaries: list[str] = []
    notes: list[str] = []
    for index, kind in enumerate(args.datasets):
        kind_rows, summary, kind_notes = run_dataset(kind, index, args)
        rows += kind_rows
        summaries.append(summary)
        notes += kind_notes
    print("\n" + "\n".join([*HEADER, *rows]))
    print("\n".join(["", *summaries, "", *notes]))
    print(f"\nwrote {write_markdown(args.out, intro, rows, summaries, notes)}")


if __name__ == "__main__":
    main()
