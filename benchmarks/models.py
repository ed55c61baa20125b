"""medseg models against their MONAI counterparts: train step, inference, peak memory, GFLOP/s.

Matched pairs, one run (fp32, contiguous memory, the machine's default thread count):
- ``unet_resnet(resnet34)`` vs MONAI ``FlexibleUNet(backbone="resnet34")``, 2D, batch 8 of 1x256x256;
- ``unet_resnet(resnet18)`` vs MONAI ``FlexibleUNet(backbone="resnet18")``, 3D, batch 2 of 1x96^3;
- ``unet`` (32, 64, 128, 256, 512) vs MONAI ``BasicUNet`` with the same features (batch norm, ReLU),
  2D, batch 8 of 1x256x256.

What is measured, per model, each in a fresh subprocess so one model's memory cannot hide another's:
- train step: forward, cross-entropy on the main output, backward, AdamW step; median seconds.
- inference: eval mode under ``torch.inference_mode``; median seconds.
- peak memory: the growth of the process's peak resident set size (``ru_maxrss``) from just before
  the first step (model, optimizer and batch already built) to the end of the timed steps. It
  counts everything the steps allocate (activations, gradients, AdamW state, allocator caches),
  not just live tensors.
- GFLOP/s: FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` for one step (forward,
  or forward + backward) divided by the median time.

Run ``python benchmarks/models.py`` (slow on a small CPU) or ``--quick`` for a smoke run with a
smaller batch and size; ``--markdown FILE`` writes the table (used for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

UNET_FEATURES = (32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Spec:
    """One model of one pair: who builds it, and the input it runs on."""

    pair: str
    impl: str  # "medseg" or "MONAI"
    label: str
    spatial_dims: int
    batch: int
    size: int


def build(spec: Spec) -> torch.nn.Module:
    """The model of ``spec``: 1 input channel, 2 classes."""
    from monai.networks.nets import BasicUNet, FlexibleUNet

    from medseg.models import build_model

    d = spec.spatial_dims
    builders: dict[str, Any] = {
        "unet_resnet(resnet34)": lambda: build_model("unet_resnet", spatial_dims=d, encoder="resnet34"),
        "unet_resnet(resnet18)": lambda: build_model("unet_resnet", spatial_dims=d, encoder="resnet18"),
        "unet": lambda: build_model("unet", spatial_dims=d, features=UNET_FEATURES),
        "FlexibleUNet(resnet34)": lambda: FlexibleUNet(1, 2, "resnet34", spatial_dims=d),
        "FlexibleUNet(resnet18)": lambda: FlexibleUNet(1, 2, "resnet18", spatial_dims=d),
        "BasicUNet": lambda: BasicUNet(d, 1, 2, features=(*UNET_FEATURES, UNET_FEATURES[0]), norm="batch", act="relu"),
    }
    return builders[spec.label]()


def pairs(quick: bool) -> list[tuple[Spec, Spec]]:
    """The three matched pairs (smaller batch and size with ``quick``)."""
    b2, s2, b3, s3 = (2, 128, 1, 64) if quick else (8, 256, 2, 96)
    out = []
    for pair, ours, theirs, d, b, s in [
        ("2D resnet34", "unet_resnet(resnet34)", "FlexibleUNet(resnet34)", 2, b2, s2),
        ("3D resnet18", "unet_resnet(resnet18)", "FlexibleUNet(resnet18)", 3, b3, s3),
        ("2D U-Net", "unet", "BasicUNet", 2, b2, s2),
    ]:
        out.append((Spec(pair, "medseg", ours, d, b, s), Spec(pair, "MONAI", theirs, d, b, s)))
    return out


def _main_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def _median(fn: Any, reps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(spec: Spec, mode: str, reps: int) -> dict[str, float]:
    """Time one model in one mode ("train" or "infer") in this process; returns seconds, GFLOPs, MiB."""
    torch.manual_seed(0)
    model = build(spec)
    x = torch.randn(spec.batch, 1, *([spec.size] * spec.spatial_dims))
    y = torch.randint(0, 2, (spec.batch, *x.shape[2:]))
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def fn() -> None:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(_main_output(model(x)), y)
            loss.backward()
            opt.step()

    else:
        model.eval()

        def fn() -> None:
            with torch.inference_mode():
                model(x)

    base = _max_rss_mib()
    seconds = _median(fn, reps)
    peak = _max_rss_mib() - base
    counter = FlopCounterMode(display=False)
    with counter:  # one more step, counted: forward (+ backward; AdamW's element-wise ops are not counted)
        if mode == "train":
            torch.nn.functional.cross_entropy(_main_output(model(x)), y).backward()
        else:
            with torch.inference_mode():
                model(x)
    return {"seconds": seconds, "gflops": counter.get_total_flops() / 1e9, "peak_mib": peak,
            "params": sum(p.numel() for p in model.parameters())}


def measure(spec: Spec, mode: str, reps: int) -> dict[str, float]:
    """Run :func:`worker` in a fresh interpreter (so the peak RSS belongs to this model alone)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(spec)), "--mode", mode, "--reps", str(reps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec.label} {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, reps: int) -> list[dict[str, Any]]:
    rows = []
    for ours, theirs in pairs(quick):
        result: dict[str, Any] = {"pair": ours.pair, "input": f"{ours.batch}x1x" + "x".join([str(ours.size)] * ours.spatial_dims)}
        for spec in (ours, theirs):
            for mode in ("train", "infer"):
                m = measure(spec, mode, reps)
                result[(spec.impl, mode)] = m
                print(f"  {spec.label:24s} {mode:5s} {m['seconds']:.3f} s  {m['gflops'] / m['seconds']:.1f} GFLOP/s  "
                      f"peak +{m['peak_mib']:.0f} MiB", flush=True)
            result[(spec.impl, "label")] = spec.label
        rows.append(result)
    return rows


def table(rows: list[dict[str, Any]], reps: int) -> str:
    """A markdown table: per pair, both models' figures and the medseg/MONAI ratios."""
    lines = [
        f"Median of {reps} steps after one warm-up, fp32, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        "Ratios are medseg / MONAI (time and memory: below 1 means medseg is faster or smaller).",
        "",
        "| pair | input | model | params | train step (s) | train GFLOP/s | train peak (MiB) "
        "| inference (s) | inference GFLOP/s | inference peak (MiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for impl in ("medseg", "MONAI"):
            t, i = r[(impl, "train")], r[(impl, "infer")]
            lines.append(
                f"| {r['pair']} | {r['input']} | {r[(impl, 'label')]} | {t['params']:,} | {t['seconds']:.3f} "
                f"| {t['gflops'] / t['seconds']:.1f} | {t['peak_mib']:.0f} | {i['seconds']:.3f} "
                f"| {i['gflops'] / i['seconds']:.1f} | {i['peak_mib']:.0f} |"
            )
        ours, theirs = (r[("medseg", m)] for m in ("train", "infer")), (r[("MONAI", m)] for m in ("train", "infer"))
        (ot, oi), (tt, ti) = ours, theirs
        lines.append(
            f"| {r['pair']} | | **ratio** | {ot['params'] / tt['params']:.3f} | **{ot['seconds'] / tt['seconds']:.2f}** "
            f"| | {ot['peak_mib'] / max(tt['peak_mib'], 1):.2f} | **{oi['seconds'] / ti['seconds']:.2f}** "
            f"| | {oi['peak_mib'] / max(ti['peak_mib'], 1):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 of 128^2 (2D), 1 of 64^3 (3D), 2 reps")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per measurement (default 5; 2 quick)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    if args.worker:
        print(json.dumps(worker(Spec(**json.loads(args.worker)), args.mode, reps)))
        return
    rows = run(args.quick, reps)
    text = table(rows, reps)
    print(text)
    if args.markdown:
        from medseg.utils import atomic_write_text

        atomic_write_text(args.markdown, text)


if __name__ == "__main__":
    main()
