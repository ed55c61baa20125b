"""Settings measured on this machine, not assumed: the memory format per direction.

Which memory format is faster depends on the CPU's instruction set (oneDNN's AVX2 kernels and its
AVX-512 ones prefer different layouts), on the direction (a training step runs the backward
convolutions too; measured on an AVX2 CPU, channels_last made training slower and inference faster)
and on the network's shapes. So ``channels_last: auto`` times a few real steps in each format, once
per machine, torch version, thread count, network and input shape, and keeps the faster one. The
answers are cached in ``$MEDSEG_CACHE_DIR/probes.json`` (default ``~/.cache/medseg``), so a second
run with the same network decides instantly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from monai.losses import DiceCELoss

from medseg import runtime
from medseg.models import build_model, fold_batch_norms
from medseg.utils import atomic_write_text

Direction = Literal["train", "infer"]
#: untimed steps before timing (oneDNN picks its kernels for a new shape on the first call), then timed ones
WARMUP, REPEATS = 2, 3
#: channels_last is kept only when it is at least this much faster (otherwise the plain layout, which
#: every op supports natively)
MARGIN = 0.03


@dataclass(frozen=True)
class Layout:
    """A measured (or given) memory-format choice and why."""

    channels_last: bool
    reason: str


def cache_file() -> Path:
    return Path(os.environ.get("MEDSEG_CACHE_DIR", Path.home() / ".cache" / "medseg")) / "probes.json"


def machine_signature(device: torch.device) -> str:
    """What the choice depends on besides the network: the processor, its vector ISA as oneDNN will
    use it, torch and the thread count."""
    if device.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        flags = runtime.cpu_flags()
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        cap = ",".join(os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"))
        where = f"cpu:{runtime.cpu_name()}:{'+'.join(isa)}:{cap}:{torch.get_num_threads()}"
    return f"{where}:torch {torch.__version__}"


def choose_channels_last(
    spec: bool | str, direction: Direction, build_args: dict[str, Any], shape: Sequence[int],
    device: torch.device, precision: runtime.Precision, make: Callable[[], torch.nn.Module] | None = None,
) -> Layout:
    """``spec`` when it is a bool; for ``auto`` the faster layout for ``direction`` at input ``shape``
    (batch, channels, *spatial), measured once and cached. The network timed is ``make()`` (default:
    ``build_model(**build_args)``); ``build_args`` also key the cache."""
    if isinstance(spec, bool):
        return Layout(spec, "set")
    runtime.resolve_channels_last(spec)  # validates the word
    key = _key(direction, build_args, shape, device, precision)
    cached = _read_cache().get(key)
    if cached is not None:
        return Layout(bool(cached["channels_last"]), f"measured faster for {direction} here (cached)")
    make = make or (lambda: build_model(**build_args))
    dims, classes = len(shape) - 2, int(build_args.get("out_channels", 2))
    seconds = {fmt: _time(direction, make, dims, classes, shape, device, precision, fmt)
               for fmt in (False, True)}
    faster = seconds[True] < seconds[False] * (1 - MARGIN)
    _write_cache(key, {"channels_last": faster, "seconds": {str(k): round(v, 5) for k, v in seconds.items()}})
    ratio = seconds[False] / seconds[True]
    return Layout(faster, f"measured for {direction} here: channels_last {ratio:.2f}× the plain layout's speed")


def _key(direction: str, build_args: dict[str, Any], shape: Sequence[int], device: torch.device,
         precision: runtime.Precision) -> str:
    network = json.dumps(build_args, sort_keys=True, default=str)
    text = f"{machine_signature(device)}|{direction}|{precision.name}|{list(shape)}|{network}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _time(direction: Direction, make: Callable[[], torch.nn.Module], dims: int, classes: int, shape: Sequence[int],
          device: torch.device, precision: runtime.Precision, channels_last: bool) -> float:
    """Median seconds of :data:`REPEATS` steps in one layout, after :data:`WARMUP` untimed ones."""
    torch.manual_seed(0)
    model = make()
    if direction == "train":
        step = _train_step(model, shape, classes, device, precision, channels_last, dims)
    else:
        step = _infer_step(model, shape, device, precision, channels_last, dims)
    times = []
    with runtime.network_allocator(device):
        for i in range(WARMUP + REPEATS):
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def _train_step(model: torch.nn.Module, shape: Sequence[int], classes: int, device: torch.device,
                precision: runtime.Precision, channels_last: bool, dims: int) -> Callable[[], None]:
    model = runtime.prepare_module(model, device, dims, channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(0)
    x = runtime.prepare_batch(torch.randn(*shape, generator=g), device, dims, channels_last)
    y = torch.randint(0, classes, (shape[0], 1, *shape[2:]), generator=g).float().to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast(precision, device):
            out = model(x)
        loss_fn((out[0] if isinstance(out, tuple) else out).float(), y).backward()
        optimizer.step()

    return step


def _infer_step(model: torch.nn.Module, shape: Sequence[int], device: torch.device, precision: runtime.Precision,
                channels_last: bool, dims: int) -> Callable[[], None]:
    fold_batch_norms(model.eval())  # as the Predictor runs it
    model = runtime.prepare_module(model, device, dims, channels_last)
    x = runtime.prepare_batch(torch.randn(*shape), device, dims, channels_last)

    def step() -> None:
        with torch.inference_mode(), runtime.autocast(precision, device):
            model(x)

    return step


def _read_cache() -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    return {}


def _write_cache(key: str, value: dict[str, Any]) -> None:
    """Best effort: a read-only home only means the next run measures again."""
    data = _read_cache()
    data[key] = value
    with contextlib.suppress(OSError):
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file(), json.dumps(data, indent=1, sort_keys=True))
