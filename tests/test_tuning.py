"""medseg.tuning: the memory format is measured per direction, cached per machine and network."""

from __future__ import annotations

import json

import pytest
import torch

from medseg import runtime, tuning
from medseg.models import build_model

CPU = torch.device("cpu")
FP32 = runtime.Precision("fp32", "test")
ARGS = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 8, 16]}


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def fake_times(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Replace the timing with fixed seconds (channels_last 0.5 s, plain 1 s); record each call."""
    calls: list[tuple[str, bool]] = []

    def timed(direction, make, dims, classes, shape, device, precision, channels_last):
        calls.append((direction, channels_last))
        return 0.5 if channels_last else 1.0

    monkeypatch.setattr(tuning, "_time", timed)
    return calls


def test_a_given_layout_is_kept_without_measuring(fake_times: list) -> None:
    assert tuning.choose_channels_last(False, "train", ARGS, (2, 1, 32, 32), CPU, FP32).channels_last is False
    assert tuning.choose_channels_last(True, "infer", ARGS, (2, 1, 32, 32), CPU, FP32).channels_last is True
    assert fake_times == []


def test_auto_measures_once_then_reads_the_cache(fake_times: list) -> None:
    first = tuning.choose_channels_last("auto", "train", ARGS, (2, 1, 32, 32), CPU, FP32)
    assert first.channels_last is True and "2.00×" in first.reason
    assert sorted(fake_times) == [("train", False), ("train", True)]
    again = tuning.choose_channels_last("auto", "train", ARGS, (2, 1, 32, 32), CPU, FP32)
    assert again.channels_last is True and "cached" in again.reason
    assert len(fake_times) == 2
    tuning.choose_channels_last("auto", "infer", ARGS, (2, 1, 32, 32), CPU, FP32)  # another direction: measured
    tuning.choose_channels_last("auto", "train", ARGS, (4, 1, 32, 32), CPU, FP32)  # another shape: measured
    assert len(fake_times) == 6
    assert len(json.loads(tuning.cache_file().read_text())) == 3


def test_a_small_gain_keeps_the_plain_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_time", lambda *a: 0.99 if a[-1] else 1.0)
    assert tuning.choose_channels_last("auto", "infer", ARGS, (1, 1, 16, 16), CPU, FP32).channels_last is False


def test_the_isa_cap_is_part_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tuning.machine_signature(CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert tuning.machine_signature(CPU) != plain


def test_an_unwritable_cache_only_measures_again(monkeypatch: pytest.MonkeyPatch, tmp_path, fake_times: list) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(blocker / "cache"))
    assert tuning.choose_channels_last("auto", "train", ARGS, (2, 1, 32, 32), CPU, FP32).channels_last is True


def test_real_timing_runs_both_directions_on_a_tiny_network() -> None:
    for direction in ("train", "infer"):
        make = lambda: build_model(**ARGS)  # noqa: E731
        seconds = tuning._time(direction, make, 2, 2, (2, 1, 32, 32), CPU, FP32, True)
        assert 0 < seconds < 5


def test_an_unknown_word_is_refused() -> None:
    with pytest.raises(runtime.MedsegError, match="channels_last 'fast'"):
        tuning.choose_channels_last("fast", "train", ARGS, (2, 1, 32, 32), CPU, FP32)
