"""The predictor: a run directory in, label maps with the input's exact geometry out.

The preprocessing is the run's :class:`medseg.run.Preprocess`; nothing has to be repeated. Each
input is read once (:func:`medseg.data.io.read_image`), oriented, resampled and normalised by the
run's deterministic transforms, segmented by the shared sliding window (:mod:`medseg.inferer`,
optionally averaged over flips), and mapped back to the original voxel grid
(:mod:`medseg.inference.resample`) before it is written with the input's geometry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from medseg import runtime, tuning
from medseg.config import InferenceConfig, load_config
from medseg.data import io
from medseg.data.spacing import SeparableSpacingd
from medseg.errors import MedsegError
from medseg.inference.cost import cost_line
from medseg.inference.dicom_seg import write_dicom_seg
from medseg.inference.formats import itksnap_labels, itksnap_path, slicer_fields
from medseg.inference.paths import case_of, user_error
from medseg.inference.postprocess import apply_postprocessing, keep_largest_components, read_postprocessing
from medseg.inference.resample import affine_nd, grid_mapping, to_original, values_to_original
from medseg.inference.slabs import SlabPlan, logit_bytes, segment_in_slabs, slab_plan
from medseg.inference.statistics import statistics_path, structure_statistics
from medseg.inference.uncertainty import Accumulator, case_score, structure_uncertainty
from medseg.inferer import SlidingWindow, tta_flips
from medseg.models import fold_batch_norms
from medseg.models.summary import count_parameters
from medseg.planning.envelope import warnings_for
from medseg.planning.measure import orientation
from medseg.run import Checkpoint, find_run, member_runs, read_checkpoint, split_name
from medseg.utils import atomic_write_json, atomic_write_text


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
    #: Ways the input lies outside what the model was trained on (spacing, intensities, ...): one line each.
    warnings: list[str] = field(default_factory=list)
    #: Per-structure statistics (:mod:`medseg.inference.statistics`), when the predictor computes them.
    statistics: list[dict[str, Any]] | None = None
    #: ``(1 or 2, *shape)`` float32 in [0, 1]: entropy, and disagreement between passes (``uncertainty=True``).
    uncertainty: np.ndarray | None = field(default=None, repr=False)
    #: The case's uncertainty score (:func:`medseg.inference.uncertainty.case_score`).
    uncertainty_score: float | None = None


@dataclass
class Prepared:
    """An input read and preprocessed, ready for the network (:meth:`Predictor.prepare`)."""

    source: Path
    meta: io.ImageMeta
    image: MetaTensor = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    raw: np.ndarray | None = field(default=None, repr=False)  # the input as read, for statistics


@dataclass
class Stitched:
    """What the network gave for one input: network-grid logits, or labels already (many classes)."""

    logits: torch.Tensor | None
    labels: np.ndarray | None
    net_affine: np.ndarray
    orig_affine: np.ndarray
    resampled: bool
    uncertainty: torch.Tensor | None = None  # (1 or 2, *net): entropy, disagreement


class Predictor:
    """Segment images with a trained run: ``Predictor(run_dir).predict(path_or_array)``.

    Model, weights and preprocessing are built once and reused for every input. Options left at
    ``None`` come from the run's ``inference`` config. With ``statistics`` every prediction carries
    per-structure volumes, intensities, components and positions (:mod:`medseg.inference.statistics`)
    and :meth:`write` puts them beside the mask as ``<name>_stats.json``.
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
        statistics: bool = False,
        colours: Mapping[int, tuple[int, int, int]] | None = None,
        uncertainty: bool = False,
        postprocessing: bool = True,
    ) -> None:
        self.run_dir = find_run(run_dir)
        self.statistics = statistics
        self.uncertainty = uncertainty
        cfg = load_config(self.run_dir / "config.yaml")
        self.members = member_runs(self.run_dir, checkpoint)
        ckpts = [read_checkpoint(m, checkpoint) for m in self.members]
        ckpt = ckpts[0]
        _check_same_preprocessing(ckpts)
        self.weights = ckpt.path
        self.model_name = str(ckpt.build_args.get("name", "medseg"))
        self.preprocess = ckpt.preprocess
        self.labels = dict(self.preprocess.labels)
        # label value -> RGB over the palette's, for seg.nrrd and ITK-SNAP: the dataset's, then the caller's
        self.colours = {**self.preprocess.colours, **dict(colours or {})}
        self.num_classes = self.preprocess.num_classes
        self.spatial_dims = self.preprocess.spatial_dims
        # per class: chosen from the cross-validation (medseg cv), applied unless switched off
        # an explicit largest_component replaces it
        use = postprocessing and largest_component is None
        self.postprocessing = read_postprocessing(self.run_dir) if use else {}
        updates = {"tta": tta, "overlap": overlap, "largest_component": largest_component,
                   "save_probabilities": save_probabilities, "sw_batch_size": sw_batch_size}
        self.inference: InferenceConfig = InferenceConfig.model_validate(
            {**cfg.inference.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
        self.device = runtime.resolve_device(device)
        self.precision = runtime.resolve_precision(precision, self.device)
        model = ckpt.build()
        shape = (self.inference.sw_batch_size, self.preprocess.in_channels, *self.preprocess.patch_size)
        layout = tuning.choose_channels_last(channels_last, "infer", ckpt.build_args, shape, self.device,
                                             self.precision, make=lambda: copy.deepcopy(model))
        self.channels_last, self.layout = layout.channels_last, layout.reason
        self.num_parameters = count_parameters(model)  # as trained, before folding
        self.windows = [self._window(model if i == 0 else c.build()) for i, c in enumerate(ckpts)]
        self.window, self.model = self.windows[0], self.windows[0].model
        # the run's deterministic steps after loading: inputs are read once, by io.read_image
        self.transform = Compose([t for t in self.preprocess.transforms("infer").transforms
                                  if not isinstance(t, LoadImaged)], lazy=None)
        # the spacing step casts as it resamples, so the input is handed over as stored
        self._resamples = any(isinstance(t, SeparableSpacingd) for t in self.transform.transforms)

    def _window(self, model: torch.nn.Module) -> SlidingWindow:
        """One member's network, folded and placed, in the shared sliding window settings."""
        fold_batch_norms(model)  # inference only: one pass fewer over every activation map
        model = runtime.prepare_module(model, self.device, self.spatial_dims, self.channels_last)
        return SlidingWindow(model, self.preprocess.patch_size, self.inference, self.device, self.precision,
                             self.channels_last)

    @property
    def passes(self) -> int:
        """Network passes per case: members × mirrorings."""
        return len(self.windows) * (len(tta_flips(self.spatial_dims)) if self.inference.tta else 1)

    @property
    def patch_size(self) -> list[int]:
        """The network's patch (the training patch size)."""
        return list(self.preprocess.patch_size)

    def describe(self) -> str:
        """One line: which run, on what hardware."""
        allocator = runtime.allocator_plan("while the network runs")
        members = f" ({len(self.members)} folds averaged)" if len(self.members) > 1 else ""
        return (f"run {self.run_dir}{members}; "
                f"{runtime.describe(self.device, self.precision, self.channels_last, allocator, self.layout)}")

    def postprocesses(self) -> bool:
        """Whether a cross-validation chose an operation for some class."""
        return any(rule.get("operation", "none") != "none" for rule in self.postprocessing.values())

    def describe_postprocessing(self) -> str:
        """``lesion: largest component only; organ: none`` (``--no-postprocessing`` turns it off)."""
        words = {"none": "none", "largest_component": "largest component only"}
        parts = []
        for label, rule in sorted(self.postprocessing.items()):
            op = rule.get("operation", "none")
            text = words.get(op) or f"components under {float(rule['min_size']):.4g} {'mm³' if self.spatial_dims == 3 else 'mm²'} removed"
            parts.append(f"{self.labels.get(label, label)}: {text}")
        return "; ".join(parts)

    def cost(self, meta: io.ImageMeta | None = None) -> str:
        """What one case costs (``3 folds × 8 mirrorings = 24 network passes per case, about 40 s …``),
        timed here for an image of ``meta``'s geometry (the first input's header); see :mod:`.cost`."""
        return cost_line(self, meta)

    # -- network -----------------------------------------------------------------------------------
    def _stitch_device(self, image: torch.Tensor) -> torch.device:
        """Where sliding-window outputs are summed: the model's device unless a GPU lacks room for them."""
        if self.device.type != "cuda":
            return self.device
        need = 4 * (self.num_classes + 2) * image[0].numel()
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if need < free // 2 else torch.device("cpu")

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Blended logits ``(classes, *spatial)`` (fp32, CPU) of a preprocessed image, averaged over flips
        with TTA; an ensemble gives ``log`` of its members' mean probabilities instead."""
        return self.passes_of(image, uncertainty=False)[0]

    def passes_of(self, image: torch.Tensor, uncertainty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores ``(classes, *spatial)`` and, when asked, the uncertainty maps
        (:mod:`medseg.inference.uncertainty`) of a preprocessed image, on the network grid.

        One member without uncertainty averages the flips' logits; otherwise each pass's probabilities
        are accumulated (never stacked) and ``log`` of their mean stands in for the logits.
        """
        x = runtime.plain(image)[None]  # no MetaTensor bookkeeping inside the network
        stitch = self._stitch_device(x)
        flips = tta_flips(self.spatial_dims) if self.inference.tta else [()]
        with runtime.network_allocator(self.device):
            if len(self.windows) == 1 and not uncertainty:
                return self.window(x.to(stitch), flips, stitch)[0].cpu(), None
            acc = Accumulator(track_entropy=uncertainty)
            for window in self.windows:
                for flip in flips:
                    acc.add(window(x.to(stitch), [flip], stitch)[0])
        return acc.log_mean().cpu(), acc.maps().cpu() if uncertainty else None

    # -- one input ---------------------------------------------------------------------------------
    def predict(
        self, source: str | Path | Sequence[str | Path] | np.ndarray, affine: np.ndarray | None = None
    ) -> Prediction:
        """Segment one file, DICOM folder, list of channel files (one case), or array.

        The label map is in the (first) input's own voxel order with ``meta`` its geometry. An array
        is taken in medseg's reader convention (spatial axes in voxel order; channels first when there
        are several) with an optional RAS ``affine`` (4×4, or ``spatial_dims + 1`` square; identity
        by default); it is preprocessed exactly as a file would be after loading.
        """
        return self.segment(self.prepare(source, affine))

    def prepare(
        self, source: str | Path | Sequence[str | Path] | np.ndarray, affine: np.ndarray | None = None
    ) -> Prepared:
        """Read and preprocess one input (everything before the network). :func:`predict_many` runs
        this for the next case in a thread while the network segments the current one."""
        with torch.inference_mode():
            if isinstance(source, np.ndarray):
                path = Path("<array>")
                data, meta = self._array_input(source, affine)
            else:
                path, data, meta = self._read(source)
            try:
                prepared = self.transform(data)
            except Exception as err:
                raise user_error(path, err) from None
            notes = self._outside_training(data["image"], meta)
            raw = runtime.plain(data["image"]).numpy() if self.statistics else None
            del data
            image: MetaTensor = prepared.pop("image")
            self._check_channels(path, image.shape[0])
        return Prepared(path, meta, image, notes, raw)

    def segment(self, prepared: Prepared) -> Prediction:
        """The network on a prepared input, then the label map in the input's own grid."""
        return self.finish(prepared, self.network(prepared))

    def network(self, prepared: Prepared) -> Stitched:
        """The network's part: blended logits on the network grid (or, with many classes, the labels
        already, decided slab by slab). :func:`predict_many` runs :meth:`finish` in another thread."""
        image, meta = prepared.image, prepared.meta
        with torch.inference_mode():
            net_affine = np.asarray(torch.as_tensor(image.affine), dtype=np.float64)
            orig_affine = np.asarray(torch.as_tensor(image.meta.get("original_affine", net_affine)), dtype=np.float64)
            resampled = bool(image.applied_operations)
            mapping = grid_mapping(net_affine, orig_affine, len(meta.shape), resampled)
            plan = self._slabs(image, mapping, tuple(meta.shape))
            prepared.image = None  # type: ignore[assignment]  # the caller's reference is the last one
            if plan is not None:  # many classes: never all their logits for the whole volume at once
                if self.uncertainty:
                    prepared.warnings.append("no uncertainty map: the classes' scores were decided slab by slab "
                                             f"(raise inference.max_logits_gib above {self.inference.max_logits_gib} for one)")
                labels = segment_in_slabs(self.logits, runtime.plain(image), mapping, tuple(meta.shape), plan,
                                          self.num_classes)
                return Stitched(None, labels, net_affine, orig_affine, resampled)
            scores, maps = self.passes_of(image, True) if self.uncertainty else (self.logits(image), None)
            return Stitched(scores, None, net_affine, orig_affine, resampled, maps)

    def finish(self, prepared: Prepared, stitched: Stitched) -> Prediction:
        """Logits back to the input's grid, post-processing, uncertainty and statistics."""
        meta, labels, probabilities, maps = prepared.meta, stitched.labels, None, None
        if stitched.logits is not None:
            with torch.inference_mode():
                if stitched.uncertainty is not None:
                    maps = values_to_original(stitched.uncertainty, stitched.net_affine, stitched.orig_affine,
                                              tuple(meta.shape), stitched.resampled)
                labels, probabilities = to_original(stitched.logits, stitched.net_affine, stitched.orig_affine,
                                                    tuple(meta.shape), stitched.resampled,
                                                    self.inference.save_probabilities)
            stitched.logits = stitched.uncertainty = None
        assert labels is not None
        self._postprocess(labels, meta)
        rows = None
        if self.statistics:
            case = case_of(prepared.source, self.preprocess.in_channels)
            rows = structure_statistics(labels, meta, self.labels, prepared.raw, case)
            prepared.raw = None
        score = case_score(labels, maps[0]) if maps is not None else None
        if rows is not None and maps is not None:
            scores = structure_uncertainty(labels, maps[0], self.labels)
            for row in rows:
                row.update(scores[row["label"]], case_uncertainty=score)
        return Prediction(labels, prepared.source, meta, probabilities, prepared.warnings, rows, maps, score)

    def _postprocess(self, labels: np.ndarray, meta: io.ImageMeta) -> None:
        """The run's post-processing, in place: the cross-validation's choice, or ``largest_component``."""
        if self.postprocessing:
            apply_postprocessing(labels, self.postprocessing, float(np.prod(meta.spacing)))
        elif self.inference.largest_component:
            keep_largest_components(labels, self.preprocess.foreground)

    def _slabs(self, image: torch.Tensor, mapping: np.ndarray, orig_shape: tuple[int, ...]) -> SlabPlan | None:
        """The slabs of :func:`~medseg.inference.slabs.slab_plan` when the whole volume's logits would
        exceed ``inference.max_logits_gib`` (and no probability maps are asked for), else None."""
        budget = int(self.inference.max_logits_gib * 2**30)
        net_shape = tuple(int(n) for n in image.shape[1:])
        if self.inference.save_probabilities or logit_bytes(self.num_classes, net_shape) <= budget:
            return None
        plan = slab_plan(mapping, net_shape, orig_shape, self.preprocess.patch_size, self.num_classes, budget,
                         self.inference.overlap)
        return plan if plan is not None and len(plan.slabs) > 1 else None

    def _outside_training(self, image: torch.Tensor, meta: io.ImageMeta) -> list[str]:
        """Warnings for an input unlike the training data (runs planned from a fingerprint only)."""
        env = self.preprocess.fingerprint
        if not env:
            return []
        channels = int(image.shape[0]) if image.ndim > len(meta.shape) else 1  # loaded: channels first when several
        return warnings_for(env, tuple(meta.spacing), orientation(meta), channels, image.numpy())

    def _check_channels(self, path: Path, channels: int) -> None:
        if channels != self.preprocess.in_channels:
            raise MedsegError(
                f"{path}: has {channels} channel(s) but the run was trained on {self.preprocess.in_channels}; "
                "give an image of the training modality (one file holding every channel, or one file per "
                "channel named case_0000, case_0001, ...)"
            )

    def _read(self, source: str | Path | Sequence[str | Path]) -> tuple[Path, dict[str, Any], io.ImageMeta]:
        """Read a file, DICOM folder or one file per channel once: the loaded-image dict and the geometry."""
        channels = [Path(s) for s in source] if isinstance(source, list | tuple) else [Path(source)]
        arrays: list[np.ndarray] = []
        meta: io.ImageMeta | None = None
        for channel in channels:
            try:
                array, channel_meta = io.read_image(channel, c_order=False)  # resampled in the file's order
            except MedsegError:
                raise
            except Exception as err:
                raise user_error(channel, err) from None
            meta = meta or channel_meta
            if tuple(channel_meta.shape) != tuple(meta.shape):
                raise MedsegError(f"{channel}: shape {channel_meta.shape} differs from {channels[0]}'s {meta.shape}; "
                                  "give the channels of one case on one grid")
            dims = len(channel_meta.shape)
            arrays.extend(np.moveaxis(array, -1, 0) if array.ndim > dims else array[None])
        assert meta is not None
        data = np.stack(arrays) if len(arrays) > 1 else arrays[0]
        loaded = self._loaded(data, meta.affine, meta.shape, str(channels[0]), len(arrays) > 1, self._resamples)
        return channels[0], loaded, meta

    def _array_input(self, array: np.ndarray, affine: np.ndarray | None) -> tuple[dict[str, Any], io.ImageMeta]:
        """A loaded-image dict (what ``LoadImaged`` gives) and the geometry of an in-memory array."""
        dims = self.spatial_dims
        data = np.asarray(array)
        if data.ndim not in (dims, dims + 1):
            raise MedsegError(
                f"array of shape {data.shape}: give {dims} spatial axes (and channels first when there are several)"
            )
        ras = affine_nd(np.eye(dims + 1) if affine is None else np.asarray(affine, dtype=np.float64), dims)
        shape = tuple(int(n) for n in data.shape[-dims:])
        lps = np.diag([-1.0, -1.0, *[1.0] * (dims - 1)]) @ ras
        spacing = np.linalg.norm(lps[:dims, :dims], axis=0)
        meta = io.ImageMeta(
            path=Path("<array>"), format="array", shape=shape, spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in lps[:dims, dims]), direction=lps[:dims, :dims] / spacing, affine=ras,
            num_channels=data.shape[0] if data.ndim > dims else 1,
        )
        return self._loaded(data, ras, shape, "<array>", data.ndim > dims, self._resamples), meta

    @staticmethod
    def _loaded(
        data: np.ndarray, ras: np.ndarray, shape: tuple[int, ...], name: str, channels_first: bool, resamples: bool
    ) -> dict[str, Any]:
        """``{"image": MetaTensor}`` as ``LoadImaged`` would give it, with a 4×4 RAS affine: float32, or
        as stored where the spacing step resamples (it casts plane by plane)."""
        dims = len(shape)
        full = np.eye(4)
        full[:dims, :dims], full[:dims, 3] = ras[:dims, :dims], ras[:dims, dims]
        tensor = _tensor(data, cast=not resamples)
        return {"image": MetaTensor(tensor, affine=torch.as_tensor(full), meta={
            "original_affine": full, "spatial_shape": np.asarray(shape), "space": "RAS",
            "original_channel_dim": 0 if channels_first else "no_channel", "filename_or_obj": name,
        })}

    # -- files ---------------------------------------------------------------------------------------
    def predict_file(self, source: Path | Sequence[Path], out: Path) -> Path:
        """Segment ``source`` (a file, DICOM folder, or one file per channel) and write ``out`` in its geometry."""
        return self.write(self.predict(source), out)

    def _write_mask(self, result: Prediction, out: Path) -> None:
        """The label map in the format ``out``'s name asks for."""
        assert result.meta is not None
        if out.name.lower().endswith(".dcm"):
            write_dicom_seg(result.labels, result.source, self.labels, out, self.model_name)
            return
        slicer = out.name.lower().endswith(".seg.nrrd")
        fields = slicer_fields(result.labels, self.labels, self.colours) if slicer else None
        io.write_like(result.labels, result.meta, out, fields=fields)
        if not slicer and io.image_format(out) in ("nrrd", "mha"):
            atomic_write_text(itksnap_path(out), itksnap_labels(self.labels, self.colours))

    def write(self, result: Prediction, out: Path) -> Path:
        """Write a prediction as ``out`` in its input's geometry.

        With probabilities on, ``<out name>_prob_<class><ext>`` float32 maps go beside it (TIFF for 2D
        PNG/JPEG outputs, which cannot hold floats); with statistics, ``<out name>_stats.json``. A
        ``.seg.nrrd`` carries 3D Slicer's segment names and colours; beside an ``.nrrd`` or ``.mha``
        goes ITK-SNAP's ``<out name>_labels.txt`` (:mod:`medseg.inference.formats`); a ``.dcm`` is a DICOM
        SEG of a DICOM-series input (:mod:`medseg.inference.dicom_seg`). With uncertainty,
        ``<out name>_entropy<ext>`` (and ``_disagreement`` with several passes) float32 maps in [0, 1].
        """
        assert result.meta is not None
        if result.statistics is not None:
            atomic_write_json(statistics_path(out), {
                "source": str(result.source), "mask": str(out), "spacing_mm": list(result.meta.spacing),
                "coordinates": "centroids in LPS (DICOM, ITK) and RAS (NIfTI, 3D Slicer) mm",
                "structures": result.statistics})
        name, ext = split_name(out)
        ext = ".tif" if ext.lower() in (".png", ".jpg", ".jpeg", ".bmp") else ".nii.gz" if ext == ".dcm" else ext
        if result.probabilities is not None:
            for k, label in self.labels.items():
                if k:
                    prob_path = out.with_name(f"{name}_prob_{label}{ext}")
                    io.write_like(result.probabilities[k], result.meta, prob_path, dtype=np.float32)
        if result.uncertainty is not None:
            for kind, values in zip(UNCERTAINTY_MAPS, result.uncertainty, strict=False):
                io.write_like(values, result.meta, uncertainty_path(out, kind, ext), dtype=np.float32)
        self._write_mask(result, out)  # last: an existing mask means the case is complete (--continue)
        return out


#: The uncertainty maps written beside a mask, in order (the second one only with several passes).
UNCERTAINTY_MAPS = ("entropy", "disagreement")


def uncertainty_path(out: Path, kind: str, ext: str | None = None) -> Path:
    """``<mask name>_<kind><ext>`` beside the mask ``out`` (``ext``: the mask's unless given)."""
    name, own = split_name(out)
    return out.with_name(f"{name}_{kind}{ext if ext is not None else own}")


def _check_same_preprocessing(ckpts: Sequence[Checkpoint]) -> None:
    """An ensemble's members must read the input the same way (they are folds of one plan)."""
    first = ckpts[0]
    for other in ckpts[1:]:
        if other.preprocess != first.preprocess or other.preprocess.intensity != first.preprocess.intensity:
            raise MedsegError(f"{other.path}: preprocesses differently from {first.path}; an ensemble needs the "
                              "folds of one cross-validation (medseg train --folds K)")


def _tensor(data: np.ndarray, cast: bool = True) -> torch.Tensor:
    """A tensor of ``data`` in its own memory order (a NIfTI's x-fastest array stays so), float32 when
    ``cast``: cast by torch on every core (0.11 s for a 512×512×300 CT on a 2-core Xeon, NumPy 0.5 s),
    by NumPy for dtypes or byte orders torch lacks (then float32 even without ``cast``)."""
    array = data if data.flags.c_contiguous or data.flags.f_contiguous else np.ascontiguousarray(data)
    if not array.flags.writeable:
        array = array.copy(order="K")
    try:
        tensor = torch.from_numpy(array)
    except (TypeError, ValueError):
        return torch.from_numpy(array.astype(np.float32, order="K"))
    return tensor if tensor.dtype == torch.float32 or not cast else tensor.float()
