"""Datasets over case dicts, with the deterministic part of the transforms cached in memory or on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset

from medseg.data.io import read_header
from medseg.errors import MedsegError

DEFAULT_CACHE_BYTES = 8 * 1024**3  # a third of the 24 GiB machine: room for the model, workers and the OS


def estimate_bytes(dicts: Sequence[dict[str, Any]]) -> int:
    """float32 bytes of the cached (loaded, not yet augmented) images and labels, from file headers."""
    total = 0
    for item in dicts:
        for key in ("image", "label"):
            value = item.get(key)
            if value is None:
                continue
            for path in [value] if isinstance(value, str | os.PathLike) else value:
                try:
                    meta = read_header(path)
                except MedsegError:
                    continue
                total += int(np.prod(meta.shape)) * meta.num_channels * 4
    return total


def build_dataset(
    dicts: Sequence[dict[str, Any]],
    transform: Callable[..., Any],
    cache: str = "memory",
    cache_dir: str | os.PathLike[str] | None = None,
    max_cache_bytes: int = DEFAULT_CACHE_BYTES,
    num_workers: int | None = None,
) -> Dataset:
    """A MONAI dataset over ``dicts``: plain (``none``), ``CacheDataset`` (``memory``) or ``PersistentDataset`` (``disk``).

    ``memory`` caches the deterministic part of ``transform`` for as many cases as fit in
    ``max_cache_bytes`` (8 GiB by default, estimated from the file headers; resampling can change
    the real size); ``disk`` writes it under ``cache_dir`` once and reads it back in later epochs and runs.
    """
    data = list(dicts)
    if cache == "none":
        return Dataset(data, transform)
    if cache == "memory":
        need = estimate_bytes(data)
        rate = 1.0 if need <= max_cache_bytes else max_cache_bytes / need
        workers = num_workers if num_workers is not None else max(1, min(4, os.cpu_count() or 1))
        return CacheDataset(data, transform, cache_rate=rate, num_workers=workers, progress=False)
    if cache == "disk":
        if cache_dir is None:
            raise MedsegError("data.cache 'disk' needs a cache folder; pass cache_dir (the run folder's .cache)")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=str(cache_dir))
    raise MedsegError(f"data.cache {cache!r}: use none, memory or disk")
