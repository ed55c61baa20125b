"""Run-directory files: safetensors weights with build metadata, and a resumable training state.

Weights go to ``*.safetensors`` with the model's build arguments and the preprocessing in the
metadata, so ``predict`` rebuilds the exact network without guessing. The optimizer, scheduler,
scaler, epoch and RNG states go to ``state.pt``, which holds only tensors and plain Python values
so that it loads with ``torch.load(..., weights_only=True)``. Every write is atomic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from medseg.errors import MedsegError
from medseg.utils import atomic_path


def save_weights(path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write the model's state dict and JSON-encoded ``metadata`` to a safetensors file atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a medseg safetensors file, JSON values decoded."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise MedsegError(f"{path}: not a readable safetensors file ({err}); re-run training or pick another run") from err
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` (strict) and return the file's metadata."""
    if not path.is_file():
        raise MedsegError(f"{path}: weights file not found; train first or pass the right --run")
    try:
        state = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as err:
        raise MedsegError(f"{path}: cannot read weights ({err}); the file is damaged, use last.safetensors") from err
    model.load_state_dict(state, strict=True)
    return read_metadata(path)


def rng_state() -> dict[str, Any]:
    """Capture torch, CUDA, NumPy and Python RNG states as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": [int(pos), int(has_gauss), float(cached)],
        "python": _python_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the resumable training state atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read ``state.pt`` with ``weights_only=True`` (no arbitrary code can run from the file)."""
    if not path.is_file():
        raise MedsegError(f"{path}: no training state to resume from; start a new run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise MedsegError(f"{path}: cannot read training state ({err}); start a new run") from err
