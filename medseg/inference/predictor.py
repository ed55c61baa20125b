"""Inference: a run directory in, label maps with the input's exact geometry out.

The preprocessing is the one stored with the run's weights; nothing has to be repeated. Each case is
loaded, oriented, resampled and normalised by the run's deterministic ``infer`` transforms, segmented
by MONAI sliding-window inference with Gaussian blending (optionally averaged over flips), and mapped
back to the original voxel grid before it is written with the input's geometry.

Mapping back (``_to_original``) uses the two affines MONAI tracks: the loaded image's and the
network grid's. Where the network grid is the original one re-ordered (orientation only, 2D) the label
map is permuted and flipped exactly. Where the run resampled (a target spacing), the *logits* are
interpolated linearly onto the original grid and the argmax taken there, as nnU-Net does; this is
smoother and more accurate than nearest-neighbour resampling of the label map. It runs slab by slab
along the last axis, so no full-resolution float copy per class is ever made (unless probability
maps are asked for): peak memory is the sliding window's (image, logits and weight map at network
resolution) plus the uint8 label map.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, LoadImaged
from scipy import ndimage

from medseg import runtime
from medseg.config import InferenceConfig, load_config
from medseg.data import io, transforms
from medseg.errors import MedsegError
from medseg.models import build_model, fold_batch_norms
from medseg.models.summary import count_parameters
from medseg.training.checkpoint import load_weights, read_metadata

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Output extension for inputs whose own format cannot hold a label map (lossy, DICOM).
_OUTPUT_EXT = {"": ".nii.gz", ".dcm": ".nii.gz", ".jpg": ".png", ".jpeg": ".png"}
#: Voxels per slab when mapping logits back to the original grid (bounds the temporaries).
SLAB_VOXELS = 1 << 21


@dataclass
class Prediction:
    """A label map in the input's voxel order (as :func:`medseg.data.io.read_image` gives it).

    ``meta`` is the input's :class:`~medseg.data.io.ImageMeta` (shape, spacing, LPS origin and
    direction, RAS affine), so ``io.write_like(p.labels, p.meta, out)`` writes it in the input's
    geometry. ``probabilities`` (classes first, float32) only when asked for.
    """

    labels: np.ndarray
    source: Path
    meta: io.ImageMeta | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)


def find_run(run: str | Path | None) -> Path:
    """The run directory to use: ``run`` or ``runs/latest``, checked for a config."""
    path = Path(run) if run else Path("runs") / "latest"
    if not (path / "config.yaml").is_file():
        hint = "train one first (medseg train) or pass --run DIR" if run is None else "pass a run directory made by medseg train"
        raise MedsegError(f"--run {path}: no config.yaml there; {hint}")
    return path.resolve()


def split_name(path: Path) -> tuple[str, str]:
    """Split ``scan.nii.gz`` into ``("scan", ".nii.gz")``; a folder has no extension."""
    name = path.name
    for suffix in (*IMAGE_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def output_path(source: Path, out: Path | None, multiple: bool) -> Path:
    """``<name>_seg.<same extension>`` beside the input, or inside ``out`` when it is a folder.

    DICOM series get NIfTI in the series' geometry and JPEG inputs PNG (JPEG would alter labels).
    ``out`` is a folder when several inputs are predicted, when it exists as one, or when it has no
    image extension.
    """
    name, ext = split_name(source)
    ext = _OUTPUT_EXT.get(ext.lower(), ext)
    default = f"{name}_seg{ext}"
    if out is None:
        return source.parent / default
    if multiple or out.is_dir() or not split_name(out)[1]:
        return out / default
    return out


def _is_prediction(path: Path) -> bool:
    """Files medseg predict wrote (``*_seg``, ``*_seg_prob_*``): never inputs of a folder prediction."""
    name = split_name(path)[0]
    return name.endswith("_seg") or "_seg_prob_" in name


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files stay files; a DICOM series folder stays one input; other folders give their images.

    Folders give their image files (not earlier ``*_seg`` outputs) and DICOM series sub-folders, sorted.
    """
    result: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise MedsegError(f"{path}: input not found; give image files, folders or a DICOM series folder")
        if path.is_dir() and not io.is_dicom_series(path):
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not _is_prediction(p)
            )
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and io.is_dicom_series(p))
            if not files and not subdirs:
                raise MedsegError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) or DICOM series inside")
            result.extend(files + subdirs)
        else:
            result.append(path)
    return result


def _user_error(path: Path, err: BaseException) -> MedsegError:
    """The MedsegError inside MONAI's wrapped transform error, or one naming the file and the cause."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, MedsegError):
            return cause
        cause = cause.__cause__ or cause.__context__
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    reason = " ".join(str(root).split())[:300]
    return MedsegError(f"{path}: cannot read or preprocess it ({type(root).__name__}: {reason}); check the file")


class Predictor:
    """Segment images with a trained run: ``Predictor(run_dir).predict(path_or_array)``.

    Model, weights and preprocessing are built once and reused for every input. Options left at
    ``None`` come from the run's ``inference`` config.
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        checkpoint: str = "best",
        tta: bool | None = None,
        overlap: float | None = None,
        largest_component: bool | None = None,
        save_probabilities: bool | None = None,
        channels_last: bool | str = "auto",
        sw_batch_size: int | None = None,
    ) -> None:
        self.run_dir = find_run(run_dir)
        cfg = load_config(self.run_dir / "config.yaml")
        weights = self.run_dir / f"{checkpoint}.safetensors"
        if not weights.is_file():
            raise MedsegError(f"{weights}: not found; use --checkpoint last, or wait for the run to save one")
        meta = read_metadata(weights)
        if "build_args" not in meta or "preprocess" not in meta:
            raise MedsegError(f"{weights}: no medseg metadata (build_args, preprocess); it was not written by medseg train")
        self.weights = weights
        self.preprocess: dict[str, Any] = meta["preprocess"]
        self.labels = {int(k): v for k, v in self.preprocess["labels"].items()}
        self.num_classes = len(self.labels)
        self.spatial_dims = int(self.preprocess["spatial_dims"])
        self.patch_size = [int(p) for p in self.preprocess["patch_size"]]
        updates = {"tta": tta, "overlap": overlap, "largest_component": largest_component,
                   "save_probabilities": save_probabilities, "sw_batch_size": sw_batch_size}
        self.inference: InferenceConfig = InferenceConfig.model_validate(
            {**cfg.inference.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
        self.device = runtime.resolve_device(device)
        self.precision = runtime.resolve_precision(precision, self.device)
        self.channels_last = runtime.resolve_channels_last(channels_last, self.spatial_dims, self.device)
        self.model = build_model(**dict(meta["build_args"]))
        load_weights(weights, self.model)
        self.model.eval()
        self.num_parameters = count_parameters(self.model)  # as trained, before folding
        fold_batch_norms(self.model)  # inference only: one pass fewer over every activation map
        self.model = runtime.prepare_module(self.model, self.device, self.spatial_dims, self.channels_last)
        self.transform = transforms.build_transforms(
            "infer", preset=self.preprocess["preset"], spatial_dims=self.spatial_dims, patch_size=self.patch_size,
            spacing=self.preprocess["spacing"], ct_window=tuple(self.preprocess["ct_window"]), label=False,
        )
        # the same steps without the loader, for arrays already in memory
        self._after_load = Compose([t for t in self.transform.transforms if not isinstance(t, LoadImaged)])

    def describe(self) -> str:
        """One line: which run, on what hardware."""
        allocator = runtime.allocator_plan("while the network runs")
        return f"run {self.run_dir}; {runtime.describe(self.device, self.precision, self.channels_last, allocator)}"

    # -- network -----------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(self.precision, self.device):
            return self.model(runtime.prepare_batch(x, self.device, self.spatial_dims, self.channels_last)).float()

    def _stitch_device(self, image: torch.Tensor) -> torch.device:
        """Where sliding-window outputs are summed: the model's device unless a GPU lacks room for them."""
        if self.device.type != "cuda":
            return self.device
        need = 4 * (self.num_classes + 2) * image[0].numel()
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if need < free // 2 else torch.device("cpu")

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Blended logits ``(classes, *spatial)`` (fp32, CPU) of a preprocessed image, averaged over flips with TTA."""
        x = (image.as_tensor() if isinstance(image, MetaTensor) else image)[None]  # no MetaTensor bookkeeping
        stitch = self._stitch_device(x)
        x = x.to(stitch)
        flips: list[tuple[int, ...]] = [()]
        if self.inference.tta:
            axes = range(2, 2 + self.spatial_dims)
            flips = [c for r in range(self.spatial_dims + 1) for c in itertools.combinations(axes, r)]
        with runtime.network_allocator(self.device):
            total = self._blend(x, stitch, flips)
        if len(flips) > 1:
            total.div_(len(flips))
        return total[0].cpu()

    def _blend(self, x: torch.Tensor, stitch: torch.device, flips: list[tuple[int, ...]]) -> torch.Tensor:
        """Sum of the sliding-window logits over ``flips``."""
        total: torch.Tensor | None = None
        for dims in flips:
            out = torch.as_tensor(sliding_window_inference(
                torch.flip(x, dims) if dims else x, roi_size=self.patch_size,
                sw_batch_size=self.inference.sw_batch_size, predictor=self._forward, overlap=self.inference.overlap,
                mode=self.inference.blend, sw_device=self.device, device=stitch,
            ))
            if dims:
                out = torch.flip(out, dims)  # a copy; the flipped one is freed below
            if total is None:
                total = out
            else:
                total.add_(out)
            del out
        assert total is not None
        return total

    # -- one input ---------------------------------------------------------------------------------
    def predict(
        self, source: str | Path | Sequence[str | Path] | np.ndarray, affine: np.ndarray | None = None
    ) -> Prediction:
        """Segment one file, DICOM folder, list of channel files (one case), or array.

        The label map is in the (first) input's own voxel order with ``meta`` its geometry. An array
        is taken in medseg's reader convention (spatial axes in voxel order; channels first when there
        are several) with an optional RAS ``affine`` (4×4, or ``spatial_dims + 1`` square; identity
        by default); it is preprocessed in memory, exactly as a file would be after loading.
        """
        with runtime.inference_context():
            if isinstance(source, np.ndarray):
                path = Path("<array>")
                data, meta = self._array_input(source, affine)
                prepared = self._after_load(data)
            else:
                channels = [Path(s) for s in source] if isinstance(source, list | tuple) else [Path(source)]
                path = channels[0]
                meta = io.read_header(path)
                try:
                    prepared = self.transform({"image": [str(c) for c in channels] if len(channels) > 1 else str(path)})
                except Exception as err:
                    raise _user_error(path, err) from None
            image: MetaTensor = prepared.pop("image")
            in_ch = int(self.preprocess["in_channels"])
            if image.shape[0] != in_ch:
                raise MedsegError(
                    f"{path}: has {image.shape[0]} channel(s) but the run was trained on {in_ch}; "
                    "give an image of the training modality"
                )
            net_affine = np.asarray(torch.as_tensor(image.affine), dtype=np.float64)
            orig_affine = np.asarray(torch.as_tensor(image.meta.get("original_affine", net_affine)), dtype=np.float64)
            resampled = bool(image.applied_operations)
            logits = self.logits(image)
            del image, prepared
            labels, probabilities = self._to_original(logits, net_affine, orig_affine, tuple(meta.shape), resampled)
            del logits
        if self.inference.largest_component:
            keep_largest_components(labels, [k for k in self.labels if k != 0])
        return Prediction(labels, path, meta, probabilities)

    def _array_input(self, array: np.ndarray, affine: np.ndarray | None) -> tuple[dict[str, Any], io.ImageMeta]:
        """A loaded-image dict (what ``LoadImaged`` gives) and the geometry of an in-memory array."""
        dims = self.spatial_dims
        data = np.asarray(array, dtype=np.float32)
        if data.ndim not in (dims, dims + 1):
            raise MedsegError(
                f"array of shape {data.shape}: give {dims} spatial axes (and channels first when there are several)"
            )
        ras = _affine_nd(np.eye(dims + 1) if affine is None else np.asarray(affine, dtype=np.float64), dims)
        full = np.eye(4)
        full[:dims, :dims], full[:dims, 3] = ras[:dims, :dims], ras[:dims, dims]
        shape = tuple(int(n) for n in data.shape[-dims:])
        lps = np.diag([-1.0, -1.0, *[1.0] * (dims - 1)]) @ ras
        spacing = np.linalg.norm(lps[:dims, :dims], axis=0)
        meta = io.ImageMeta(
            path=Path("<array>"), format="array", shape=shape, spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in lps[:dims, dims]), direction=lps[:dims, :dims] / spacing, affine=ras,
            num_channels=data.shape[0] if data.ndim > dims else 1,
        )
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(full), meta={
            "original_affine": full, "spatial_shape": np.asarray(shape), "space": "RAS",
            "original_channel_dim": 0 if data.ndim > dims else "no_channel", "filename_or_obj": "<array>",
        })
        return {"image": tensor}, meta

    def _to_original(
        self, logits: torch.Tensor, net_affine: np.ndarray, orig_affine: np.ndarray,
        orig_shape: tuple[int, ...], resampled: bool,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities, if asked) on the original grid from logits on the network grid."""
        dims = self.spatial_dims
        mapping = np.eye(dims + 1)
        if resampled:  # original voxel index -> network voxel index, through world coordinates
            mapping = np.linalg.solve(_affine_nd(net_affine, dims), _affine_nd(orig_affine, dims))
        axes = _axis_map(mapping, tuple(logits.shape[1:]), orig_shape)
        want_prob = self.inference.save_probabilities
        if axes is not None:  # orientation only: exact re-ordering of the network's output
            labels = _reorder(_argmax(logits), axes).numpy()
            probabilities = None
            if want_prob:
                probabilities = _reorder(torch.softmax(logits, 0), axes, channel=True).numpy()
            return labels, probabilities
        # Scores relative to the background have the same argmax and softmax as the logits, and linear
        # interpolation commutes with that subtraction: one channel fewer to resample (one in all for 2 classes).
        relative = logits[1:].sub_(logits[:1])
        labels_out = torch.empty(orig_shape, dtype=_label_dtype(self.num_classes))
        prob_out = np.empty((self.num_classes, *orig_shape), dtype=np.float32) if want_prob else None
        for index, slab in _resample_slabs(relative, mapping, orig_shape):
            labels_out[index] = _argmax(slab, implicit_zero=True)
            if prob_out is not None:
                full = torch.cat([torch.zeros_like(slab[:1]), slab])
                prob_out[(slice(None), *index)] = torch.softmax(full, 0).numpy()
        return labels_out.numpy(), prob_out

    # -- files ---------------------------------------------------------------------------------------
    def predict_file(self, source: Path | Sequence[Path], out: Path) -> Path:
        """Segment ``source`` (a file, DICOM folder, or one file per channel) and write ``out`` in its geometry.

        With probabilities on, ``<out name>_prob_<class><ext>`` float32 maps go beside it (TIFF for 2D
        PNG/JPEG outputs, which cannot hold floats).
        """
        result = self.predict(source)
        assert result.meta is not None
        io.write_like(result.labels, result.meta, out)
        if result.probabilities is not None:
            name, ext = split_name(out)
            if ext.lower() in (".png", ".jpg", ".jpeg"):
                ext = ".tif"
            for k, label in self.labels.items():
                if k:
                    prob_path = out.with_name(f"{name}_prob_{label}{ext}")
                    io.write_like(result.probabilities[k], result.meta, prob_path, dtype=np.float32)
        return out


# -- mapping back to the original grid ------------------------------------------------------------------
def _affine_nd(affine: np.ndarray, dims: int) -> np.ndarray:
    """The ``dims``-D part of an affine (MONAI keeps 4×4 affines for 2D images too)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape[0] == dims + 1:
        return a
    out = np.eye(dims + 1)
    out[:dims, :dims] = a[:dims, :dims]
    out[:dims, dims] = a[:dims, -1]
    return out


def _axis_map(mapping: np.ndarray, net_shape: tuple[int, ...], orig_shape: tuple[int, ...]) -> list[tuple[int, bool]] | None:
    """``[(network axis, flipped)]`` per original axis when ``mapping`` only permutes and flips axes, else None."""
    dims = len(orig_shape)
    rot, shift = mapping[:dims, :dims], mapping[:dims, dims]
    if not np.allclose(np.abs(rot), np.round(np.abs(rot)), atol=1e-5) or not np.allclose(np.abs(rot).sum(0), 1, atol=1e-5):
        return None
    axes: list[tuple[int, bool]] = []
    for j in range(dims):  # original axis j is network axis i, maybe reversed
        i = int(np.argmax(np.abs(rot[:, j])))
        flipped = rot[i, j] < 0
        n = orig_shape[j]
        if net_shape[i] != n or abs(shift[i] - ((n - 1) if flipped else 0)) > 1e-3:
            return None
        axes.append((i, flipped))
    return axes


def _reorder(x: torch.Tensor, axes: list[tuple[int, bool]], channel: bool = False) -> torch.Tensor:
    """Network-grid array to original voxel order, by :func:`_axis_map`'s permutation and flips."""
    c = int(channel)
    x = x.permute(*range(c), *(i + c for i, _ in axes))
    flips = [j + c for j, (_, flipped) in enumerate(axes) if flipped]
    return (torch.flip(x, flips) if flips else x).contiguous()


def _label_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int16


def _argmax(scores: torch.Tensor, implicit_zero: bool = False) -> torch.Tensor:
    """Index of the largest score over axis 0 (the first one on ties), as uint8 (int16 above 256 classes).

    ``implicit_zero``: a channel of zeros (the background) stands before ``scores``. A running
    comparison, because ``argmax`` over a leading axis is slow on the CPU and returns int64.
    """
    classes = scores.shape[0] + int(implicit_zero)
    labels = torch.zeros(scores.shape[1:], dtype=_label_dtype(classes))
    if scores.shape[0] == 0:
        return labels
    best = scores[0].clamp(min=0) if implicit_zero else scores[0].clone()
    first = int(implicit_zero)
    if implicit_zero:
        labels[scores[0] > 0] = 1
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        labels[better] = k + first
        torch.maximum(best, scores[k], out=best)
    return labels


def _separable(mapping: np.ndarray) -> list[tuple[int, float, float]] | None:
    """``[(network axis, scale, offset)]`` per original axis when each original axis maps to one network axis.

    That is the case for MONAI's orientation and spacing steps (a permutation, flips and per-axis
    scaling); then linear interpolation is a product of 1D interpolations and needs no sampling grid.
    """
    dims = mapping.shape[0] - 1
    rot = mapping[:dims, :dims]
    nonzero = np.abs(rot) > 1e-6 * max(1.0, float(np.abs(rot).max()))  # float noise of the affine solve
    if not (nonzero.sum(0) == 1).all() or not (nonzero.sum(1) == 1).all():
        return None
    axes = []
    for j in range(dims):
        i = int(np.argmax(nonzero[:, j]))
        axes.append((i, float(rot[i, j]), float(mapping[i, dims])))
    return axes


def _lerp_weights(n: int, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper neighbour indices and the upper weight of fractional indices (border padding)."""
    u = coords.clamp(0, n - 1)
    lo = u.floor().long().clamp(max=n - 1)
    return lo, (lo + 1).clamp(max=n - 1), u - lo


def _lerp_axis(x: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``axis`` at fractional indices ``coords`` (border padding)."""
    lo, hi, w = _lerp_weights(x.shape[axis], coords)
    shape = [1] * x.dim()
    shape[axis] = -1
    out = x.index_select(axis, lo)
    return out.add_(x.index_select(axis, hi).sub_(out).mul_(w.to(x.dtype).reshape(shape)))


def _resample_slabs(
    values: torch.Tensor, mapping: np.ndarray, out_shape: tuple[int, ...]
) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
    """Linearly interpolate ``values`` (channels first, network grid) at the original grid, slab by slab.

    ``mapping`` takes original voxel indices to network voxel indices; outside the network grid the
    border value is used (as MONAI's ``Spacingd`` pads). Yields ``(index, (channels, *slab))`` for
    slabs along the last original axis. Axis-aligned mappings (MONAI's) are interpolated one axis
    at a time; anything else goes through ``grid_sample``. Both equal MONAI's bilinear ``Invertd``.
    """
    dims = len(out_shape)
    step = max(1, SLAB_VOXELS // max(1, math.prod(out_shape[:-1])))
    axes = _separable(mapping)
    if axes is not None:
        # view the network array with its axes in the original order, then interpolate the slab's
        # (last) axis first, so the other axes only ever see one slab
        ordered = values.permute(0, *(i + 1 for i, _, _ in axes))
        coords = [scale * torch.arange(n, dtype=torch.float64) + offset
                  for (_, scale, offset), n in zip(axes, out_shape, strict=True)]
        for start in range(0, out_shape[-1], step):
            stop = min(out_shape[-1], start + step)
            slab = _lerp_axis(ordered, dims, coords[-1][start:stop]).contiguous()
            for j in range(dims - 1):
                slab = _lerp_axis(slab, j + 1, coords[j])
            yield (*[slice(None)] * (dims - 1), slice(start, stop)), slab
        return
    net = values.shape[1:]
    m = torch.as_tensor(mapping, dtype=torch.float64)
    # grid_sample wants coordinates in [-1, 1] (align_corners=True: -1 and 1 are the end voxels' centres),
    # the last one indexing the input's last axis
    scale = torch.tensor([2.0 / (n - 1) if n > 1 else 0.0 for n in net], dtype=torch.float64)
    base = [torch.arange(n, dtype=torch.float64) for n in out_shape[:-1]]
    batch = values[None]
    for start in range(0, out_shape[-1], step):
        stop = min(out_shape[-1], start + step)
        grid = torch.meshgrid(*base, torch.arange(start, stop, dtype=torch.float64), indexing="ij")
        points = torch.stack(grid, -1) @ m[:dims, :dims].T + m[:dims, dims]
        points = (points * scale - (scale > 0).double()).flip(-1).to(torch.float32)
        slab = F.grid_sample(batch, points[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
        yield (*[slice(None)] * (dims - 1), slice(start, stop)), slab


def keep_largest_components(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component (full connectivity) of each class, in place."""
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for k in classes:
        mask = labels == k
        components, n = ndimage.label(mask, structure=structure, output=np.int32)
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            labels[mask & (components != int(sizes.argmax()))] = 0
        del mask, components
    return labels


# -- many inputs ------------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What ``predict_many`` did: written outputs and failures with their reasons."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def predict_many(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: Path | None = None,
    on_progress: Callable[[Path, int, int], None] | None = None,
) -> BatchReport:
    """Segment many inputs to files; a file that fails is recorded with its reason and the rest go on."""
    sources = expand_inputs(inputs)
    multiple = len(sources) > 1 or any(Path(i).is_dir() and not io.is_dicom_series(Path(i)) for i in inputs)
    report = BatchReport()
    for i, source in enumerate(sources):
        target = output_path(source, out, multiple)
        try:
            predictor.predict_file(source, target)
            report.written.append((source, target))
        except MedsegError as err:
            report.failed.append((source, str(err)))
        except Exception as err:  # a corrupt file must not stop the others
            report.failed.append((source, str(_user_error(source, err))))
        if on_progress is not None:
            on_progress(source, i + 1, len(sources))
    return report
