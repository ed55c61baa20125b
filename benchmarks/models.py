"""medseg models against their MONAI counterparts: train step, inference, peak memory, GFLOP/s.

Matched pairs, one run (fp32, contiguous memory, ``--threads`` intra-op threads, default torch's):
- ``unet_resnet(resnet34)`` vs MONAI ``FlexibleUNet(backbone="resnet34")``, 2D, batch 8 of 1x256x256;
- ``unet_resnet(resnet18)`` vs MONAI ``FlexibleUNet(backbone="resnet18")``, 3D, batch 2 of 1x96^3;
- ``unet`` (32, 64, 128, 256, 512) vs MONAI ``BasicUNet`` with the same features (batch norm, ReLU),
  2D, batch 8 of 1x256x256.

What is measured:
- train step: forward, cross-entropy on the main output, backward, AdamW step; best of N seconds
  (other processes on a shared machine only ever add time; the median is printed too).
- inference: eval mode under ``torch.inference_mode``; best of N seconds.
  Both models of a pair are timed in one fresh process with their steps interleaved in ABBA order
  (ours, theirs, theirs, ours, ...), so load from other processes drifts over both alike.
- peak memory: in a fresh process per model and mode, the growth of the process's peak resident set
  size (``ru_maxrss``) over two steps, from just after the model, optimizer and batch are built. It
  counts everything the steps allocate (activations, gradients, AdamW state, allocator caches), not
  just live tensors.
- GFLOP/s: FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` for one step (forward,
  or forward + backward) divided by the best time.

Run ``python benchmarks/models.py [--threads N]`` (slow on a small CPU) or ``--quick`` for a smoke run
with a smaller batch and size; ``--markdown FILE`` writes the table (used for docs/benchmarks.md).
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
from markdown_section import write_section
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


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class Runner:
    """One model, its batch, and one step of ``mode`` ("train": forward, CE, backward, AdamW; "infer")."""

    def __init__(self, spec: Spec, mode: str) -> None:
        torch.manual_seed(0)
        self.model, self.mode = build(spec), mode
        self.x = torch.randn(spec.batch, 1, *([spec.size] * spec.spatial_dims))
        self.y = torch.randint(0, 2, (spec.batch, *self.x.shape[2:]))
        self.model.train(mode == "train")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4) if mode == "train" else None

    def step(self) -> None:
        if self.opt is None:
            with torch.inference_mode():
                self.model(self.x)
            return
        self.opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(_main_output(self.model(self.x)), self.y).backward()
        self.opt.step()

    def gflops(self) -> float:
        """FLOPs of one step: forward (+ backward; AdamW's element-wise ops are not counted)."""
        counter = FlopCounterMode(display=False)
        with counter:
            if self.opt is None:
                with torch.inference_mode():
                    self.model(self.x)
            else:
                torch.nn.functional.cross_entropy(_main_output(self.model(self.x)), self.y).backward()
                self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops() / 1e9


def time_pair(ours: Spec, theirs: Spec, mode: str, reps: int) -> dict[str, dict[str, float]]:
    """Best and median step time of both models, steps interleaved in ABBA order in one process so
    that load from other processes drifts over both alike; one warm-up step each first."""
    runners = {"medseg": Runner(ours, mode), "MONAI": Runner(theirs, mode)}
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        r.step()
    order = list(runners)
    for rep in range(reps):
        for key in order if rep % 2 == 0 else order[::-1]:  # ABBA: neither model always goes first
            t0 = time.perf_counter()
            runners[key].step()
            times[key].append(time.perf_counter() - t0)
    return {
        key: {"seconds": min(times[key]), "median": statistics.median(times[key]), "gflops": r.gflops(),
              "params": sum(p.numel() for p in r.model.parameters())}
        for key, r in runners.items()
    }


def peak_memory(spec: Spec, mode: str) -> float:
    """MiB by which the peak RSS grows over two steps (model, optimizer and batch already built)."""
    r = Runner(spec, mode)
    base = _max_rss_mib()
    r.step()
    r.step()
    return _max_rss_mib() - base


def subprocess_json(*args: str) -> Any:
    """Run this script with ``args`` in a fresh interpreter and return the JSON of its last line."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, reps: int, threads: int) -> list[dict[str, Any]]:
    rows = []
    for ours, theirs in pairs(quick):
        result: dict[str, Any] = {
            "pair": ours.pair, "input": f"{ours.batch}x1x" + "x".join([str(ours.size)] * ours.spatial_dims),
            ("medseg", "label"): ours.label, ("MONAI", "label"): theirs.label,
        }
        for mode in ("train", "infer"):
            specs = json.dumps([asdict(ours), asdict(theirs)])
            timed = subprocess_json("--worker", specs, "--mode", mode, "--reps", str(reps), "--threads", str(threads))
            for impl, spec in (("medseg", ours), ("MONAI", theirs)):
                m = timed[impl]
                m["peak_mib"] = subprocess_json("--memory", json.dumps(asdict(spec)), "--mode", mode,
                                                "--threads", str(threads))
                result[(impl, mode)] = m
                print(f"  {spec.label:24s} {mode:5s} best {m['seconds']:.3f} s (median {m['median']:.3f})  "
                      f"{m['gflops'] / m['seconds']:.1f} GFLOP/s  "
                      f"peak +{m['peak_mib']:.0f} MiB", flush=True)
        rows.append(result)
    return rows


def table(rows: list[dict[str, Any]], reps: int, threads: int) -> str:
    """A markdown table: per pair, both models' figures and the medseg/MONAI ratios."""
    lines = [
        f"Best / median of {reps} steps after one warm-up; medseg and MONAI steps interleaved (ABBA) in one "
        f"process; fp32, {threads} intra-op thread(s), torch {torch.__version__}. GFLOP/s from the best time. "
        "Peak: growth of the peak RSS over two steps, in a fresh process per model. Ratios are medseg / MONAI "
        "(below 1: medseg faster or smaller), time ratios as best / median.",
        "",
        "| pair | input | model | params | train step (s) | train GFLOP/s | train peak (MiB) "
        "| inference (s) | inference GFLOP/s | inference peak (MiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for impl in ("medseg", "MONAI"):
            t, i = r[(impl, "train")], r[(impl, "infer")]
            lines.append(
                f"| {r['pair']} | {r['input']} | {r[(impl, 'label')]} | {t['params']:,} "
                f"| {t['seconds']:.2f} / {t['median']:.2f} | {t['gflops'] / t['seconds']:.1f} | {t['peak_mib']:.0f} "
                f"| {i['seconds']:.2f} / {i['median']:.2f} | {i['gflops'] / i['seconds']:.1f} | {i['peak_mib']:.0f} |"
            )
        ot, oi, tt, ti = r[("medseg", "train")], r[("medseg", "infer")], r[("MONAI", "train")], r[("MONAI", "infer")]
        lines.append(
            f"| {r['pair']} | | **ratio** | {ot['params'] / tt['params']:.3f} "
            f"| **{ot['seconds'] / tt['seconds']:.2f} / {ot['median'] / tt['median']:.2f}** "
            f"| | {ot['peak_mib'] / max(tt['peak_mib'], 1):.2f} "
            f"| **{oi['seconds'] / ti['seconds']:.2f} / {oi['median'] / ti['median']:.2f}** "
            f"| | {oi['peak_mib'] / max(ti['peak_mib'], 1):.2f} |"
        )
    return "\n".join(lines) + "\n"


SECTION = "## Models"
INTRO = """medseg's models against their MONAI counterparts (`python benchmarks/models.py`; its docstring says
what each column measures). Pairs: `unet_resnet(resnet34)` vs `FlexibleUNet(resnet34)` (2D),
`unet_resnet(resnet18)` vs `FlexibleUNet(resnet18)` (3D), `unet` vs `BasicUNet` with the same features
and batch norm + ReLU (2D); 1 input channel, 2 classes.

Like for like: `unet_resnet`'s decoder blocks are FlexibleUNet's (1x1 pre-conv at the low resolution,
nearest up-sampling, concatenation, two conv-BN-ReLU), so the parameter counts differ by under 1% (all of
it the encoders' shortcuts: torchvision's 1x1 projections in medseg, MONAI's parameter-free option A) and
the FLOPs by about 1%. `BasicUNet` keeps 64 channels in its last up-sampling (6% more FLOPs than `unet`),
puts a bias before each batch norm, and its ReLU, configured by name, is not in place: that is where its
extra memory goes. How to read the times: this machine has 2 cores shared with other jobs, so single
steps swing by up to 2x; the steps of a pair are interleaved so the load hits both alike, and the ratios
are the figures to read. With two intra-op threads on busy cores small ops wait at barriers (5-10x
slower on test-sized tensors), so these runs use one thread.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 of 128^2 (2D), 1 of 64^3 (3D), 2 reps")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per model and mode (default 4; 2 quick)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--markdown", default=None, help="write the table into the '## Models' section of this markdown file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 4)
    torch.set_num_threads(args.threads)
    if args.worker:
        ours, theirs = (Spec(**d) for d in json.loads(args.worker))
        print(json.dumps(time_pair(ours, theirs, args.mode, reps)))
        return
    if args.memory:
        print(json.dumps(peak_memory(Spec(**json.loads(args.memory)), args.mode)))
        return
    rows = run(args.quick, reps, args.threads)
    text = table(rows, reps, args.threads)
    print(text)
    if args.markdown:
        write_section(args.markdown, SECTION, f"{INTRO}\n{text}")


if __name__ == "__main__":
    main()
