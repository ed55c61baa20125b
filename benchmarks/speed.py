"""Speed of medseg's precision and memory-format choices against MONAI's default, side by side.

Matched pairs, one run:
- medseg ``unet_resnet(resnet34)`` vs MONAI ``FlexibleUNet(resnet34)``, 2D, batch 8 of 1×256×256;
- medseg ``unet_resnet(resnet18)`` vs MONAI ``FlexibleUNet(resnet18)``, 3D, batch 2 of 1×96³ (``--3d``).

For each, the train step (forward, fp32 cross-entropy, backward, AdamW) and inference
(``inference_mode``) are timed for MONAI's default (fp32, contiguous, the C library's default
allocator), then ``medseg.runtime.tune_cpu_allocator`` is applied, as ``medseg train`` does while its
epochs run and ``medseg predict`` while its network runs, and MONAI's default is timed again (so the table separates what the
allocator gives from what medseg's settings give), then every precision and memory format medseg
offers on this machine; medseg's inference runs with its batch norms folded into the convs, as
``medseg predict`` runs it. It prints median (and best) times, ratios to MONAI's default, achieved GFLOP/s against
a single conv layer's measured peak in the same precision, and how often each setting's inference argmax
agrees with fp32's on the same weights. The last medseg row is its default, as ``medseg train`` and
``medseg predict`` choose it on this machine (auto precision; each direction's memory format measured
by :mod:`medseg.tuning`), and the run ends with one line: the default against MONAI's default and
against MONAI with the same allocator setting. Run: ``python benchmarks/speed.py [--quick] [--3d]``;
to stand in for a CPU without AVX-512 on one that has it, cap oneDNN and ATen:
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MEDSEG_CPU_BF16=0 python benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.nets import FlexibleUNet
from torch.utils.flop_counter import FlopCounterMode

from medseg import runtime, tuning
from medseg.models import build_model, fold_batch_norms


@dataclass
class Setting:
    name: str
    precision: str
    channels_last: bool
    infer_channels_last: bool | None = None  # None: as in training

    @property
    def infer_layout(self) -> bool:
        return self.channels_last if self.infer_channels_last is None else self.infer_channels_last


@dataclass
class Timing:
    median: float
    best: float


def time_calls(fn: Callable[[], object], reps: int, warmup: int = 2) -> Timing:
    """Median and best of ``reps`` timed calls after ``warmup`` untimed ones (the first calls include
    oneDNN's kernel selection and allocator growth). Ratios use the median; the best shows how far
    other processes on a shared machine pushed it."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times))


def flops(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    counter = FlopCounterMode(display=False)
    model.train(train)
    with counter:
        out = model(x)
        if train:
            out = out[0] if isinstance(out, tuple) else out
            out.float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def conv_peak(spatial_dims: int, precision: runtime.Precision, channels_last: bool, reps: int) -> float:
    """GFLOP/s of one 3×3 conv (64→64 channels) in this precision: the attainable ceiling."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1) if spatial_dims == 2 else torch.nn.Conv3d(64, 64, 3, padding=1)
    shape = (8, 64, 128, 128) if spatial_dims == 2 else (2, 64, 32, 32, 32)
    x = torch.randn(shape)
    if channels_last:
        conv = conv.to(memory_format=runtime.memory_format(spatial_dims))
        x = x.contiguous(memory_format=runtime.memory_format(spatial_dims))
    cpu = torch.device("cpu")
    with torch.inference_mode():
        with runtime.autocast(precision, cpu):
            t = time_calls(lambda: conv(x), reps).best
        fl = flops(conv, x, train=False)
    return fl / t / 1e9


def time_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: runtime.Precision,
               setting: Setting, spatial_dims: int, reps: int, fold: bool) -> tuple[Timing, Timing]:
    """Timings of one train step (forward, backward, AdamW) and of one inference pass
    (with ``fold``: of a copy whose batch norms are folded into the convs), each in its layout."""
    cpu = torch.device("cpu")
    fmt = runtime.memory_format(spatial_dims)
    x_infer = x.contiguous(memory_format=fmt) if setting.infer_layout else x
    if setting.channels_last:
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with runtime.autocast(precision, cpu):
            out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()

    t_train = time_calls(step, reps)
    infer_model = copy.deepcopy(model).eval()
    if fold:  # as medseg's Predictor runs it
        fold_batch_norms(infer_model)
    infer_model = infer_model.to(memory_format=fmt if setting.infer_layout else torch.contiguous_format)

    def infer() -> None:
        with torch.inference_mode(), runtime.autocast(precision, cpu):
            infer_model(x_infer)

    return t_train, time_calls(infer, 3 * reps)  # a pass is short: more of them for a stable median


def bench_pair(spatial_dims: int, encoder: str, batch: int, size: int, reps: int, settings: list[Setting]) -> list[dict]:
    """MONAI's default first (untuned, then with medseg's allocator setting), then each medseg setting."""
    cpu = torch.device("cpu")
    shape = (batch, 1, *([size] * spatial_dims))
    x = torch.randn(shape)
    y = torch.randint(0, 2, (batch, *shape[2:]))
    makers = {
        "MONAI": lambda: FlexibleUNet(1, 2, backbone=encoder, pretrained=False, spatial_dims=spatial_dims),
        "medseg": lambda: build_model("unet_resnet", spatial_dims=spatial_dims, in_channels=1, out_channels=2, encoder=encoder),
    }
    default = Setting("default", "fp32", False)
    plan = [("MONAI", default, False), ("MONAI", default, True)] + [("medseg", s, True) for s in settings]
    rows: list[dict] = []
    baseline: dict[str, float] = {}  # MONAI's default medians
    reference: dict[str, torch.Tensor] = {}
    for who, s, tuned in plan:
        if tuned:
            runtime.tune_cpu_allocator()  # on from here, as while medseg's epochs or sliding window run
        torch.manual_seed(0)
        model = makers[who]()
        precision = runtime.resolve_precision(s.precision, cpu)
        t_train, t_infer = time_model(model, x, y, precision, s, spatial_dims, reps, fold=who == "medseg")
        if not baseline:
            baseline = {"train": t_train.median, "infer": t_infer.median}
        labels = predict_labels(makers[who], x, precision, s.infer_layout, spatial_dims, fold=who == "medseg")
        reference.setdefault(who, labels)  # each model's first row is fp32
        rows.append({
            "model": f"{who} {s.name}" + (" + allocator" if who == "MONAI" and tuned else ""),
            "precision": precision.name, "channels_last": s.channels_last, "name": s.name, "tuned": tuned,
            "train_s": t_train.median, "infer_s": t_infer.median,
            "train_best_s": t_train.best, "infer_best_s": t_infer.best,
            "train_speedup": baseline["train"] / t_train.median, "infer_speedup": baseline["infer"] / t_infer.median,
            "train_gflops": flops(model, x, train=True) / t_train.median / 1e9,
            "infer_gflops": flops(model, x, train=False) / t_infer.median / 1e9,
            "conv_peak_gflops": conv_peak(spatial_dims, precision, s.channels_last, max(3, reps)),
            "agreement": float((labels == reference[who]).float().mean()),
        })
        print(_fmt(rows[-1]), flush=True)
    return rows


def predict_labels(make: Callable[[], torch.nn.Module], x: torch.Tensor, precision: runtime.Precision, channels_last: bool,
                   spatial_dims: int, fold: bool) -> torch.Tensor:
    """Inference argmax of freshly seeded weights (the same for every row of one model) in this setting."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = make().eval()
    if fold:
        fold_batch_norms(model)
    if channels_last:
        model = model.to(memory_format=runtime.memory_format(spatial_dims))
        x = x.contiguous(memory_format=runtime.memory_format(spatial_dims))
    with torch.inference_mode(), runtime.autocast(precision, cpu):
        return model.eval()(x).float().argmax(1)


def _fmt(r: dict) -> str:
    return (f"| {r['model']:<35} | {r['train_s']:.3f} s ({r['train_best_s']:.3f}) | **{r['train_speedup']:.2f}×** "
            f"| {r['infer_s']:.3f} s ({r['infer_best_s']:.3f}) | **{r['infer_speedup']:.2f}×** "
            f"| {r['train_gflops']:.0f} / {r['infer_gflops']:.0f} | {r['conv_peak_gflops']:.0f} | {100 * r['agreement']:.3f}% |")


def default_setting(spatial_dims: int, encoder: str, shape: tuple[int, ...]) -> Setting:
    """What ``medseg train`` / ``medseg predict`` pick here: auto precision, each direction's layout
    measured by :func:`medseg.tuning.choose_channels_last` (cached per machine)."""
    cpu = torch.device("cpu")
    precision = runtime.resolve_precision("auto", cpu)
    args = {"name": "unet_resnet", "spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 2, "encoder": encoder}
    train = tuning.choose_channels_last("auto", "train", args, shape, cpu, precision)
    infer = tuning.choose_channels_last("auto", "infer", args, shape, cpu, precision)
    print(f"medseg default here: precision {precision}; train: {train.reason}; inference: {infer.reason}")
    return Setting(f"default ({precision.name}, {_layout(train.channels_last)} / {_layout(infer.channels_last)})",
                   "auto", train.channels_last, infer.channels_last)


def _layout(channels_last: bool) -> str:
    return "CL" if channels_last else "NC"


def summary(rows: list[dict]) -> str:
    """The one-line verdict: medseg's default against MONAI's default and MONAI with the same allocator."""
    monai, tuned = rows[0], rows[1]
    default = next(r for r in rows if r["model"].startswith("medseg default"))
    return (f"medseg default vs MONAI default: train {monai['train_s'] / default['train_s']:.2f}x, "
            f"inference {monai['infer_s'] / default['infer_s']:.2f}x; vs MONAI with the same allocator: "
            f"train {tuned['train_s'] / default['train_s']:.2f}x, inference {tuned['infer_s'] / default['infer_s']:.2f}x")


def machine_line() -> str:
    flags = runtime.cpu_flags()
    features = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    return (f"CPU: {runtime.cpu_name()} ({os.cpu_count()} logical cores; {features})"
            + (f"; capped by {', '.join(caps)}" if caps else "")
            + f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer repetitions (smoke run)")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="also run the 3D pair (slow on a CPU)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    auto = runtime.resolve_precision("auto", cpu)
    print(f"{machine_line()}; auto precision here: {auto}")
    batch, size = (2, 128) if args.quick else (8, 256)
    settings = [Setting("fp32 NCHW", "fp32", False), Setting("fp32 channels_last", "fp32", True)]
    if auto.name == "bf16":
        settings.append(Setting("auto (bf16) channels_last", "auto", True))
        settings.append(Setting("auto (bf16) NCHW", "auto", False))
    settings.append(default_setting(2, "resnet34", (batch, 1, size, size)))
    reps = 2 if args.quick else args.reps
    header = ("| model, setting | train step, median (best) | × MONAI | inference, median (best) | × MONAI "
              "| achieved GFLOP/s train / infer | conv peak GFLOP/s | argmax = fp32 |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"\n2D: unet_resnet(resnet34) vs FlexibleUNet(resnet34), batch {batch} of 1×{size}²\n{header}")
    rows = bench_pair(2, "resnet34", batch, size, reps, settings)
    lines = [f"2D: {summary(rows)}"]
    if args.three_d:
        batch3, size3 = (1, 48) if args.quick else (2, 96)
        settings3 = [Setting("fp32 NCDHW", "fp32", False), Setting("fp32 channels_last_3d", "fp32", True)]
        if auto.name == "bf16":
            settings3 += [Setting("auto (bf16) NCDHW", "auto", False), Setting("auto (bf16) channels_last_3d", "auto", True)]
        settings3.append(default_setting(3, "resnet18", (batch3, 1, size3, size3, size3)))
        print(f"\n3D: unet_resnet(resnet18) vs FlexibleUNet(resnet18), batch {batch3} of 1×{size3}³\n{header}")
        rows3 = bench_pair(3, "resnet18", batch3, size3, max(2, reps - 2), settings3)
        lines.append(f"3D: {summary(rows3)}")
    print("\n" + "\n".join(lines))
    print(lines[0].removeprefix("2D: "))


if __name__ == "__main__":
    main()
