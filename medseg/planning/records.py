"""The fingerprint's frozen records and their JSON form (stored in the dataset, in runs and in YAML).

``to_dict()`` gives plain JSON types (label values become string keys, tuples lists, NaN never
appears: missing statistics are None); ``from_dict()`` reads it back exactly. ``Fingerprint.to_dict``
also writes a ``summary`` of the derived values for people reading the file; ``from_dict`` ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT_VERSION = 1  # bump when what is measured, or how, changes: stored fingerprints are then recomputed


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _opt(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of one channel's sampled foreground voxels (label > 0), pooled over the cases.

    ``p00_5`` and ``p99_5`` are the 0.5th and 99.5th percentiles: nnU-Net clips CT to them before
    z-scoring. ``num_samples`` is how many voxels they were computed from.
    """

    mean: float
    std: float
    median: float
    min: float
    max: float
    p00_5: float
    p99_5: float
    num_samples: int

    @classmethod
    def of(cls, samples: np.ndarray) -> IntensityStats | None:
        """The statistics of ``samples`` (None when there are none)."""
        values = np.asarray(samples, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None
        p00_5, median, p99_5 = np.percentile(values, [0.5, 50.0, 99.5])
        return cls(float(values.mean()), float(values.std()), float(median), float(values.min()),
                   float(values.max()), float(p00_5), float(p99_5), int(values.size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntensityStats:
        """Inverse of :meth:`to_dict`."""
        return cls(*(float(data[k]) for k in ("mean", "std", "median", "min", "max", "p00_5", "p99_5")),
                   int(data["num_samples"]))


@dataclass(frozen=True)
class ChannelFingerprint:
    """One input channel: its modality (declared or guessed), foreground statistics and value range.

    ``image_min``/``image_max`` span every voxel of every image (air included, unlike ``foreground``);
    ``whole_numbers`` says whether the values are integers (an integer dtype or whole floats).
    """

    index: int
    modality: str
    modality_guessed: bool
    foreground: IntensityStats | None
    image_min: float | None
    image_max: float | None
    whole_numbers: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**self.__dict__, "foreground": None if self.foreground is None else self.foreground.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelFingerprint:
        """Inverse of :meth:`to_dict`."""
        fg = data.get("foreground")
        return cls(int(data["index"]), str(data["modality"]), bool(data["modality_guessed"]),
                   None if fg is None else IntensityStats.from_dict(fg), _opt(data["image_min"], float),
                   _opt(data["image_max"], float), bool(data["whole_numbers"]))


@dataclass(frozen=True)
class CaseFingerprint:
    """One labelled case, in medseg's array axis order (as ``io.read_header`` reports it).

    ``cropped_shape`` is the box around the voxels that are non-zero in any channel (nnU-Net's
    crop-to-nonzero), starting at ``crop_start``. ``orientation`` holds the axis codes of the affine
    (``"RAS"``, ``"LPS"``, ``"RA"`` in 2D), ``""`` for formats without geometry (PNG, JPEG, BMP).
    """

    id: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    cropped_shape: tuple[int, ...]
    crop_start: tuple[int, ...]
    orientation: str
    num_channels: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseFingerprint:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["id"]), _floats(data["spacing"]), _ints(data["shape"]), _ints(data["cropped_shape"]),
                   _ints(data["crop_start"]), str(data["orientation"]), int(data["num_channels"]), str(data["dtype"]))


@dataclass(frozen=True)
class ClassFingerprint:
    """One foreground class: how much of the data it is, and how big its objects are.

    ``fraction``: its voxels over all voxels of all labels. Objects are connected components (faces
    touching: 6-connectivity in 3D, 4 in 2D) counted per case; sizes ``*_voxels`` in voxels and
    ``*_mm`` in mm³ (mm² in 2D), each case's voxel size applied. None when the class appears nowhere.
    """

    value: int
    name: str
    voxels: int
    fraction: float
    num_cases: int
    num_objects: int
    smallest_object_voxels: int | None
    median_object_voxels: float | None
    smallest_object_mm: float | None
    median_object_mm: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassFingerprint:
        """Inverse of :meth:`to_dict`."""
        return cls(int(data["value"]), str(data["name"]), int(data["voxels"]), float(data["fraction"]),
                   int(data["num_cases"]), int(data["num_objects"]), _opt(data["smallest_object_voxels"], int),
                   _opt(data["median_object_voxels"], float), _opt(data["smallest_object_mm"], float),
                   _opt(data["median_object_mm"], float))


@dataclass(frozen=True)
class Fingerprint:
    """What a planner needs to know about a dataset, measured once from its labelled cases.

    ``labels`` maps value to name (0 = background). ``cases``, ``channels`` and ``classes`` (foreground
    only) are the records above; ``background_fraction`` is class 0's share of the label voxels.
    ``warnings`` say what was guessed (e.g. a modality) and how to declare it. ``key`` identifies the
    files it was measured from (paths, sizes, mtimes): a plan that stores it can tell it is stale.
    Intensities come from at most ``max_voxels_per_case`` foreground voxels per case, drawn with ``seed``.
    """

    name: str
    root: str
    layout: str
    spatial_dims: int
    num_channels: int
    labels: dict[int, str]
    cases: tuple[CaseFingerprint, ...]
    channels: tuple[ChannelFingerprint, ...]
    classes: tuple[ClassFingerprint, ...]
    background_fraction: float
    warnings: tuple[str, ...]
    key: str
    max_voxels_per_case: int
    seed: int
    version: int = FORMAT_VERSION

    # -- what the planner reads --------------------------------------------------------------------
    def _per_axis(self, attr: str, reduce: Any) -> tuple[float, ...]:
        rows = [getattr(c, attr) for c in self.cases]
        if not rows or len({len(r) for r in rows}) != 1:
            return ()
        return _floats(reduce(np.asarray(rows, dtype=np.float64), 0))

    @property
    def median_spacing(self) -> tuple[float, ...]:
        """Median spacing per axis (mm): nnU-Net's default target spacing."""
        return self._per_axis("spacing", np.median)

    @property
    def min_spacing(self) -> tuple[float, ...]:
        """Smallest spacing per axis over the cases (mm)."""
        return self._per_axis("spacing", np.min)

    @property
    def max_spacing(self) -> tuple[float, ...]:
        """Largest spacing per axis over the cases (mm)."""
        return self._per_axis("spacing", np.max)

    def spacing_percentile(self, q: float) -> tuple[float, ...]:
        """The ``q``-th percentile of the spacing per axis (mm), over the cases."""
        return self._per_axis("spacing", lambda a, axis: np.percentile(a, q, axis=axis))

    @property
    def spacing_p10(self) -> tuple[float, ...]:
        """10th percentile spacing per axis: nnU-Net's target for the coarse axis of anisotropic data."""
        return self.spacing_percentile(10)

    @property
    def median_shape(self) -> tuple[float, ...]:
        """Median image shape per axis (voxels; may end in .5 for an even number of cases)."""
        return self._per_axis("shape", np.median)

    @property
    def median_cropped_shape(self) -> tuple[float, ...]:
        """Median shape after cropping to the non-zero box, per axis (voxels)."""
        return self._per_axis("cropped_shape", np.median)

    @property
    def median_crop_ratio(self) -> float:
        """Median of cropped over full volume: how much crop-to-nonzero saves (1.0 = nothing)."""
        if not self.cases:
            return 1.0
        return float(np.median([np.prod(c.cropped_shape) / max(1, np.prod(c.shape)) for c in self.cases]))

    @property
    def modalities(self) -> list[str]:
        """The modality of each channel, in order."""
        return [c.modality for c in self.channels]

    @property
    def modality_guessed(self) -> bool:
        """True when some channel's modality was guessed, not declared in dataset.json."""
        return any(c.modality_guessed for c in self.channels)

    @property
    def size_unit(self) -> str:
        """The unit of the ``*_mm`` object sizes: ``mm³`` in 3D, ``mm²`` in 2D."""
        return "mm²" if self.spatial_dims == 2 else "mm³"

    @property
    def num_cases(self) -> int:
        """Labelled cases measured."""
        return len(self.cases)

    def summary(self) -> dict[str, Any]:
        """The derived values above, JSON-ready."""
        return {
            "num_cases": self.num_cases, "median_spacing": list(self.median_spacing),
            "spacing_p10": list(self.spacing_p10), "median_shape": list(self.median_shape),
            "median_cropped_shape": list(self.median_cropped_shape), "median_crop_ratio": self.median_crop_ratio,
            "modalities": self.modalities, "size_unit": self.size_unit,
        }

    # -- JSON -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (also YAML-ready: plain dicts, lists, strings and numbers)."""
        return {
            "version": self.version, "name": self.name, "root": self.root, "layout": self.layout,
            "spatial_dims": self.spatial_dims, "num_channels": self.num_channels,
            "labels": {str(k): v for k, v in self.labels.items()},
            "cases": [c.to_dict() for c in self.cases], "channels": [c.to_dict() for c in self.channels],
            "classes": [c.to_dict() for c in self.classes], "background_fraction": self.background_fraction,
            "warnings": list(self.warnings), "key": self.key, "max_voxels_per_case": self.max_voxels_per_case,
            "seed": self.seed, "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_dict` (``summary`` is recomputed, not read)."""
        return cls(
            str(data["name"]), str(data["root"]), str(data["layout"]), int(data["spatial_dims"]),
            int(data["num_channels"]), {int(k): str(v) for k, v in data["labels"].items()},
            tuple(CaseFingerprint.from_dict(c) for c in data["cases"]),
            tuple(ChannelFingerprint.from_dict(c) for c in data["channels"]),
            tuple(ClassFingerprint.from_dict(c) for c in data["classes"]), float(data["background_fraction"]),
            tuple(str(w) for w in data["warnings"]), str(data["key"]), int(data["max_voxels_per_case"]),
            int(data["seed"]), int(data["version"]),
        )
