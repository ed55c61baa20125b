"""Inference: ``Predictor(run_dir).predict(path_or_array)`` and batch prediction to files."""

from medseg.inference.predictor import (
    BatchReport,
    Prediction,
    Predictor,
    expand_inputs,
    output_path,
    predict_many,
)

__all__ = ["BatchReport", "Prediction", "Predictor", "expand_inputs", "output_path", "predict_many"]
