"""The resumable training state: ``state.pt`` and the RNG states it carries.

The optimizer, scheduler, scaler, epoch and RNG states go to ``state.pt``, which holds only tensors
and plain Python values so that it loads with ``torch.load(..., weights_only=True)``. Weights and
their metadata are the run format's (:mod:`medseg.run`), which inference reads without this module.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.utils import atomic_path


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
