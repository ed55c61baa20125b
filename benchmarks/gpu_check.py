"""Check medseg's CUDA path in one go on a lent GPU and write a markdown report for docs/benchmarks.md.

Sections, each wrapped so that a failure prints ``FAILED: <reason>`` in its row and the script goes on,
each with its own time cap (remaining repetitions are skipped when over):

1. environment: GPU, memory, torch / CUDA / cuDNN versions, ``torch.cuda.is_bf16_supported()``, and what
   ``runtime.resolve_precision("auto", device)`` and ``runtime.resolve_channels_last("auto")`` pick;
2. training throughput: a train step (forward, ``DiceCELoss`` on fp32 logits, backward, AdamW) and an
   inference pass (``inference_mode``, batch norms folded as ``medseg predict`` runs it) of 2D
   ``unet_resnet`` (resnet34, batch 16 of 1×256²), 3D ``unet`` and 3D ``unet_resnet`` (resnet18), batch 2
   of 1×128×128×64, in fp32, bf16 and fp16 autocast (fp16 with a GradScaler), channels_last off and on:
   median step, patches/s, voxels/s, peak memory, and the steps with a non-finite gradient norm (fp16:
   the steps the GradScaler skipped);
3. ``torch.compile`` of the 2D model in bf16 channels_last, in a child process killed after 90 s: compile
   time (the first step), compiled step, and whether it pays for itself over 1,000 steps;
4. DDP: ``torchrun --standalone --nproc_per_node=1 -m medseg train --max-minutes 1`` on generated
   ``ct3d_lesion`` and ``micro2d_small`` data: exit code, wall time, best validation Dice, the device line;
5. CT prediction: ``Predictor(run, device="cuda", precision=p).predict_file`` on a 512×512×300 synthetic
   CT, with ``benchmarks/predict_ct.py``'s run and image, for ``auto`` and ``fp32``: seconds, peak memory.

About 6 minutes on one GPU (``--quick``: about 3), never more than ``--budget`` seconds (default 540).
Run: ``python benchmarks/gpu_check.py [--out gpu_check.md] [--quick]``; the report is printed and
written to ``--out`` after every section, so a run cut short still leaves what it measured.
run it with the device tool as: python benchmarks/gpu_check.py --out $OUT/gpu_check.md
Without a CUDA device it prints ``no CUDA device: nothing to check`` and exits 0; ``--cpu-smoke`` runs
sections 2 and 3 on the CPU at tiny sizes (2D 1×64², 3D 1×32³, 2 repetitions, compile skipped), to
check the code paths on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from medseg import runtime
from medseg.models import build_model, fold_batch_norms

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
PRECISIONS = ("fp32", "bf16", "fp16")
MIB = 2**20
CT_SPACING = (0.8, 0.8, 1.5)
CT_PATCH, CT_TARGET_SPACING = [96, 96, 48], [1.6, 1.6, 3.0]  # predict_ct.py's defaults


# -- plan, report, helpers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Sizes, repetitions and time caps (seconds) of one mode: full, --quick or --cpu-smoke."""

    device: torch.device
    batch2d: int
    size2d: tuple[int, ...]
    batch3d: int
    size3d: tuple[int, ...]
    warmup: int
    reps: int
    row_cap: float
    caps: dict[str, float]
    compile: bool
    ddp_kinds: tuple[str, ...]
    ct_shape: tuple[int, int, int]
    threads: int | None = None


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan for the mode the flags ask for."""
    if args.cpu_smoke:
        return Plan(torch.device("cpu"), 2, (64, 64), 2, (32, 32, 32), 1, 2, 5.0,
                    {"train": 28.0, "compile": 18.0}, False, (), (0, 0, 0), threads=1)
    cuda = torch.device("cuda")
    if args.quick:
        return Plan(cuda, 8, (128, 128), 2, (64, 64, 32), 2, 4, 4.0,
                    {"train": 60.0, "compile": 90.0, "ddp": 160.0, "ct": 60.0}, True, ("micro2d_small",),
                    (256, 256, 120))
    return Plan(cuda, 16, (256, 256), 2, (128, 128, 64), 3, 10, 6.5,
                {"train": 115.0, "compile": 90.0, "ddp": 320.0, "ct": 90.0}, True,
                ("ct3d_lesion", "micro2d_small"), (512, 512, 300))


@dataclass
class Report:
    """Markdown lines, printed as they come and written to ``path`` by :meth:`save`."""

    path: Path | None
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        except OSError as err:
            print(f"could not write {self.path}: {reason(err)}", file=sys.stderr)


@dataclass
class Clock:
    """The whole script's time budget."""

    end: float

    def deadline(self, cap: float, reserve: float = 0.0) -> float:
        """``cap`` seconds from now, but no later than the budget's end less ``reserve``."""
        return min(time.perf_counter() + cap, self.end - reserve)


def reason(err: BaseException) -> str:
    """One line for a FAILED row (no newlines, no table pipes)."""
    text = " ".join(str(err).split()).replace("|", "/") or "(no message)"
    return f"{type(err).__name__}: {text[:240]}"


def cells(*values: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(v) for v in values) + " |"


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a new peak for :func:`peak_mib`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> str:
    """``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak`, in MiB (n/a on a CPU)."""
    return f"{torch.cuda.max_memory_allocated(device) / MIB:.0f}" if device.type == "cuda" else "n/a"


def free_memory(device: torch.device) -> None:
    """Collect garbage and hand cached GPU blocks back, so each row starts alike."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def machine_header() -> str:
    """GPU (or CPU) name and torch version: the first line in every mode."""
    cores = os.cpu_count()
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        count = torch.cuda.device_count()
        return f"machine: {name} (GPU 0 of {count}), {cores} CPU cores; torch {torch.__version__}"
    return f"machine: {cpu_name()} (CPU, no CUDA device), {cores} cores; torch {torch.__version__}"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], None], warmup: int, reps: int, deadline: float,
          device: torch.device) -> list[float]:
    """Seconds of up to ``reps`` synchronised calls after ``warmup`` untimed ones; stops past ``deadline``
    (after at least one timed call)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < reps:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return times


def run_group(cmd: list[str], timeout: float, log: Path, cwd: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, output to ``log``; kill the group after ``timeout``.
    Returns the exit code (None when killed) and the wall time."""
    paths = [str(REPO), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: torchrun's workers, inductor's
            proc.wait()
            code = None
    return code, time.perf_counter() - start


def last_line(log: Path) -> str:
    """The last non-empty line of a log, for a FAILED row."""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return " ".join(lines[-1].split()).replace("|", "/")[:240] if lines else "(no output)"


# -- 1. environment -------------------------------------------------------------------------------------
def environment(report: Report, device: torch.device) -> None:
    """One row per fact; a fact that cannot be read is a FAILED row."""
    props = torch.cuda.get_device_properties(device)

    def memory() -> str:
        free, total = torch.cuda.mem_get_info(device)
        return f"{total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free"

    facts: list[tuple[str, Callable[[], object]]] = [
        ("GPU (torch.cuda.get_device_name)", lambda: torch.cuda.get_device_name(device)),
        ("compute capability, SMs", lambda: f"{props.major}.{props.minor}, {props.multi_processor_count}"),
        ("memory", memory),
        ("torch", lambda: torch.__version__),
        ("CUDA (torch.version.cuda)", lambda: torch.version.cuda),
        ("cuDNN (torch.backends.cudnn.version())", lambda: torch.backends.cudnn.version()),
        ("torch.cuda.is_bf16_supported()", lambda: torch.cuda.is_bf16_supported()),
        ('runtime.resolve_precision("auto", device)', lambda: runtime.resolve_precision("auto", device)),
        ('runtime.resolve_channels_last("auto")', lambda: runtime.resolve_channels_last("auto")),
        ("TF32 allowed: cuDNN convs / matmuls", lambda: f"{torch.backends.cudnn.allow_tf32} / "
                                                       f"{torch.backends.cuda.matmul.allow_tf32}"),
        ("cudnn.benchmark in sections 2-3", lambda: "on (as medseg train sets it unless deterministic)"),
        ("medseg train's start line would say", lambda: runtime.describe(
            device, runtime.resolve_precision("auto", device), runtime.resolve_channels_last("auto"))),
    ]
    report.add(cells("item", "value"))
    report.add(cells("---", "---"))
    for name, fact in facts:
        try:
            value: object = fact()
        except Exception as err:
            value = f"FAILED: {reason(err)}"
        report.add(cells(name, str(value).replace("|", "/")))


# -- 2. training throughput -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """One model of section 2 and its batch."""

    label: str
    name: str
    dims: int
    classes: int
    options: tuple[tuple[str, str], ...]
    batch: int
    size: tuple[int, ...]

    def build(self) -> torch.nn.Module:
        """The model, seeded, so every setting starts from the same weights."""
        torch.manual_seed(0)
        return build_model(self.name, spatial_dims=self.dims, in_channels=1, out_channels=self.classes,
                           **dict(self.options))


def model_specs(plan: Plan) -> list[ModelSpec]:
    """2D unet_resnet (resnet34), 3D unet, 3D unet_resnet (resnet18)."""
    return [
        ModelSpec("2D unet_resnet (resnet34)", "unet_resnet", 2, 2, (), plan.batch2d, plan.size2d),
        ModelSpec("3D unet", "unet", 3, 3, (), plan.batch3d, plan.size3d),
        ModelSpec("3D unet_resnet (resnet18)", "unet_resnet", 3, 3, (("encoder", "resnet18"),),
                  plan.batch3d, plan.size3d),
    ]


@dataclass
class Steps:
    """Train steps run, and how many had a non-finite gradient norm (fp16: were skipped by the scaler)."""

    total: int = 0
    nonfinite: int = 0


def make_train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: runtime.Precision,
                    device: torch.device) -> tuple[Callable[[], None], Steps]:
    """One step as medseg's training loop takes it: autocast forward, fp32 loss, (scaled) backward,
    unscale, gradient norm, AdamW step unless the norm is non-finite (fp16: the GradScaler decides)."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    steps = Steps()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with runtime.autocast(precision, device):
            out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        steps.total += 1
        if precision.grad_scaler:
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            steps.nonfinite += int(scaler.get_scale() < scale)
        elif bool(torch.isfinite(norm)):
            opt.step()
        else:
            steps.nonfinite += 1

    return step, steps


def batch_for(spec: ModelSpec, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random input (through ``runtime.prepare_batch``) and labels of shape (B, 1, *size)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((spec.batch, 1, *spec.size), generator=gen)
    y = torch.randint(0, spec.classes, (spec.batch, 1, *spec.size), generator=gen)
    return runtime.prepare_batch(x, device, spec.dims, channels_last), y.to(device)


def bench_setting(spec: ModelSpec, name: str, channels_last: bool, plan: Plan,
                  deadline: float) -> dict[str, Any]:
    """Train-step and inference timings of one model in one precision and memory format."""
    device = plan.device
    precision = runtime.Precision(name, "gpu_check")  # type: ignore[arg-type]
    model = runtime.prepare_module(spec.build(), device, spec.dims, channels_last).train()
    x, y = batch_for(spec, device, channels_last)
    step, steps = make_train_step(model, x, y, precision, device)
    train_deadline = time.perf_counter() + 0.7 * (deadline - time.perf_counter())
    free_memory(device)
    reset_peak(device)
    train = timed(step, plan.warmup, plan.reps, train_deadline, device)
    result: dict[str, Any] = {"train": train, "train_peak": peak_mib(device), "steps": steps}
    model.eval()
    fold_batch_norms(model)  # as medseg predict runs it
    model = runtime.prepare_module(model, device, spec.dims, channels_last)

    def infer() -> None:
        with torch.inference_mode(), runtime.autocast(precision, device):
            model(x)

    free_memory(device)
    reset_peak(device)
    result["infer"] = timed(infer, plan.warmup, plan.reps, deadline, device)
    result["infer_peak"] = peak_mib(device)
    return result


def unsupported(device: torch.device, name: str) -> str | None:
    """Why precision ``name`` is not run on ``device``, or None."""
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        return "skipped: this GPU lacks bf16"
    if device.type == "cpu" and name == "fp16":
        return "skipped: fp16 is CUDA-only (resolve_precision refuses it on a CPU)"
    return None


def median_cell(times: list[float], reps: int) -> str:
    """Median seconds, with the count when the time cap cut the repetitions short."""
    text = f"{statistics.median(times):.4f}"
    return text if len(times) >= reps else f"{text} (capped: {len(times)} of {reps})"


def setting_row(spec: ModelSpec, name: str, channels_last: bool, plan: Plan, deadline: float) -> str:
    """The table row of one setting: its figures, or why there are none."""
    shape = f"{spec.batch}×1×{'×'.join(map(str, spec.size))}"
    head = (spec.label, shape, name, "on" if channels_last else "off")
    skip = unsupported(plan.device, name)
    if skip is None and time.perf_counter() > deadline:
        skip = "skipped: section time cap"
    if skip is not None:
        return cells(*head, skip, *[""] * 6)
    row_deadline = min(deadline, time.perf_counter() + plan.row_cap)
    try:
        r = bench_setting(spec, name, channels_last, plan, row_deadline)
    except Exception as err:
        return cells(*head, f"FAILED: {reason(err)}", *[""] * 6)
    finally:
        free_memory(plan.device)
    step = statistics.median(r["train"])
    voxels = spec.batch * math.prod(spec.size)
    steps: Steps = r["steps"]
    return cells(*head, median_cell(r["train"], plan.reps), f"{spec.batch / step:.1f}",
                 f"{voxels / step / 1e6:.3g}", r["train_peak"], f"{steps.nonfinite} of {steps.total}",
                 median_cell(r["infer"], plan.reps), r["infer_peak"])


def throughput(report: Report, plan: Plan, deadline: float) -> None:
    """Section 2: every model × precision × memory format."""
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report.add(f"Median of up to {plan.reps} steps after {plan.warmup} warm-up steps (at most "
               f"{plan.row_cap:.0f} s a row); train step = autocast forward, "
               "`DiceCELoss(to_onehot_y=True, softmax=True)` on fp32 logits, backward, gradient norm, AdamW; "
               "fp16 with `GradScaler`. Non-finite: steps (warm-up included) whose gradient norm was "
               "inf/NaN, for fp16 the steps the scaler skipped (a few at the start are it finding its "
               "scale). Inference: `inference_mode`, eval mode, batch norms folded.\n")
    report.add(cells("model", "batch", "precision", "channels_last", "train step (s)", "patches/s",
                     "Mvoxel/s", "train peak (MiB)", "non-finite steps", "inference (s)",
                     "inference peak (MiB)"))
    report.add(cells(*["---"] * 4, *["---:"] * 7))
    for spec in model_specs(plan):
        for name in PRECISIONS:
            for channels_last in (False, True):
                report.add(setting_row(spec, name, channels_last, plan, deadline))


# -- 3. torch.compile -----------------------------------------------------------------------------------
def compile_child(job_json: str) -> None:
    """In a fresh process: eager median step, then the compiled model's first step and median step
    (2D unet_resnet, bf16, channels_last); prints one JSON line."""
    job = json.loads(job_json)
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    device = torch.device(job["device"])
    torch.backends.cudnn.benchmark = device.type == "cuda"
    spec = ModelSpec("2D unet_resnet (resnet34)", "unet_resnet", 2, 2, (), job["batch"], tuple(job["size"]))
    precision = runtime.Precision("bf16", "gpu_check")
    end = time.perf_counter() + job["cap"]
    result: dict[str, Any] = {}
    try:
        for compiled in (False, True):
            model = runtime.prepare_module(spec.build(), device, 2, True).train()
            net = torch.compile(model) if compiled and job["compile"] else model
            x, y = batch_for(spec, device, True)
            step, _ = make_train_step(net, x, y, precision, device)
            t0 = time.perf_counter()
            step()
            sync(device)
            first = time.perf_counter() - t0
            deadline = time.perf_counter() + (end - time.perf_counter()) / (1 if compiled else 3)
            times = timed(step, job["warmup"] - 1, job["reps"], deadline, device)
            key = "compiled" if compiled else "eager"
            result.update({f"{key}_first_s": first, f"{key}_s": statistics.median(times),
                           f"{key}_n": len(times)})
            del model, net, step
            free_memory(device)
    except Exception as err:
        result["error"] = reason(err)
    print(json.dumps(result), flush=True)


def read_child(log: Path) -> dict[str, Any]:
    """The child's JSON line (the last line of its log that parses)."""
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"no result from the child; its last line: {last_line(log)}")


def compile_section(report: Report, plan: Plan, deadline: float) -> None:
    """Section 3: run :func:`compile_child` with a hard time cap, then say whether compiling pays."""
    spec = model_specs(plan)[0]
    cap = deadline - time.perf_counter()
    job = {"device": plan.device.type, "batch": spec.batch, "size": list(spec.size), "warmup": plan.warmup,
           "reps": plan.reps, "compile": plan.compile, "threads": plan.threads, "cap": max(1.0, cap - 15)}
    what = ("torch.compile (inductor)" if plan.compile
            else "compile skipped (--cpu-smoke): eager twice, harness only")
    report.add(f"{spec.label}, batch {spec.batch}×1×{'×'.join(map(str, spec.size))}, bf16, channels_last, "
               f"in a child process killed after {cap:.0f} s; {what}. Compile time = the first compiled "
               "step.\n")
    report.add(cells("eager step (s)", "compile, first step (s)", "compiled step (s)", "speed-up",
                     "pays for itself over 1,000 steps", "break-even (steps)"))
    report.add(cells(*["---:"] * 6))
    with tempfile.TemporaryDirectory(prefix="medseg-gpu-check-compile-") as tmp:
        log = Path(tmp) / "child.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", json.dumps(job)]
        code, wall = run_group(cmd, cap, log, Path(tmp))
        if code is None:
            report.add(cells(f"FAILED: over the {cap:.0f} s cap, killed after {wall:.0f} s", *[""] * 5))
            return
        r = read_child(log)
    if "error" in r or code != 0:
        report.add(cells(f"FAILED: {r.get('error', f'exit code {code}')}", *[""] * 5))
        return
    eager, first, comp = r["eager_s"], r["compiled_first_s"], r["compiled_s"]
    pays = first + 1000 * comp < 1000 * eager
    even = f"{first / (eager - comp):.0f}" if eager > comp else "never"
    report.add(cells(f"{eager:.4f}", f"{first:.1f}", f"{comp:.4f}", f"{eager / comp:.2f}×",
                     "yes" if pays else "no", even))


# -- 4. DDP through torchrun ----------------------------------------------------------------------------
def best_dice(run_dir: Path) -> tuple[str, int]:
    """The best validation Dice in the run's metrics.csv (column found from its header), and the epochs."""
    with (run_dir / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        column = "val_dice" if "val_dice" in header else next((c for c in header if "dice" in c), None)
        if column is None:
            raise RuntimeError(f"no Dice column in metrics.csv ({', '.join(header)})")
        rows = list(reader)
    values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
    return (f"{max(values):.3f} ({column})" if values else f"none validated ({column})"), len(rows)


def device_line(run_dir: Path) -> str:
    """The start-of-run device/precision line of log.txt (the run dir, else ``runs/latest``)."""
    from medseg.run import find_run

    log = run_dir / "log.txt"
    if not log.is_file():
        log = find_run(run_dir.parent / "latest") / "log.txt"
    for line in log.read_text(encoding="utf-8").splitlines():
        if "device " in line and "precision " in line:
            return "yes: " + line.split(" ", 1)[-1].replace("|", "/")
    return "no device/precision line in log.txt"


def ddp_run(kind: str, tmp: Path, deadline: float) -> list[object]:
    """Generate ``kind`` data with the CLI, train on it under torchrun (killed after 150 s, or at
    ``deadline``); the row's cells after the kind."""
    data, runs = tmp / kind, tmp / "runs"
    runs.mkdir(exist_ok=True)
    synth_log = tmp / f"{kind}-synth.log"
    synth = [sys.executable, "-m", "medseg", "data", "synth", "--kind", kind, "--out", str(data),
             "--cases", "8"]
    code, synth_s = run_group(synth, 90, synth_log, tmp)
    if code != 0:
        raise RuntimeError(f"medseg data synth: exit code {code}: {last_line(synth_log)}")
    run_dir, log = runs / kind, tmp / f"{kind}-train.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "medseg", "train", "--data", str(data), "--max-minutes", "1", "--out", str(run_dir)]
    timeout = min(150.0, deadline - time.perf_counter())
    code, wall = run_group(cmd, timeout, log, tmp)
    exit_cell = f"killed at {timeout:.0f} s" if code is None else str(code)
    if code != 0:
        exit_cell += f": {last_line(log)}"
    try:
        dice, epochs = best_dice(run_dir)
    except Exception as err:
        dice, epochs = f"FAILED: {reason(err)}", 0
    try:
        line = device_line(run_dir)
    except Exception as err:
        line = f"FAILED: {reason(err)}"
    return [exit_cell, f"{wall:.0f} (+ {synth_s:.0f} data synth)", epochs, dice, line]


def ddp_section(report: Report, plan: Plan, deadline: float) -> None:
    """Section 4: one torchrun training per data kind, each killed after 150 s."""
    report.add("`python -m torch.distributed.run` (torchrun) `--standalone --nproc_per_node=1 -m medseg "
               "train --data DIR --max-minutes 1 --out RUN` on `medseg data synth --kind KIND --cases 8`; "
               "everything else planned. Wall time includes start-up, planning and the last validation.\n")
    report.add(cells("data", "exit code", "wall (s)", "epochs", "best validation Dice",
                     "device line in log.txt"))
    report.add(cells("---", "---", "---:", "---:", "---:", "---"))
    free_memory(plan.device)
    with tempfile.TemporaryDirectory(prefix="medseg-gpu-check-ddp-") as tmp:
        for kind in plan.ddp_kinds:
            left = deadline - time.perf_counter()
            if left < 80:
                report.add(cells(kind, f"skipped: {left:.0f} s left in the section", *[""] * 4))
                continue
            try:
                report.add(cells(kind, *ddp_run(kind, Path(tmp), deadline)))
            except Exception as err:
                report.add(cells(kind, f"FAILED: {reason(err)}", *[""] * 4))


# -- 5. CT prediction -----------------------------------------------------------------------------------
def predict_once(run: Path, image: Path, precision: str, out: Path, device: torch.device) -> list[object]:
    """Build a Predictor and time one ``predict_file``; the row's cells."""
    from medseg.inference import Predictor

    free_memory(device)
    reset_peak(device)
    t0 = time.perf_counter()
    predictor = Predictor(run, device="cuda", precision=precision)
    t1 = time.perf_counter()
    predictor.predict_file(image, out)
    sync(device)
    seconds = time.perf_counter() - t1
    layout = "on" if predictor.channels_last else "off"
    why = getattr(predictor, "layout", "")  # newer medseg measures the layout and says why
    layout += f" ({why})" if why else ""
    row: list[object] = [str(predictor.precision), layout, f"{t1 - t0:.1f}", f"{seconds:.1f}",
                         peak_mib(device)]
    del predictor
    return row


def ct_section(report: Report, plan: Plan, deadline: float) -> None:
    """Section 5: predict_ct.py's run and synthetic CT, predicted on the GPU in auto and fp32."""
    sys.path.insert(0, str(BENCHMARKS))
    from predict_ct import make_run, synthetic_ct

    with tempfile.TemporaryDirectory(prefix="medseg-gpu-check-ct-") as tmp:
        folder = Path(tmp)
        image = folder / "ct.nii.gz"
        t0 = time.perf_counter()
        synthetic_ct(image, plan.ct_shape, CT_SPACING)
        written = time.perf_counter() - t0
        run = make_run(folder / "run", CT_PATCH, CT_TARGET_SPACING)
        shape = "×".join(map(str, plan.ct_shape))
        report.add(f"Synthetic CT {shape} int16 at {'×'.join(map(str, CT_SPACING))} mm (written in "
                   f"{written:.0f} s), `benchmarks/predict_ct.py`'s run (unet_resnet resnet18, narrow, "
                   f"random weights, patch {'×'.join(map(str, CT_PATCH))}, target spacing "
                   f"{'×'.join(map(str, CT_TARGET_SPACING))} mm); "
                   "`predict_file` = read, preprocess, sliding window, map back, write. The first row also "
                   "pays for cuDNN's kernel choice.\n")
        report.add(cells("precision", "channels_last", "Predictor build (s)", "predict_file (s)",
                         "peak GPU memory (MiB)"))
        report.add(cells("---", "---", "---:", "---:", "---:"))
        for precision in ("auto", "fp32"):
            if time.perf_counter() > deadline:
                report.add(cells(precision, "skipped: section time cap", "", "", ""))
                continue
            try:
                out = folder / f"seg_{precision}.nii.gz"
                report.add(cells(*predict_once(run, image, precision, out, plan.device)))
            except Exception as err:
                report.add(cells(precision, f"FAILED: {reason(err)}", "", "", ""))


# -- main -----------------------------------------------------------------------------------------------
def run_section(report: Report, title: str, body: Callable[[float], None], deadline: float) -> None:
    """A heading, then ``body(deadline)``; a failure is one FAILED line, and the report is saved."""
    report.add(f"\n### {title}\n")
    start = time.perf_counter()
    if deadline - start < 5:
        report.add("FAILED: skipped, the --budget is spent")
    else:
        try:
            body(deadline)
        except Exception as err:  # a section never stops the script
            report.add(f"FAILED: {reason(err)}")
    report.add(f"\n_section time: {time.perf_counter() - start:.0f} s_")
    report.save()


def sections(plan: Plan, report: Report, clock: Clock, smoke: bool) -> None:
    """Every section the mode asks for, in order, each to its own deadline."""
    device, caps = plan.device, plan.caps
    if not smoke:
        run_section(report, "1. Environment", lambda _: environment(report, device), clock.deadline(30))
    reserve = 0.0 if smoke else caps["ddp"] / 2 + caps["ct"]  # later sections keep some time
    run_section(report, "2. Training throughput", lambda d: throughput(report, plan, d),
                clock.deadline(caps["train"], reserve))
    run_section(report, "3. torch.compile", lambda d: compile_section(report, plan, d),
                clock.deadline(caps["compile"], reserve))
    if smoke:
        return
    run_section(report, "4. DDP through torchrun (1 GPU)", lambda d: ddp_section(report, plan, d),
                clock.deadline(caps["ddp"], caps["ct"]))
    run_section(report, "5. CT prediction on the GPU", lambda d: ct_section(report, plan, d),
                clock.deadline(caps["ct"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.md", help="markdown file for the report")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller inputs, one DDP run")
    parser.add_argument("--cpu-smoke", action="store_true", help="sections 2 and 3 on the CPU at tiny sizes")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole script")
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_child:
        compile_child(args.compile_child)
        return
    clock = Clock(time.perf_counter() + args.budget)
    header = machine_header()
    print(header, flush=True)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("no CUDA device: nothing to check")
        return
    plan = make_plan(args)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    mode = "--quick" if args.quick else "full"
    if args.cpu_smoke:
        mode = "--cpu-smoke: CPU, tiny sizes, not a GPU result"
    report = Report(Path(args.out))
    report.add(f"## GPU check: {header.split(': ', 1)[1].split(' (')[0]}\n")  # the GPU's (or CPU's) name
    report.add(f"`python benchmarks/gpu_check.py` ({mode}), {datetime.now():%Y-%m-%d %H:%M}; {header}.")
    sections(plan, report, clock, args.cpu_smoke)
    report.add(f"\n_total: {time.perf_counter() - (clock.end - args.budget):.0f} s_")
    report.save()


if __name__ == "__main__":
    main()
