"""Measure the fingerprint case by case, from the arrays ``check_dataset`` has just read.

Each case is seen once and dropped: what is kept is a record per case, at most
``max_voxels_per_case`` sampled foreground intensities per channel, and the object sizes per class.
The work per case is a few passes over the label (value counts, foreground box, connected
components inside that box) and one over each channel (non-zero box, range, the sample).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from medseg.data.check import CaseArrays
from medseg.data.datasets import DatasetInfo
from medseg.data.io import ImageMeta
from medseg.planning.modality import channel_modalities
from medseg.planning.records import (
    FORMAT_VERSION,
    CaseFingerprint,
    ChannelFingerprint,
    ClassFingerprint,
    Fingerprint,
    IntensityStats,
)


def channels_of(images: list[tuple[np.ndarray, ImageMeta]]) -> list[np.ndarray]:
    """The spatial arrays of every channel, in order: one per file, or the last axis of a multi-channel file."""
    out: list[np.ndarray] = []
    for array, meta in images:
        if array.ndim == meta.spatial_dims:
            out.append(array)
        else:
            flat = array.reshape(*array.shape[: meta.spatial_dims], -1)
            out.extend(flat[..., c] for c in range(flat.shape[-1]))
    return out


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``(start, stop)`` per axis of the True voxels of ``mask``; None when there are none."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def nonzero_box(channels: list[np.ndarray]) -> tuple[tuple[int, int], ...]:
    """The box around voxels non-zero in any channel (nnU-Net's crop-to-nonzero); all of it if none are."""
    mask = np.zeros(channels[0].shape, dtype=bool)
    for channel in channels:
        mask |= channel != 0
    return bounding_box(mask) or tuple((0, int(s)) for s in mask.shape)


def sample_indices(mask: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Coordinates of all True voxels of ``mask`` if there are at most ``k``, else of ``k`` drawn without replacement.

    Works a slab (first axis) at a time, so a large foreground never becomes one huge index array.
    """
    flat = mask.reshape(mask.shape[0], -1)
    per_slab = flat.sum(axis=1, dtype=np.int64)
    n = int(per_slab.sum())
    if n <= k:
        return np.nonzero(mask)
    ranks = np.sort(rng.choice(n, size=k, replace=False))
    ends = np.cumsum(per_slab)
    slabs = np.searchsorted(ends, ranks, side="right")
    picked = []
    starts = np.flatnonzero(np.r_[True, slabs[1:] != slabs[:-1]])
    for lo, hi in zip(starts, [*starts[1:], len(ranks)]):
        s = int(slabs[lo])
        within = ranks[lo:hi] - (ends[s] - per_slab[s])
        picked.append(s * flat.shape[1] + np.flatnonzero(flat[s])[within])
    return np.unravel_index(np.concatenate(picked), mask.shape)


def object_sizes(label: np.ndarray, value: int) -> np.ndarray:
    """Voxel counts of the connected components (faces touching) of ``label == value``."""
    components, n = ndimage.label(label == value)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(components.ravel(), minlength=n + 1)[1:]


def orientation(meta: ImageMeta) -> str:
    """Axis codes of the affine (``"RAS"``, ``"LPS"``, ``"RA"``); ``""`` for formats without geometry."""
    if not meta.has_geometry:
        return ""
    from nibabel.orientations import aff2axcodes

    return "".join(str(c) for c in aff2axcodes(meta.affine))


class Accumulator:
    """The ``on_case`` callback of ``check_dataset`` that builds the :class:`Fingerprint`."""

    def __init__(self, info: DatasetInfo, max_voxels_per_case: int, seed: int) -> None:
        self.info, self.max_voxels, self.seed = info, int(max_voxels_per_case), int(seed)
        self.cases: list[CaseFingerprint] = []
        self.samples: dict[int, list[np.ndarray]] = {}
        self.ranges: dict[int, list[tuple[float, float]]] = {}
        self.whole: dict[int, bool] = {}
        self.counts: dict[int, int] = {}
        self.present: dict[int, int] = {}
        self.sizes: dict[int, list[np.ndarray]] = {}
        self.sizes_mm: dict[int, list[np.ndarray]] = {}

    def __call__(self, arrays: CaseArrays) -> None:
        """Measure one case (skipped when its images are unreadable or their grids differ)."""
        channels = channels_of(arrays.images)
        if not channels or len({c.shape for c in channels}) != 1:
            return
        meta = arrays.images[0][1]
        box = nonzero_box(channels)
        self.cases.append(CaseFingerprint(
            arrays.case.id, tuple(float(s) for s in meta.spacing), tuple(int(s) for s in meta.shape),
            tuple(b - a for a, b in box), tuple(a for a, _ in box), orientation(meta), len(channels), meta.dtype,
        ))
        for c, channel in enumerate(channels):
            self._range(c, channel)
        if arrays.label is not None and arrays.label.shape == channels[0].shape:
            self._label(arrays, channels, float(np.prod(meta.spacing)))

    def _range(self, c: int, channel: np.ndarray) -> None:
        """Value range of a channel, and whether its values are whole numbers (judged on a strided sample)."""
        floating = np.issubdtype(channel.dtype, np.floating)
        lo, hi = (np.nanmin(channel), np.nanmax(channel)) if floating else (channel.min(), channel.max())
        self.ranges.setdefault(c, []).append((float(lo), float(hi)))
        whole = True
        if floating:
            probe = channel.flat[np.linspace(0, channel.size - 1, min(channel.size, 10_000)).astype(np.int64)]
            probe = probe[np.isfinite(probe)]
            whole = bool(np.all(probe == np.rint(probe)))
        self.whole[c] = self.whole.get(c, True) and whole

    def _label(self, arrays: CaseArrays, channels: list[np.ndarray], voxel_mm: float) -> None:
        label = arrays.label
        assert label is not None
        for v, n in arrays.label_counts.items():
            if v in self.info.labels:
                self.counts[v] = self.counts.get(v, 0) + n
        foreground = label > 0
        rng = np.random.default_rng([self.seed, zlib.crc32(arrays.case.id.encode("utf-8"))])
        where = sample_indices(foreground, self.max_voxels, rng)
        for c, channel in enumerate(channels):
            values = channel[where]
            self.samples.setdefault(c, []).append(values)
        box = bounding_box(foreground)
        if box is None:
            return
        crop = label[tuple(slice(a, b) for a, b in box)]
        for v in self.info.labels:
            if v > 0 and arrays.label_counts.get(v, 0):
                sizes = object_sizes(crop, v)
                self.present[v] = self.present.get(v, 0) + 1
                self.sizes.setdefault(v, []).append(sizes)
                self.sizes_mm.setdefault(v, []).append(sizes * voxel_mm)

    def result(self, key: str) -> Fingerprint:
        """The fingerprint of the cases seen so far."""
        channels, warnings = self._channels()
        total = sum(self.counts.values())
        classes = tuple(self._class(v, total) for v in self.info.labels if v > 0)
        info = self.info
        return Fingerprint(
            info.name, str(info.root), info.layout, info.spatial_dims, len(channels),
            dict(info.labels), tuple(self.cases), channels, classes,
            self.counts.get(0, 0) / total if total else 0.0, tuple(warnings), key, self.max_voxels, self.seed,
            FORMAT_VERSION,
        )

    def _channels(self) -> tuple[tuple[ChannelFingerprint, ...], list[str]]:
        n = len(self.ranges) or self.info.num_channels
        stats = [IntensityStats.of(np.concatenate(self.samples[c])) if self.samples.get(c) else None for c in range(n)]
        lows = [min((r[0] for r in self.ranges.get(c, [])), default=None) for c in range(n)]
        highs = [max((r[1] for r in self.ranges.get(c, [])), default=None) for c in range(n)]
        whole = [self.whole.get(c, False) for c in range(n)]
        names, guessed, warnings = channel_modalities(self.info, lows, highs, whole)
        records = tuple(ChannelFingerprint(c, names[c], guessed, stats[c], lows[c], highs[c], whole[c]) for c in range(n))
        return records, warnings

    def _class(self, v: int, total: int) -> ClassFingerprint:
        sizes = np.concatenate(self.sizes[v]) if self.sizes.get(v) else np.zeros(0)
        sizes_mm = np.concatenate(self.sizes_mm[v]) if self.sizes_mm.get(v) else np.zeros(0)
        found = sizes.size > 0
        return ClassFingerprint(
            v, self.info.labels[v], self.counts.get(v, 0), self.counts.get(v, 0) / total if total else 0.0,
            self.present.get(v, 0), int(sizes.size), int(sizes.min()) if found else None,
            float(np.median(sizes)) if found else None, float(sizes_mm.min()) if found else None,
            float(np.median(sizes_mm)) if found else None,
        )
