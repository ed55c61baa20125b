"""Load local pretrained weights into a medseg encoder: torchvision, timm, MONAI and MedicalNet layouts.

Nothing is ever downloaded: ``source`` is a file you already have or a state dict. The steps:

1. read safely (``torch.load(weights_only=True)`` or safetensors) and unwrap ``state_dict`` / ``model``
   containers and ``module.`` / ``model.`` / ``encoder.`` / ``backbone.`` prefixes;
2. drop the layout's classification or segmentation head unless the encoder has one of the same shape;
3. fold a projection's conv bias (MONAI's ``bias_downsample=True``) into the following batch norm;
4. inflate 2D kernels to 3D (I3D: repeat along depth, divide by depth) and adapt the first conv to
   ``in_channels`` (timm's rule: sum for one channel, repeat and rescale for more);
5. load, and report missing, unexpected, adapted and dropped keys. Any other shape mismatch is a
   one-line :class:`~medseg.errors.MedsegError` naming the key, both shapes and the fix.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import MedsegError

#: File suffixes read with ``torch.load(weights_only=True)``; ``.safetensors`` is read with safetensors.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
#: Container keys that hold the real state dict in training checkpoints.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
#: Wrapper prefixes stripped when that makes more keys match the encoder.
PREFIXES = ("module.", "model.", "encoder.", "backbone.", "features.")


@dataclass(frozen=True)
class Layout:
    """How a family of checkpoints differs from medseg's (torchvision's) names."""

    description: str
    heads: tuple[str, ...]


#: ``layout=`` choices. All four use torchvision's module names (``conv1``, ``bn1``, ``layerN.i.*``,
#: ``downsample.0/1``); they differ in their head and wrappers, which is what is handled here.
LAYOUTS: dict[str, Layout] = {
    "torchvision": Layout("torchvision.models.resnet*: head 'fc'", ("fc.",)),
    "timm": Layout("timm resnet* (torchvision names): head 'fc'", ("fc.", "head.")),
    "monai": Layout("monai.networks.nets.ResNet: head 'fc', optional downsample conv bias", ("fc.",)),
    "medicalnet": Layout("MedicalNet (Tencent): 'module.' prefix, segmentation head 'conv_seg'", ("conv_seg.",)),
}


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        missing: encoder keys that got no value (they keep their initialisation). BN's
            ``num_batches_tracked`` counters are not listed.
        unexpected: source keys that matched nothing in the encoder (ignored).
        adapted: keys whose value was transformed, with how (inflated, channel-adapted, bias folded).
        dropped: head keys left out because the encoder has no head of that shape.
        layout: the layout used (detected when ``layout='auto'``).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    layout: str = "torchvision"

    def __str__(self) -> str:
        return (
            f"layout {self.layout}: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.adapted)} adapted, {len(self.dropped)} dropped"
        )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``source`` (a local file or a mapping), containers unwrapped, on the CPU."""
    if isinstance(source, Mapping):
        data: Any = source
    else:
        data = _read_file(Path(source))
    while isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in CONTAINER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            break
        data = inner
    if isinstance(data, nn.Module):
        data = data.state_dict()
    if not isinstance(data, Mapping):
        raise MedsegError(f"weights {_name(source)}: holds a {type(data).__name__}, not a state dict; save model.state_dict()")
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise MedsegError(
            f"weights {_name(source)}: no tensors found (keys: {', '.join(map(str, list(data)[:8]))}); "
            "give a state dict or a checkpoint with a 'state_dict' or 'model' entry"
        )
    return tensors


def _name(source: Any) -> str:
    return str(source) if isinstance(source, str | Path) else "state dict"


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise MedsegError(f"weights file {path}: not found; give the path of a local .pth/.pt/.safetensors file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise MedsegError(f"weights file {path}: not a readable safetensors file ({exc})") from None
    if suffix not in TORCH_SUFFIXES:
        raise MedsegError(
            f"weights file {path}: unknown suffix {suffix!r}; give a .safetensors file or one of "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise MedsegError(
            f"weights file {path}: holds more than tensors and cannot be read safely ({str(exc).splitlines()[0]}); "
            "re-save it as torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise MedsegError(f"weights file {path}: not a readable PyTorch file ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Kernel transforms
# ---------------------------------------------------------------------------------------------


def inflate_2d_to_3d(weight: torch.Tensor, depth: int, depth_axis: int = -1) -> torch.Tensor:
    """I3D inflation of a 2D kernel ``(O, I, kh, kw)``: repeat ``depth`` times along ``depth_axis``
    (a spatial axis of the 3D kernel: 0, 1, 2 or -1 for the last) and divide by ``depth``.

    On an input that is constant along that axis, the 3D conv then equals the 2D conv on each slice.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D conv kernel (O, I, kh, kw), got shape {tuple(weight.shape)}")
    axis = 2 + (depth_axis % 3)
    return weight.unsqueeze(axis).repeat_interleave(depth, dim=axis) / depth


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-conv kernel ``(O, I, *k)`` to ``in_channels`` inputs (timm's ``adapt_input_conv``).

    One channel: the sum over input channels (a grey image replicated to RGB gives the same response).
    More: the kernel repeated over channels, cut to ``in_channels`` and scaled by ``I / in_channels``.
    """
    source = weight.shape[1]
    if in_channels == source:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / source)
    return weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_channels] * (source / in_channels)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Best guess of the layout from the keys (they share torchvision's names, so this only matters
    for heads): MedicalNet has ``conv_seg``, MONAI may have ``downsample.0.bias``."""
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("conv_seg.") for k in keys):
        return "medicalnet"
    if any(k.endswith("downsample.0.bias") for k in keys):
        return "monai"
    if any(k.startswith("head.") for k in keys):
        return "timm"
    return "torchvision"


def _strip_prefixes(state: dict[str, torch.Tensor], target: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes while that makes more keys match ``target``; keys outside are returned apart."""
    outside: list[str] = []
    stripped = state
    improved = True
    while improved:
        improved = False
        best = sum(k in target for k in stripped)
        for prefix in PREFIXES:
            inner = {k[len(prefix) :]: v for k, v in stripped.items() if k.startswith(prefix)}
            if inner and sum(k in target for k in inner) > best:
                outside += [k for k in stripped if not k.startswith(prefix)]
                stripped, improved = inner, True
                break
    return stripped, outside


def _fold_conv_bias(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], adapted: list[str]) -> None:
    """A conv bias before a batch norm is a shift of its running mean: fold it there (exact in train and eval)."""
    for key in [k for k in state if k.endswith(".0.bias") and k not in target]:
        module = key[: -len(".0.bias")]
        mean_key = f"{module}.1.running_mean"
        if f"{module}.0.weight" not in target:
            continue
        if mean_key not in target or mean_key not in state:
            raise MedsegError(
                f"weights key {key}: the encoder's {module}.0 conv has no bias and no batch norm after it to "
                "fold the bias into; build the encoder with norm='batch' and preact=False, or drop the key"
            )
        state[mean_key] = state[mean_key] - state.pop(key)
        adapted.append(f"{key}: folded into {mean_key}")


#: The first conv's key: the one-conv stems', and the deep stem's first (ResNet-D, timm's ``conv1.0``).
FIRST_CONV_KEYS = ("conv1.weight", "conv1.0.weight")


def _fit(key: str, value: torch.Tensor, want: torch.Tensor, depth_axis: int, adapted: list[str]) -> torch.Tensor:
    """``value`` reshaped to ``want``'s shape by inflation and input-channel adaptation, or a MedsegError."""
    if value.shape == want.shape:
        return value
    if value.dim() == 4 and want.dim() == 5:
        depth = want.shape[2 + depth_axis % 3]
        value = inflate_2d_to_3d(value, depth, depth_axis)
        adapted.append(f"{key}: inflated 2D -> 3D (depth {depth})")
    only_inputs_differ = (
        value.dim() == want.dim() and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]
    )
    if key in FIRST_CONV_KEYS and only_inputs_differ and value.shape[1] != want.shape[1]:
        adapted.append(f"{key}: input channels {value.shape[1]} -> {want.shape[1]}")
        value = adapt_input_channels(value, want.shape[1])
    if value.shape != want.shape:
        raise MedsegError(
            f"weights key {key}: shape {tuple(value.shape)} does not fit the encoder's {tuple(want.shape)}; "
            "build the encoder with the options the weights were trained with (block, layers, widths, "
            "stem, shortcut, num_classes) or remove the key from the state dict"
        )
    return value


def load_pretrained(
    encoder: nn.Module,
    source: str | Path | Mapping[str, Any],
    layout: str = "auto",
    depth_axis: int = -1,
    strict: bool = False,
) -> LoadReport:
    """Load local weights into ``encoder`` in place and report what happened.

    Args:
        encoder: a medseg encoder (or any module with torchvision ResNet names).
        source: a local ``.pth``/``.pt``/``.safetensors`` file or a state dict (training checkpoints
            with a ``state_dict``/``model`` entry and ``module.``-style prefixes are unwrapped).
        layout: ``auto``, ``torchvision``, ``timm``, ``monai`` or ``medicalnet``; it decides which head
            keys are dropped.
        depth_axis: spatial axis of a 3D encoder along which 2D kernels are inflated. ``-1`` (the last
            axis) suits MONAI's ``(C, X, Y, Z)`` volumes, whose slices lie along Z; use 0 for ``(D, H, W)``.
        strict: raise a MedsegError if any key is missing or unexpected.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise MedsegError(f"layout={layout!r} is unknown; choose auto or one of: {', '.join(LAYOUTS)}")
    target = encoder.state_dict()
    raw = read_state_dict(source)
    used_layout = detect_layout(raw) if layout == "auto" else layout
    state, outside = _strip_prefixes(raw, target)
    report = LoadReport(unexpected=list(outside), layout=used_layout)

    for key in [k for k in state if k.startswith(LAYOUTS[used_layout].heads)]:
        if key not in target or state[key].shape != target[key].shape:
            report.dropped.append(f"{key} {tuple(state.pop(key).shape)}")

    _fold_conv_bias(state, target, report.adapted)
    fitted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        fitted[key] = _fit(key, value, target[key], depth_axis, report.adapted)
    if not fitted:
        first = ", ".join(list(raw)[:5])
        raise MedsegError(
            f"weights {_name(source)}: none of its {len(raw)} tensors match the encoder's keys (first: {first}); "
            "give ResNet weights with torchvision/timm/MONAI/MedicalNet names"
        )
    report.missing = [k for k in target if k not in fitted and not k.endswith("num_batches_tracked")]
    if strict and (report.missing or report.unexpected):
        raise MedsegError(
            f"weights {_name(source)}: strict load failed with missing {report.missing[:5]} and unexpected "
            f"{report.unexpected[:5]}; pass strict=False to load what matches"
        )
    encoder.load_state_dict(fitted, strict=False)
    return report
