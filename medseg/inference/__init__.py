"""Inference: ``Predictor(run_dir).predict(path_or_array)`` and batch prediction to files.

Importing it loads no training code: the run format it reads lives in :mod:`medseg.run`.
"""

from medseg.inference.batch import BatchReport, predict_many
from medseg.inference.paths import expand_inputs, output_path
from medseg.inference.postprocess import keep_largest_components
from medseg.inference.predictor import Prediction, Predictor

__all__ = [
    "BatchReport",
    "Prediction",
    "Predictor",
    "expand_inputs",
    "keep_largest_components",
    "output_path",
    "predict_many",
]
