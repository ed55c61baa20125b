"""Segmentation models behind one registry.

``build_model(name, spatial_dims=2, in_channels=1, out_channels=2, **options)`` builds ``unet``,
``unet_resnet``, ``dual_unet_resnet`` or ``fcn``; ``list_models()`` names them and
``model_description(name)`` says what each is. Every model returns logits of its input's spatial
size, sets ``num_outputs`` and ``build_args`` (``build_model(**model.build_args)`` rebuilds it).
``fold_batch_norms(model)`` folds an eval-mode model's batch norms into its convs for inference.
"""

from medseg.models import dual_unet, fcn, unet, unet_resnet  # noqa: F401  (registers the models)
from medseg.models.dual_unet import DualUNetResNet
from medseg.models.fcn import FCN
from medseg.models.folding import fold_batch_norms
from medseg.models.registry import build_model, list_models, model_description, model_options, register_model
from medseg.models.unet import UNet
from medseg.models.unet_resnet import UNetResNet

__all__ = [
    "FCN",
    "DualUNetResNet",
    "UNet",
    "UNetResNet",
    "build_model",
    "fold_batch_norms",
    "list_models",
    "model_description",
    "model_options",
    "register_model",
]
