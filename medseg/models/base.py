"""The base classes of medseg's models, in the manner of segmentation_models.pytorch's ``base/model.py``.

:class:`SegmentationModel` owns what every model does around its network: pad the input to the
multiple the network needs, run ``_forward``, crop every output back. :class:`EncoderModel` adds
what every model on a registered encoder shares: building the encoder (:func:`make_encoder`) and
freezing it. The parameters every model or every encoder-based model takes are documented here,
once; each model's docstring documents only its own options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.models.blocks import check_choice, crop_to, pad_to_multiple

#: The norm layers a frozen encoder keeps in eval mode (batch and instance norms, group and layer norms).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def make_encoder(
    name: str,
    spatial_dims: int,
    in_channels: int,
    options: dict[str, Any] | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build encoder ``name`` from :mod:`medseg.encoders` and optionally load local pretrained weights.

    ``options`` go to ``build_encoder``; ``weights`` is a local file given to ``load_pretrained``
    (torchvision, timm, MONAI or MedicalNet layout; adapted to ``in_channels`` and inflated to 3D there).
    """
    from medseg.encoders import build_encoder, list_encoders

    check_choice("encoder", name, list_encoders())
    if options is not None and not isinstance(options, dict):
        raise MedsegError(f"model option encoder_options={options!r}: give a mapping of encoder options")
    encoder = build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels, **dict(options or {}))
    if weights is not None:
        from medseg.encoders.weights import load_pretrained

        if not Path(weights).is_file():
            raise MedsegError(f"model option encoder_weights={weights}: no such file; give a local state-dict file")
        load_pretrained(encoder, weights)
    return encoder


class SegmentationModel(nn.Module):
    """A segmentation network: ``forward`` pads the input, runs :meth:`_forward`, crops the logits back.

    Every model's constructor is ``(spatial_dims=2, in_channels=1, out_channels=2, *, option=...)``:

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes, background included (the logits' channels).

    The keyword-only parameters are the model's options. Inputs are padded inside (replicate, at the
    far end of each axis) to a multiple of ``multiple`` and every output is cropped back, so any input
    size works. In training mode a model with auxiliary outputs returns the tuple
    ``(main, aux, ...)``, ``num_outputs`` long; in eval mode one tensor. ``build_model`` records
    ``build_args`` (see :mod:`medseg.models.registry`).
    """

    #: How many outputs ``forward`` returns in training mode (1: a tensor, not a tuple).
    num_outputs: int = 1
    #: The multiple every spatial size is padded up to (one per axis, or one for all).
    multiple: int | tuple[int, ...] = 1
    #: Keyword arguments that rebuild the model, ``build_model(**model.build_args)``; set by ``build_model``.
    build_args: dict[str, Any]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits of shape ``(N, out_channels, *x.shape[2:])`` for any input size (a tuple in training
        mode when ``num_outputs > 1``)."""
        x, size = pad_to_multiple(x, self.multiple)
        out = self._forward(x)
        if isinstance(out, tuple):
            return tuple(crop_to(o, size) for o in out)
        return crop_to(out, size)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The network on an input already padded to ``multiple``; outputs of the padded size."""
        raise NotImplementedError

    def resolved_options(self) -> dict[str, Any]:
        """Options as the model resolved them, where that differs from the call's arguments (for
        ``build_args``); the default is none."""
        return {}


class EncoderModel(SegmentationModel):
    """A model on a registered encoder: builds ``self.encoder``, pads to its largest reduction, can freeze it.

    Args (every encoder-based model's, besides those of :class:`SegmentationModel`):
        encoder: a name from ``medseg.encoders.list_encoders()``.
        encoder_options: keyword options for ``build_encoder`` (e.g. widths, stem).
        encoder_weights: a local pretrained state-dict file, loaded with ``load_pretrained``. It is an
            initialisation, not architecture, so ``build_args`` records it as ``None``.

    Decoders read only the encoder's ``out_channels`` and ``reductions``.
    """

    #: Whether :meth:`freeze_encoder` froze the encoder.
    encoder_frozen: bool = False

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        encoder: str,
        encoder_options: dict[str, Any] | None,
        encoder_weights: str | None,
    ) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder, spatial_dims, in_channels, encoder_options, encoder_weights)
        self.encoder_options = dict(encoder_options or {})
        self.multiple = max(self.encoder.reductions)

    def freeze_encoder(self, freeze: bool = True) -> None:
        """Stop training the encoder: no gradients, and its norm layers stay in eval mode (running
        statistics frozen) even when ``model.train()`` is called. ``freeze=False`` undoes it."""
        self.encoder_frozen = freeze
        for p in self.encoder.parameters():
            p.requires_grad_(not freeze)
        self.train(self.training)

    def unfreeze_encoder(self) -> None:
        """Undo :meth:`freeze_encoder`: gradients again, norm layers follow ``model.train()``."""
        self.freeze_encoder(False)

    def train(self, mode: bool = True) -> EncoderModel:
        """As ``nn.Module.train``, but a frozen encoder's norm layers stay in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            for module in self.encoder.modules():
                if isinstance(module, NORM_LAYERS):
                    module.eval()
        return self

    def resolved_options(self) -> dict[str, Any]:
        """``encoder_options`` as a mapping (``{}`` for ``None``)."""
        return {"encoder_options": dict(self.encoder_options)}
