"""Does bf16 cost accuracy? Same seed, same budget, fp32 against bf16, on the demo data.

1. trains the demo's model (``dual_unet_resnet``, built-in config, 2D nuclei demo data) twice with the
   same seed and number of epochs: once with ``precision=fp32`` and once with ``precision=bf16``;
2. compares their validation Dice (the best epoch's, and the last epoch's);
3. predicts every validation case with the *fp32-trained* model twice, in fp32 and in bf16 autocast,
   and counts the pixels whose label agrees.

The issue's bars: validation Dice within 0.01, and at least 99.9% agreement. On a CPU without native
bf16, bf16 still runs (emulated, much slower). Run: ``python benchmarks/precision_quality.py
[--epochs N] [--markdown docs/benchmarks.md]``; the runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from markdown_section import write_section

from medseg.config import ExperimentConfig, resolve_config
from medseg.data import synthetic
from medseg.data.resolve import resolve_data
from medseg.inference import Predictor
from medseg.training import train

MODEL = "dual_unet_resnet"


def config(root: Path, precision: str, epochs: int | None, seed: int) -> ExperimentConfig:
    train_section: dict[str, object] = {"precision": precision, "seed": seed}
    if epochs is not None:
        train_section["epochs"] = epochs
    return resolve_config(model=MODEL, config="nuclei2d", overrides={"data": {"path": str(root)}, "train": train_section})


def val_dice_per_epoch(run_dir: Path) -> list[float]:
    """Validation Dice of each epoch, from the run's ``metrics.csv``."""
    import csv

    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        return [float(row["val_dice"]) for row in csv.DictReader(handle) if row.get("val_dice")]


def agreement(run_dir: Path, images: list[Path]) -> tuple[float, int]:
    """Fraction of pixels where bf16 and fp32 prediction of the same (fp32-trained) weights agree."""
    fp32 = Predictor(run_dir, precision="fp32")
    bf16 = Predictor(run_dir, precision="bf16")
    a = np.concatenate([fp32.predict(p).labels.ravel() for p in images])
    b = np.concatenate([bf16.predict(p).labels.ravel() for p in images])
    return float((a == b).mean()), int(a.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="default: the built-in config's (the demo's budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", default=None, help="write the table into the '## Precision and quality' section")
    args = parser.parse_args()
    root = synthetic.ensure_demo_data("nuclei2d")
    configs = {p: config(root, p, args.epochs, args.seed) for p in ("fp32", "bf16")}
    images = [c.images[0] for c in resolve_data(configs["fp32"]).val_cases]
    with tempfile.TemporaryDirectory(prefix="medseg-precision-") as tmp:
        results = {p: train(cfg, run_dir=Path(tmp) / p, quiet=True) for p, cfg in configs.items()}
        curves = {p: val_dice_per_epoch(r.run_dir) for p, r in results.items()}
        agree, pixels = agreement(results["fp32"].run_dir, images)
    fp32, bf16 = results["fp32"], results["bf16"]
    lines = [
        f"`python benchmarks/precision_quality.py`: `{MODEL}` (built-in config) on the 2D nuclei demo data, "
        f"seed {args.seed}, {fp32.epochs_done} epochs each, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| training precision | best val Dice (epoch) | last-epoch val Dice | wall time (s) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r.best_dice:.4f} ({r.best_epoch}) | {curves[name][-1]:.4f} | {r.wall_seconds:.0f} |")
    d_best = bf16.best_dice - fp32.best_dice
    d_last = curves["bf16"][-1] - curves["fp32"][-1]
    lines += [
        "",
        f"bf16 − fp32: best val Dice {d_best:+.4f}, last-epoch {d_last:+.4f} (bar: within ±0.01 → "
        f"{'met' if abs(d_best) <= 0.01 and abs(d_last) <= 0.01 else 'NOT met'}).",
        f"bf16 prediction of the fp32-trained model agrees with fp32 prediction on {100 * agree:.3f}% of "
        f"{pixels:,} validation pixels (bar: 99.9% → {'met' if agree >= 0.999 else 'NOT met'}).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        write_section(args.markdown, "## Precision and quality", text)


if __name__ == "__main__":
    main()
