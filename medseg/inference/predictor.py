"""Inference: a run directory in, label maps with the input's exact geometry out.

The preprocessing is the one stored with the run's weights; nothing has to be repeated. Each case is
loaded, oriented, resampled and normalised by the run's deterministic transforms, segmented by MONAI
sliding-window inference with Gaussian blending (optionally with flip test-time augmentation), and
the label map is mapped back to the original grid with MONAI's ``Invertd`` before it is written.
"""

from __future__ import annotations

import itertools
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd, KeepLargestConnectedComponent

from medseg import runtime
from medseg.config import InferenceConfig, load_config
from medseg.data import io, transforms
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.training.checkpoint import load_weights, read_metadata

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class Prediction:
    """A label map in the input's voxel order, with the input it overlays."""

    labels: np.ndarray
    source: Path
    meta: Any = None
    probabilities: np.ndarray | None = field(default=None, repr=False)


def find_run(run: str | Path | None) -> Path:
    """The run directory to use: ``run`` or ``runs/latest``, checked for weights."""
    path = Path(run) if run else Path("runs") / "latest"
    if not (path / "config.yaml").is_file():
        hint = "train one first (medseg train) or pass --run DIR" if run is None else "pass a run directory made by medseg train"
        raise MedsegError(f"--run {path}: no config.yaml there; {hint}")
    return path.resolve()


def output_path(source: Path, out: Path | None, multiple: bool) -> Path:
    """``<name>_seg.<same extension>`` beside the input, inside ``out`` when it is a folder."""
    name, ext = split_name(source)
    if ext in ("", ".dcm"):  # DICOM series folder or file: NIfTI in the series' geometry
        ext = ".nii.gz"
    default = f"{name}_seg{ext}"
    if out is None:
        return source.parent / default
    if multiple or out.is_dir() or not split_name(out)[1]:
        return out / default
    return out


def split_name(path: Path) -> tuple[str, str]:
    """Split ``scan.nii.gz`` into ``("scan", ".nii.gz")``."""
    name = path.name
    for suffix in (*IMAGE_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files stay files; a DICOM series folder stays one input; other folders give their image files."""
    result: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise MedsegError(f"{path}: input not found; give image files, folders or a DICOM series folder")
        if path.is_dir() and not io.is_dicom_series(path):
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not split_name(p)[0].endswith("_seg")
            )
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and io.is_dicom_series(p))
            if not files and not subdirs:
                raise MedsegError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) or DICOM series inside")
            result.extend(files + subdirs)
        else:
            result.append(path)
    return result


class Predictor:
    """Segment images with a trained run: ``Predictor(run_dir).predict(path_or_array)``.

    Model, weights and preprocessing are built once and reused for every input.
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
    ) -> None:
        self.run_dir = find_run(run_dir)
        cfg = load_config(self.run_dir / "config.yaml")
        weights = self.run_dir / f"{checkpoint}.safetensors"
        if not weights.is_file():
            raise MedsegError(f"{weights}: not found; use --checkpoint last, or wait for the run to save one")
        meta = read_metadata(weights)
        if "build_args" not in meta or "preprocess" not in meta:
            raise MedsegError(f"{weights}: no medseg metadata (build_args, preprocess); it was not written by medseg train")
        self.preprocess: dict[str, Any] = meta["preprocess"]
        self.labels = {int(k): v for k, v in self.preprocess["labels"].items()}
        self.num_classes = len(self.labels)
        self.spatial_dims = int(self.preprocess["spatial_dims"])
        self.inference: InferenceConfig = cfg.inference.model_copy(update={
            k: v for k, v in {"tta": tta, "overlap": overlap, "largest_component": largest_component,
                              "save_probabilities": save_probabilities}.items() if v is not None
        })
        self.device = runtime.resolve_device(device)
        self.precision = runtime.resolve_precision(precision, self.device)
        self.channels_last = runtime.resolve_channels_last(channels_last, self.spatial_dims, self.device)
        build_args = dict(meta["build_args"])
        self.model = build_model(**build_args)
        load_weights(weights, self.model)
        self.model.eval()
        self.model = runtime.prepare_module(self.model, self.device, self.spatial_dims, self.channels_last)
        kwargs = {k: self.preprocess[k] for k in ("preset", "spatial_dims", "patch_size", "spacing")}
        self.transform = transforms.build_transforms(
            "infer", **kwargs, ct_window=tuple(self.preprocess["ct_window"]), label=False
        )
        self._invert = Invertd(keys="pred", transform=self.transform, orig_keys="image", nearest_interp=True)
        self._invert_prob = Invertd(keys="prob", transform=self.transform, orig_keys="image", nearest_interp=False)
        fg = [k for k in sorted(self.labels) if k != 0]
        self._lcc = KeepLargestConnectedComponent(applied_labels=fg, independent=True) if fg else None

    def describe(self) -> str:
        """One line: which run, on what hardware."""
        return f"run {self.run_dir}; {runtime.describe(self.device, self.precision, self.channels_last)}"

    # -- core --------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(self.precision, self.device):
            return self.model(runtime.prepare_batch(x, self.device, self.spatial_dims, self.channels_last)).float()

    def _probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (fp32) at network resolution, averaged over flips when TTA is on."""
        x = image[None].to(self.device)
        flips: Iterable[tuple[int, ...]] = [()]
        if self.inference.tta:
            axes = range(2, 2 + self.spatial_dims)
            flips = [c for r in range(self.spatial_dims + 1) for c in itertools.combinations(axes, r)]
        total: torch.Tensor | None = None
        n = 0
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(
                xi, roi_size=self.preprocess["patch_size"], sw_batch_size=self.inference.sw_batch_size,
                predictor=self._forward, overlap=self.inference.overlap, mode=self.inference.blend,
            )
            prob = torch.softmax(torch.as_tensor(logits).float(), dim=1)
            del logits
            prob = torch.flip(prob, dims) if dims else prob
            total = prob if total is None else total.add_(prob)
            n += 1
        assert total is not None
        return total.div_(n)[0]

    def predict(
        self, source: str | Path | Sequence[str | Path] | np.ndarray, affine: np.ndarray | None = None
    ) -> Prediction:
        """Segment one file, DICOM folder, list of channel files, or array.

        The label map is in the (first) input's own voxel order. An array is taken in medseg's reader
        convention (spatial axes, channel first when there are several) with an optional 4×4 RAS ``affine``.
        """
        if isinstance(source, np.ndarray):
            return self._predict_array(source, affine)
        channels = [Path(s) for s in source] if isinstance(source, list | tuple) else [Path(source)]
        path = channels[0]
        with runtime.inference_context():
            data = self.transform({"image": [str(c) for c in channels] if len(channels) > 1 else str(path)})
            image = data["image"]
            in_ch = int(self.preprocess["in_channels"])
            if image.shape[0] != in_ch:
                raise MedsegError(
                    f"{path}: has {image.shape[0]} channel(s) but the run was trained on {in_ch}; "
                    "give an image of the training modality"
                )
            prob = self._probabilities(image).cpu()
            labels = prob.argmax(0, keepdim=True).to(torch.uint8 if self.num_classes < 256 else torch.int16)
            data["pred"] = MetaTensor(labels, meta=image.meta, applied_operations=image.applied_operations)
            probabilities = None
            if self.inference.save_probabilities:
                data["prob"] = MetaTensor(prob, meta=image.meta, applied_operations=image.applied_operations)
            else:
                del prob
            with warnings.catch_warnings():  # 2D presets have nothing to invert; MONAI warns about that
                warnings.filterwarnings("ignore", message="inverse has been called but no invertible")
                inverted = self._invert(data)
            pred = inverted["pred"]
            if self._lcc is not None and self.inference.largest_component:
                pred = self._lcc(pred)
            out = np.asarray(torch.as_tensor(pred)[0].cpu().numpy())
            if self.inference.save_probabilities:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="inverse has been called but no invertible")
                    probabilities = np.asarray(torch.as_tensor(self._invert_prob(data)["prob"]).cpu().numpy())
        return Prediction(out.astype(np.uint8 if self.num_classes < 256 else np.uint16), path, None, probabilities)

    def _predict_array(self, array: np.ndarray, affine: np.ndarray | None) -> Prediction:
        """Arrays go through the same loader as files, via a temporary NIfTI with ``affine``."""
        import nibabel as nib

        data = np.asarray(array, dtype=np.float32)
        if int(self.preprocess["in_channels"]) > 1 or data.ndim == self.spatial_dims + 1:
            data = np.moveaxis(data, 0, -1)  # NIfTI keeps channels last
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "array.nii.gz"
            nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
            result = self.predict(path)
        result.source = Path("<array>")
        return result

    def predict_file(self, source: Path | Sequence[Path], out: Path) -> Path:
        """Segment ``source`` (a file, or one file per channel) and write ``out`` in its exact geometry."""
        result = self.predict(source)
        reference = Path(source[0]) if isinstance(source, list | tuple) else Path(source)
        io.write_like(result.labels, reference, out)
        if result.probabilities is not None:
            name, ext = split_name(out)
            for k, label in self.labels.items():
                if k:
                    prob_path = out.with_name(f"{name}_prob_{label}{ext}")
                    io.write_like(result.probabilities[k].astype(np.float32), reference, prob_path)
        return out


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
    """Segment many inputs; a file that fails is recorded and the rest go on."""
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
            report.failed.append((source, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"))
        if on_progress is not None:
            on_progress(source, i + 1, len(sources))
    return report
