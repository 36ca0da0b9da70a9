"""The data regimes of the regime suite (`frontier.py --regime`): clean, long tail, label noise, duplicates.

Each regime changes the training set only, from a fixed data seed (every arm and every run seed sees the same
rows); the test set is balanced (the same number of rows of every class) and its labels are clean:

* `clean`: the training rows as they are;
* `long_tail`: the upper half of the classes (`tail_classes`) keep `tail_share` of their training rows;
* `noise`: `noise_rate` of the training labels replaced by another class, uniformly (symmetric flips);
* `duplicates`: `N // copies` distinct rows, each repeated `copies` times (the same `N` rows in all).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

REGIMES = ("clean", "long_tail", "noise", "duplicates")
DATA_SEED = 1234


def tail_classes(num_classes: int) -> list[int]:
    """The classes a long tail thins: the upper half (class 1 of two)."""
    return list(range(num_classes - num_classes // 2, num_classes))


def regime_name(regime: str, noise_rate: float) -> str:
    """`noise20` for 20% label noise, else the regime's own name (results files and plots)."""
    return f"noise{round(100 * noise_rate)}" if regime == "noise" else regime


def long_tail_rows(labels: np.ndarray, num_classes: int, tail_share: float, seed: int = DATA_SEED) -> np.ndarray:
    """Row indices of a long-tailed subset: every row of the head classes, `ceil(tail_share * n_c)` of each tail
    class (a seeded uniform choice), in ascending order."""
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(labels == c) for c in range(num_classes) if c not in tail_classes(num_classes)]
    for c in tail_classes(num_classes):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.choice(rows, size=min(len(rows), math.ceil(tail_share * len(rows))), replace=False))
    return np.sort(np.concatenate(keep))


def flip_labels(labels: np.ndarray, num_classes: int, rate: float, seed: int = DATA_SEED) -> np.ndarray:
    """`floor(rate * N)` labels, chosen uniformly, each replaced by one of the other classes uniformly."""
    rng = np.random.default_rng(seed)
    labels = labels.copy()
    flipped = rng.choice(len(labels), size=math.floor(rate * len(labels)), replace=False)
    offset = rng.integers(1, num_classes, size=len(flipped))  # 1 .. C-1: never the same class
    labels[flipped] = (labels[flipped] + offset) % num_classes
    return labels


def duplicate_rows(num_rows: int, copies: int, seed: int = DATA_SEED) -> np.ndarray:
    """`num_rows // copies` distinct rows (a seeded uniform choice), each `copies` times: `num_rows` row indices
    (a multiple of `copies`)."""
    rng = np.random.default_rng(seed)
    distinct = rng.choice(num_rows, size=num_rows // copies, replace=False)
    return np.repeat(np.sort(distinct), copies)


def balanced_rows(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The first `min_c n_c` rows of every class: a test set with as many rows of each class."""
    per_class = min(int((labels == c).sum()) for c in range(num_classes))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)]))


def apply_regime(train: Any, test: Any, args: Any, num_classes: int) -> tuple[Any, Any]:
    """(train, test) `datasets.Dataset`s of the regime `args.regime` (see the module)."""
    test = test.select(balanced_rows(np.asarray(test["labels"]), num_classes))
    labels = np.asarray(train["labels"])
    if args.regime == "long_tail":
        train = train.select(long_tail_rows(labels, num_classes, args.tail_share))
    elif args.regime == "noise":
        noisy = flip_labels(labels, num_classes, args.noise_rate)
        train = train.remove_columns("labels").add_column("labels", noisy.tolist())
    elif args.regime == "duplicates":
        train = train.select(duplicate_rows(len(train), args.copies))
    return train, test


def class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Accuracy on the test rows of each class."""
    return [float((predictions[labels == c] == c).mean()) for c in range(num_classes)]


def flag_precision(values: np.ndarray, flipped: np.ndarray) -> float:
    """Share of wrong labels among the `flipped.sum()` rows of largest `values` (NaN last): how well a per-row
    statistic of the record (`PruningRecord.top_k(by=...)`) finds the mislabelled rows. Chance: the noise rate."""
    m = int(flipped.sum())
    order = np.argsort(-np.nan_to_num(values.astype(np.float64), nan=-np.inf), kind="stable")
    return float(flipped[order[:m]].mean()) if m else float("nan")
