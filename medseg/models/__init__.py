"""Segmentation models behind one registry.

``build_model(name, spatial_dims=2, in_channels=1, out_channels=2, **options)`` builds ``unet``,
``unet_resnet``, ``dual_unet_resnet`` or ``fcn``; ``list_models()`` names them (in that order, the
order they are imported and registered in below) and ``model_description(name)`` says what each
is. Every model is a :class:`SegmentationModel` and returns logits of its input's spatial size; it
has ``num_outputs``, and ``build_model`` records ``build_args`` (``build_model(**model.build_args)``
rebuilds it). ``fold_batch_norms(model)`` folds an eval-mode model's batch norms into its convs for
inference.
"""

# isort: off
from medseg.models import unet, unet_resnet, dual_unet, fcn  # noqa: F401  (registers the models, in listing order)

# isort: on
from medseg.models.base import EncoderModel, SegmentationModel
from medseg.models.dual_unet import DualUNetResNet
from medseg.models.fcn import FCN
from medseg.models.folding import fold_batch_norms
from medseg.models.registry import build_model, list_models, model_description, model_options, register_model
from medseg.models.unet import UNet
from medseg.models.unet_resnet import UNetResNet

__all__ = [
    "FCN",
    "DualUNetResNet",
    "EncoderModel",
    "SegmentationModel",
    "UNet",
    "UNetResNet",
    "build_model",
    "fold_batch_norms",
    "list_models",
    "model_description",
    "model_options",
    "register_model",
]
