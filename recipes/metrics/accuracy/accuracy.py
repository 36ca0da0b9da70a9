"""Accuracy as an `evaluate` module kept in this repository, so it loads without the Hub.

metric = evaluate.load("recipes/metrics/accuracy")
metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])  # {'accuracy': 0.667}
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the share of predictions equal to their reference, optionally weighted per example."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: gold class ids.
    sample_weight: optional per-example weights.
Returns:
    {"accuracy": float in [0, 1]}
Examples:
    >>> metric = evaluate.load("recipes/metrics/accuracy")
    >>> metric.compute(predictions=[1, 0], references=[1, 1])
    {'accuracy': 0.5}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, sample_weight=None):
        correct = (np.asarray(predictions) == np.asarray(references)).astype(np.float64)
        if len(correct) == 0:
            return {"accuracy": float("nan")}
        weights = np.ones_like(correct) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return {"accuracy": float(np.sum(correct * weights) / np.sum(weights))}
