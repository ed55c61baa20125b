"""Device, precision and memory-format choice, in one place.

``auto`` precision means: on CUDA, bf16 where the GPU supports it, else fp16 with a GradScaler;
on a CPU, bf16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32.
Weights stay fp32 masters; losses, metrics, softmax and sliding-window accumulation run in fp32.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from medseg.errors import MedsegError

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) under which it still uses native bf16 instructions
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_reason(flags: frozenset[str] | None = None) -> str | None:
    """Name the native bf16 feature of this CPU, or None when it has none.

    ``MEDSEG_CPU_BF16=0|1`` overrides the detection (for testing and for odd hypervisors); a
    ``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` (e.g. ``AVX2``) means none.
    """
    override = os.environ.get("MEDSEG_CPU_BF16")
    if override is not None:
        return "MEDSEG_CPU_BF16=1" if override.strip() in {"1", "true", "yes"} else None
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    if cap != "ALL" and not cap.startswith(_ONEDNN_BF16_ISAS):
        return None  # oneDNN was told not to use the bf16 instructions the CPU has
    flags = cpu_flags() if flags is None else flags
    for flag in _CPU_BF16_FLAGS:
        if flag in flags:
            return flag.upper().replace("_", "-")
    return None


# glibc's mallopt parameters and defaults (malloc.h, malloc.c)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_tuned = False  # whether tune_cpu_allocator is in effect


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library with ``mallopt`` and ``malloc_trim`` typed, where it is glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _tuning_blocked() -> str | None:
    """Why :func:`tune_cpu_allocator` cannot act here, or None."""
    if os.environ.get("MEDSEG_MALLOC_TUNING", "1").strip().lower() in {"0", "false", "no"}:
        return "MEDSEG_MALLOC_TUNING=0"
    return None if _libc() is not None else "no glibc mallopt"


def allocator_plan(scope: str) -> str:
    """What the allocator will do ``scope`` (e.g. "while the network runs"), for a start-of-run line."""
    blocked = _tuning_blocked()
    return f"allocator default ({blocked})" if blocked else f"allocator keeps freed memory {scope}"


def tune_cpu_allocator(on: bool = True) -> str:
    """Keep freed tensor memory in the process for reuse instead of handing it back to the kernel.

    glibc serves every large allocation (most activations) with a fresh ``mmap`` and unmaps it on
    free, so each training step or sliding-window patch page-faults all of its activations in again,
    zero-filled by the kernel. Turning ``mmap`` off and raising the trim threshold lets freed blocks be
    reused: measured here, a 2D train step 12% and the network part of a 3D prediction about 40%
    faster (docs/benchmarks.md). The price: resident memory stays at its high-water mark, which
    fragmentation raises, so medseg scopes it with :func:`network_allocator`. Process-wide;
    ``on=False`` restores glibc's defaults and hands free pages back (``malloc_trim``);
    ``MEDSEG_MALLOC_TUNING=0`` turns it off for good. Returns the new state, in words.
    """
    global _tuned
    libc, blocked = _libc(), _tuning_blocked()
    if blocked or libc is None:
        return f"allocator default ({blocked or 'no glibc mallopt'})"
    if on:
        _tuned = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
        return "allocator keeps freed memory" if _tuned else "allocator default (mallopt refused)"
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    _tuned = False
    return "allocator default"


@contextlib.contextmanager
def network_allocator(device: torch.device) -> Iterator[None]:
    """:func:`tune_cpu_allocator` for one block (a sliding-window pass) when it is not on already.

    Training wraps its epochs in it and prediction its sliding window: reading and resampling a large
    volume allocates a few big arrays once, where reuse gains nothing and fragmentation of a
    never-trimmed heap raised prediction's peak memory (by one float32 copy of a CT, measured); and
    a program that calls ``train()`` or ``predict()`` gets its process back as it was.
    """
    if device.type != "cpu" or _tuned:
        yield
        return
    tune_cpu_allocator()
    try:
        yield
    finally:
        if _tuned:
            tune_cpu_allocator(on=False)


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device; ``auto`` takes the GPU when there is one."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise MedsegError(f"--device {spec}: no CUDA GPU is visible to torch; use --device cpu or auto")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise MedsegError(f"--device {spec}: not a device name; use auto, cpu, cuda or cuda:N") from err


@dataclass(frozen=True)
class Precision:
    """The resolved numeric precision for one run."""

    name: Literal["fp32", "bf16", "fp16"]
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def autocast(self) -> bool:
        return self.name != "fp32"

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 has fp32's exponent range and does not."""
        return self.name == "fp16"

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_precision(spec: str, device: torch.device) -> Precision:
    """Pick the precision for ``device``; explicit choices are checked against the hardware."""
    spec = (spec or "auto").lower()
    if spec not in {"auto", *_DTYPES}:
        raise MedsegError(f"precision '{spec}' is not known; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if spec == "auto":
            return Precision("bf16", "GPU supports bf16") if bf16_ok else Precision("fp16", "GPU lacks bf16")
        if spec == "bf16" and not bf16_ok:
            raise MedsegError("precision bf16: this GPU does not support bf16; use fp16, fp32 or auto")
        return Precision(spec, "requested")  # type: ignore[arg-type]
    if spec == "fp16":
        raise MedsegError("precision fp16 is for CUDA GPUs; on a CPU use bf16, fp32 or auto")
    reason = cpu_bf16_reason()
    if spec == "auto":
        return Precision("bf16", f"CPU has {reason}") if reason else Precision("fp32", "CPU lacks native bf16")
    if spec == "bf16":
        return Precision("bf16", "requested" if reason else "requested; CPU lacks native bf16, expect it slow")
    return Precision("fp32", "requested")


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Autocast context for the forward pass (a no-op in fp32)."""
    if not precision.autocast:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def memory_format(spatial_dims: int) -> torch.memory_format:
    """channels_last for 2D batches, channels_last_3d for volumes."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def resolve_channels_last(spec: bool | str) -> bool:
    """The unmeasured default: ``auto`` turns channels_last (channels_last_3d for volumes) on.

    Training and prediction measure instead (:func:`medseg.tuning.choose_channels_last`): on an
    AVX-512 CPU channels_last was faster in both directions, on an AVX2 CPU slower in training.
    """
    if isinstance(spec, bool):
        return spec
    if spec != "auto":
        raise MedsegError(f"channels_last '{spec}' is not known; use true, false or auto")
    return True


def bf16_conv_is_unsafe(conv: nn.Conv2d | nn.Conv3d, spatial: tuple[int, ...]) -> bool:
    """Whether oneDNN's bf16 kernel (torch 2.13, CPU) was measured wrong for ``conv`` on an input of
    spatial shape ``spatial``; both cases are a few voxels at the bottom of a network.

    - AVX512-BF16 (AMD EPYC): a 3D convolution whose first spatial axis is longer than 1 and shorter
      than the kernel gives a different weight gradient on every call, with values up to 3e38 and NaN.
    - AMX (Intel Xeon): a 2D or 3D convolution strided on the last axis down to one output voxel
      there (an input 1 or 2 long under stride 2) gives garbage outputs and weight gradients, and in
      a long sweep once corrupted the heap (glibc aborted); unstrided or longer axes were exact.
    """
    kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    if len(spatial) == 3 and 1 < spatial[0] < kernel[0]:
        return True
    if stride[-1] <= 1 or isinstance(conv.padding, str):  # 'same' needs stride 1; 'valid' is not used
        return False
    length = spatial[-1] + 2 * conv.padding[-1] - dilation[-1] * (kernel[-1] - 1) - 1
    return length // stride[-1] + 1 == 1


def _bf16_safe_forward(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor,
                       forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``forward(x)``, outside bf16 autocast (in fp32) where :func:`bf16_conv_is_unsafe` says so."""
    if (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and bf16_conv_is_unsafe(conv, tuple(x.shape[2:]))):
        with torch.autocast("cpu", enabled=False):
            return forward(x.float())
    return forward(x)


class BF16SafeConv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves bf16 autocast on the CPU where oneDNN's bf16 kernel is wrong
    (:func:`bf16_conv_is_unsafe`: a few pixels, so the convolution runs in fp32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bf16_safe_forward(self, x, super().forward)


class BF16SafeConv3d(nn.Conv3d):
    """``nn.Conv3d`` that leaves bf16 autocast on the CPU where oneDNN's bf16 kernel is wrong
    (:func:`bf16_conv_is_unsafe`: such maps are a few voxels, so the convolution runs in fp32).
    A network bottoming out there had non-finite gradients in every step (docs/benchmarks.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bf16_safe_forward(self, x, super().forward)


_SAFE_CONVS: dict[type, type] = {nn.Conv2d: BF16SafeConv2d, nn.Conv3d: BF16SafeConv3d}


def guard_bf16_convs(module: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` / ``nn.Conv3d`` of ``module`` its bf16-safe twin (same weights
    and keys, in place); returns how many. :func:`prepare_module` does it for every medseg network."""
    count = 0
    for m in module.modules():
        safe = _SAFE_CONVS.get(type(m))
        if safe is not None:
            m.__class__ = safe
            count += 1
    return count


def prepare_module(module: nn.Module, device: torch.device, spatial_dims: int, channels_last: bool) -> nn.Module:
    """Move a model to its device and memory format, with its convolutions bf16-safe."""
    guard_bf16_convs(module)
    module = module.to(device)
    if channels_last:
        module = module.to(memory_format=memory_format(spatial_dims))
    return module


def plain(x: torch.Tensor) -> torch.Tensor:
    """Drop a tensor subclass such as MONAI's MetaTensor.

    Every operation on a MetaTensor goes through ``__torch_function__`` to carry metadata along; inside
    a network that costs several times the convolutions themselves on a CPU (measured: a Dual U-Net
    training step 10× slower), so models only ever see plain tensors.
    """
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def prepare_batch(x: torch.Tensor, device: torch.device, spatial_dims: int, channels_last: bool) -> torch.Tensor:
    """A plain tensor on its device (non-blocking from pinned memory) in the chosen memory format."""
    x = plain(x).to(device, non_blocking=device.type == "cuda")
    if channels_last and x.dim() == spatial_dims + 2:
        x = x.contiguous(memory_format=memory_format(spatial_dims))
    return x


def describe(device: torch.device, precision: Precision, channels_last: bool, allocator: str | None = None,
             layout: str = "") -> str:
    """One line for the start of a run: what will run where, and why (``allocator``: what the CPU
    allocator will do, see :func:`allocator_plan`; ``layout``: why channels_last is on or off)."""
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        extra = f", {allocator}" if allocator else ""
        where = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads{extra})"
    why = f" ({layout})" if layout and layout != "set" else ""
    return f"device {where}, precision {precision}, channels_last {'on' if channels_last else 'off'}{why}"
