"""GLUE's official metrics as an `evaluate` module kept in this repository, so it loads without the Hub.

    metric = evaluate.load("recipes/metrics/glue", "mrpc")
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {'accuracy': 0.667, 'f1': 0.667}

Same configurations and result keys as the Hub's `glue` metric (CoLA: Matthews correlation; STS-B: Pearson
and Spearman correlation; MRPC, QQP: accuracy and F1 of class 1; the others: accuracy), computed with numpy
only (the values equal scikit-learn's and scipy's).
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR},
  year={2019}
}
"""

_DESCRIPTION = """\
The official metric of each GLUE task: Matthews correlation (cola), Pearson and Spearman correlation (stsb),
accuracy and F1 (mrpc, qqp), accuracy (sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (class ids; floats for stsb).
    references: gold labels (class ids; floats for stsb).
Returns:
    cola: {"matthews_correlation"}; stsb: {"pearson", "spearmanr"}; mrpc, qqp: {"accuracy", "f1"};
    every other task: {"accuracy"}.
Examples:
    >>> metric = evaluate.load("recipes/metrics/glue", "mrpc")
    >>> metric.compute(predictions=[0, 1], references=[0, 1])
    {'accuracy': 1.0, 'f1': 1.0}
"""

TASK_METRICS = {
    "cola": ("matthews_correlation",),
    "stsb": ("pearson", "spearmanr"),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "sst2": ("accuracy",),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "hans": ("accuracy",),
}


def accuracy(preds, labels):
    return float((preds == labels).mean())


def f1(preds, labels):
    """F1 of the positive class 1 (scikit-learn's binary F1; 0 when there is no positive at all)."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    fp = float(np.sum((preds == 1) & (labels != 1)))
    fn = float(np.sum((preds != 1) & (labels == 1)))
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator > 0 else 0.0


def matthews_correlation(preds, labels):
    """Multiclass Matthews correlation from the confusion matrix (as scikit-learn; 0 when undefined)."""
    classes, encoded = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    truth, pred = encoded[: len(labels)], encoded[len(labels) :]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (truth, pred), 1)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n_correct, n_samples = np.trace(confusion), confusion.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(x, y):
    """Pearson correlation (NaN when either side is constant, as scipy)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.dot(x, y) / denominator) if denominator > 0 else float("nan")


def rankdata(values):
    """Ranks from 1, ties get their average rank (scipy.stats.rankdata's 'average' method)."""
    values = np.asarray(values, dtype=np.float64)
    sorter = np.argsort(values, kind="mergesort")
    inverse = np.empty(len(values), dtype=np.intp)
    inverse[sorter] = np.arange(len(values))
    ordered = values[sorter]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(new_value)[inverse]
    starts = np.r_[np.nonzero(new_value)[0], len(new_value)]
    return 0.5 * (starts[dense] + starts[dense - 1] + 1)


def spearmanr(x, y):
    return pearson(rankdata(x), rankdata(y))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASK_METRICS:
            raise KeyError(f"Unknown GLUE configuration {self.config_name!r}: choose one of {list(TASK_METRICS)}.")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        preds, labels = np.asarray(predictions), np.asarray(references)
        if len(preds) != len(labels):
            raise ValueError(f"{len(preds)} predictions for {len(labels)} references.")
        functions = {
            "accuracy": accuracy,
            "f1": f1,
            "matthews_correlation": matthews_correlation,
            "pearson": pearson,
            "spearmanr": spearmanr,
        }
        return {name: functions[name](preds, labels) for name in TASK_METRICS[self.config_name]}
