"""Cross-validation end to end, as a user runs it: folds, summary, ensemble against single folds.

Issue #16's yardstick. On a dataset (default: the 2D demo, ``nuclei2d``; ``--kind`` takes any kind
``medseg data synth`` makes, e.g. ``ct3d_lesion``) it

1. runs ``medseg train --model M --folds K --out OUT/cv`` (a subprocess; the demo config, or
   ``--max-minutes`` planned from the data) and prints its cross-validation table: the folds' Dice,
   mean ± std, pooled out of fold, the post-processing chosen and the Dice after it;
2. predicts the held-out test images (``imagesTs``, never seen by any fold) with every fold alone and
   with the fold ensemble (``medseg predict --run OUT/cv``, which also applies the chosen
   post-processing), all through the CLI, and scores each with ``medseg.evaluation.evaluate``;
3. prints the ensemble's held-out Dice against the single folds' mean (the goal: at least that mean),
   and the uncertainty score's rank correlation with per-case Dice from ``cv_summary.json``.

Printed first: the CPU (model name and ISA flags), torch and threads. Run:
``python benchmarks/crossval.py [--model unet_resnet] [--folds 3] [--kind nuclei2d] [--out runs/bench_cv]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medseg import runtime
from medseg.evaluation import evaluate


def medseg(*args: str) -> float:
    """Run the CLI; its wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medseg", *args], check=True)
    return time.perf_counter() - started


def held_out_dice(pred: Path, labels: Path) -> float:
    """Mean Dice over the held-out cases and classes."""
    summary = evaluate(pred, labels).summary
    return float(summary["overall"]["dice"]["mean"])


def machine() -> str:
    flags = runtime.cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{runtime.cpu_name()} ({', '.join(isa) or 'no AVX2'}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet_resnet")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--kind", default="nuclei2d")
    parser.add_argument("--max-minutes", type=float, default=None, help="whole cross-validation's budget (planned run)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cv"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    data = args.out / "data"
    if not (data / "imagesTs").is_dir():
        medseg("data", "synth", "--kind", args.kind, "--out", str(data))
    cv = args.out / "cv"
    train = ["train", "--model", args.model, "--data", str(data), "--folds", str(args.folds), "--out", str(cv)]
    if args.max_minutes is None and args.kind in ("nuclei2d", "organ3d"):
        train += ["--config", args.kind]
    if args.max_minutes is not None:
        train += ["--max-minutes", str(args.max_minutes)]
    seconds = medseg(*train)
    labels = data / "labelsTs"
    single = []
    for k in range(args.folds):
        out = args.out / f"pred_fold{k}"
        medseg("predict", str(data / "imagesTs"), "--run", str(cv / f"fold_{k}"), "-o", str(out))
        single.append(held_out_dice(out, labels))
    ensemble_seconds = medseg("predict", str(data / "imagesTs"), "--run", str(cv), "-o", str(args.out / "pred_ensemble"))
    ensemble = held_out_dice(args.out / "pred_ensemble", labels)
    summary = json.loads((cv / "cv_summary.json").read_text())
    ranking = summary["uncertainty"]
    print(f"\ncross-validation of {args.model}, {args.folds} folds, on {args.kind}: {seconds:.0f} s "
          "(training, out-of-fold prediction, summary)")
    print("held-out Dice, single folds: " + ", ".join(f"{d:.4f}" for d in single) + f" (mean {np.mean(single):.4f})")
    print(f"held-out Dice, fold ensemble: {ensemble:.4f} ({ensemble_seconds:.0f} s for the folder); "
          f"ensemble / mean of folds = {ensemble / np.mean(single):.4f}; "
          f"{'at least' if ensemble >= np.mean(single) else 'BELOW'} the folds' mean")
    for name in summary["dice_postprocessed"]:
        rule = next(r for r in summary["postprocessing"]["classes"].values() if r["name"] == name)
        print(f"post-processing {name}: {rule['operation']}, out-of-fold Dice {rule['dice_before']:.4f} -> "
              f"{rule['dice_after']:.4f}")
    if ranking.get("spearman") is not None:
        print(f"uncertainty score vs per-case Dice over {ranking['cases']} out-of-fold cases: "
              f"Spearman rho {ranking['spearman']:.3f} (p {ranking['p_value']:.2g})")


if __name__ == "__main__":
    main()
