"""medseg: medical image segmentation with reusable 2D/3D ResNet encoders.

The encoders (``medseg.encoders``) import only torch and MONAI's layer factories, so any
PyTorch pipeline can use them alone. Models, data, training, inference and evaluation
sit on top of them; the ``medseg`` command is a thin typer app over this Python API.
"""

from medseg.errors import MedsegError

__version__ = "0.1.0"
__all__ = ["MedsegError", "__version__"]
