"""Evaluation: clinical segmentation metrics per case and class, their summary, figures and reports.

``evaluate(pred, gt, out_dir)`` is what ``medseg evaluate`` runs; ``evaluate_arrays`` and
``summarise`` serve the training loop and ``medseg compare``. Figures live in
:mod:`medseg.evaluation.figures`, the self-contained HTML report in :mod:`medseg.evaluation.report`.
"""

from medseg.evaluation.evaluate import (
    CaseError,
    EvaluationResult,
    evaluate,
    evaluate_arrays,
    match_cases,
    read_metrics_csv,
    summarise,
    write_results,
)
from medseg.evaluation.metrics import METRICS, SUMMARY_METRICS, evaluate_pair, register_metric

__all__ = [
    "METRICS",
    "SUMMARY_METRICS",
    "CaseError",
    "EvaluationResult",
    "evaluate",
    "evaluate_arrays",
    "evaluate_pair",
    "match_cases",
    "read_metrics_csv",
    "register_metric",
    "summarise",
    "write_results",
]
