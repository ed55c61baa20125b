"""Device and precision choice, including the fallback when the CPU lacks bf16."""

from __future__ import annotations

import pytest
import torch

from medseg import runtime
from medseg.errors import MedsegError


def test_cpu_bf16_detection_reads_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_CPU_BF16", raising=False)
    assert runtime.cpu_bf16_reason(frozenset({"avx2", "avx512_bf16"})) == "AVX512-BF16"
    assert runtime.cpu_bf16_reason(frozenset({"amx_bf16", "amx_tile"})) == "AMX-BF16"
    assert runtime.cpu_bf16_reason(frozenset({"avx2", "avx512f"})) is None


def test_an_isa_cap_below_bf16_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_CPU_BF16", raising=False)
    flags = frozenset({"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert runtime.cpu_bf16_reason(flags) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert runtime.cpu_bf16_reason(flags) == "AVX512-BF16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert runtime.cpu_bf16_reason(flags) == "AVX512-BF16"


def test_auto_precision_falls_back_to_fp32_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("MEDSEG_CPU_BF16", "0")
    assert runtime.resolve_precision("auto", cpu).name == "fp32"
    monkeypatch.setenv("MEDSEG_CPU_BF16", "1")
    chosen = runtime.resolve_precision("auto", cpu)
    assert chosen.name == "bf16" and chosen.autocast and not chosen.grad_scaler
    assert runtime.resolve_precision("fp32", cpu).name == "fp32"


def test_fp16_on_cpu_and_unknown_names_are_clear_errors() -> None:
    with pytest.raises(MedsegError, match="fp16 is for CUDA"):
        runtime.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(MedsegError, match="not known"):
        runtime.resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_request_without_gpu_is_a_clear_error() -> None:
    assert runtime.resolve_device("auto").type == "cpu"
    with pytest.raises(MedsegError, match="no CUDA GPU"):
        runtime.resolve_device("cuda")


def test_autocast_runs_bf16_matmul_and_fp32_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("MEDSEG_CPU_BF16", "1")
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with runtime.autocast(runtime.resolve_precision("bf16", cpu), cpu):
        assert layer(x).dtype == torch.bfloat16
    with runtime.autocast(runtime.resolve_precision("fp32", cpu), cpu):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # fp32 master weights


def test_channels_last_choice_and_batch_format() -> None:
    cpu = torch.device("cpu")
    assert runtime.resolve_channels_last("auto") is True
    assert runtime.resolve_channels_last("auto") is True  # measured faster in 2D and 3D
    assert runtime.resolve_channels_last(False) is False
    x = runtime.prepare_batch(torch.randn(2, 3, 8, 8), cpu, 2, True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    v = runtime.prepare_batch(torch.randn(1, 2, 4, 4, 4), cpu, 3, True)
    assert v.is_contiguous(memory_format=torch.channels_last_3d)


_MMAP_PROBE = """
import ctypes, torch
from medseg import runtime
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
def mmapped():  # is a new 64 MiB tensor served by its own mmap?
    x = torch.empty(64 * 2**20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd >= 64 * 2**20
states = [mmapped()]
with runtime.network_allocator(torch.device("cpu")):
    states.append(mmapped())
states.append(mmapped())
print(runtime.tune_cpu_allocator())
states.append(mmapped())
print(states)
"""


@pytest.mark.skipif(runtime.platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
@pytest.mark.parametrize("setting, note, states", [
    ("1", "allocator keeps freed memory", "[True, False, True, False]"),
    ("0", "allocator default (MEDSEG_MALLOC_TUNING=0)", "[True, True, True, True]"),
])
def test_cpu_allocator_tuning_keeps_large_blocks_off_mmap(setting: str, note: str, states: str) -> None:
    """Tuned (inside ``network_allocator``, or for good), a 64 MiB tensor comes from the reusable heap,
    not a fresh mmap; leaving the block restores glibc's default; MEDSEG_MALLOC_TUNING=0 opts out."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MEDSEG_MALLOC_TUNING": setting}
    out = subprocess.run([sys.executable, "-c", _MMAP_PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [note, states]


def _weight_grads(model: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    out.float().backward(g)
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_bf16_3d_convs_on_a_two_voxel_axis_are_guarded() -> None:
    """oneDNN's bf16 conv3d weight gradient is garbage (and differs call to call) when the first
    spatial axis is 2 under a 3-tap kernel; the guarded conv gives the same finite gradient twice."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(64, 64, 3, padding=1, bias=False)
    assert runtime.guard_bf16_convs(conv) == 1 and isinstance(conv, torch.nn.Conv3d)
    for _ in range(3):
        x, g = torch.randn(2, 64, 2, 8, 8), torch.randn(2, 64, 2, 8, 8)
        first, second = _weight_grads(conv, x, g), _weight_grads(conv, x, g)
        assert torch.isfinite(first[0]).all() and torch.equal(first[0], second[0])


@pytest.mark.parametrize(("conv", "spatial", "unsafe"), [
    (torch.nn.Conv3d(8, 8, 3, padding=1), (2, 8, 8), True),  # AVX512-BF16: first axis 2 under 3 taps
    (torch.nn.Conv3d(8, 8, 3, padding=1), (3, 8, 8), False),
    (torch.nn.Conv3d(8, 8, 3, stride=2, padding=1), (6, 6, 2), True),  # AMX: last axis strided to 1
    (torch.nn.Conv3d(8, 8, 3, stride=2, padding=1), (6, 6, 3), False),  # ... to 2 is exact
    (torch.nn.Conv3d(8, 8, 3, stride=(2, 2, 1), padding=1), (6, 6, 1), False),  # unstrided there
    (torch.nn.Conv3d(8, 8, 7, stride=2, padding=3), (8, 8, 2), True),
    (torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), (8, 1), True),
    (torch.nn.Conv2d(8, 8, 3, stride=(1, 2), padding=1), (8, 2), True),
    (torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), (8, 3), False),
    (torch.nn.Conv2d(8, 8, 3, padding="same"), (8, 1), False),
    (torch.nn.Conv2d(8, 8, 1, stride=2), (64, 64), False),
])
def test_bf16_unsafe_conv_shapes_are_the_measured_ones(conv: torch.nn.Module, spatial: tuple[int, ...],
                                                       unsafe: bool) -> None:
    assert runtime.bf16_conv_is_unsafe(conv, spatial) is unsafe


@pytest.mark.parametrize(("dims", "shape", "stride"), [(3, (2, 64, 6, 6, 2), 2), (2, (2, 64, 8, 2), (1, 2))])
def test_guarded_convs_strided_to_one_voxel_match_fp32(dims: int, shape: tuple[int, ...], stride: object) -> None:
    """On AMX oneDNN's bf16 kernel returned NaN or ~1e37 here; the guarded conv runs it in fp32."""
    torch.manual_seed(0)
    conv = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(64, 64, 3, stride=stride, padding=1, bias=False)
    x = torch.randn(shape)
    expected = conv(x).detach()
    assert runtime.guard_bf16_convs(conv) == 1
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            assert torch.equal(conv(x), expected)


def test_forced_bf16_trains_a_small_3d_model_with_finite_gradients_every_step() -> None:
    """A 3D ResNet U-Net whose deepest maps are 2 voxels long, bf16 autocast forced: every step's
    gradients are finite (the run would otherwise skip them)."""
    from monai.losses import DiceCELoss

    from medseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet_resnet", spatial_dims=3, in_channels=1, out_channels=2, encoder="resnet18",
                        encoder_options={"widths": [8, 16, 32, 64]}, decoder_channels=[32, 16, 8, 8, 8])
    model = runtime.prepare_module(model, torch.device("cpu"), 3, channels_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.randn(2, 1, 64, 32, 32).contiguous(memory_format=torch.channels_last_3d)  # layer 4: 2×1×1
    y = (torch.rand(2, 1, 64, 32, 32) > 0.9).float()
    for step in range(6):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss_fn((out[0] if isinstance(out, tuple) else out).float(), y).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        assert torch.isfinite(norm), f"non-finite gradients at step {step}"
        optimizer.step()
