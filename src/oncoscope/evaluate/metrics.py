"""Classification metrics per class and macro-averaged, from labels and class probabilities.

Every figure comes from torchmetrics' functional classification metrics (exact, threshold-free
curves; chosen over scikit-learn for speed: its input validation costs about 10x more per call,
which a 1000-resample bootstrap repeats thousands of times; counting metrics come out in
float32). A metric that is undefined on the data given (AUROC of a class absent from the labels,
precision of a class never predicted) is ``None``, never a crash and never a silent 0; macro
figures average the classes where the metric is defined (as scikit-learn does with
``zero_division=nan``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchmetrics.functional.classification as tm
from numpy.typing import NDArray

from oncoscope.errors import OncoscopeError

#: Per-class metrics, in report order.
CLASS_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "npv",
    "f1",
    "auroc",
    "average_precision",
)
#: Macro metrics: ``accuracy`` is the overall (top-1) accuracy, ``map`` the mean AP; the rest
#: are the unweighted means of the per-class figures (macro ``recall`` = balanced accuracy).
MACRO_METRICS = ("accuracy", "precision", "recall", "specificity", "npv", "f1", "auroc", "map")

#: Human names for reports.
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "npv": "NPV",
    "f1": "F1",
    "auroc": "AUROC",
    "average_precision": "Average precision",
    "map": "mAP",
}

Metric = float | None


@dataclass(frozen=True)
class Scores:
    """Labels and class probabilities of ``n`` images (or groups).

    Attributes:
        labels: ``(n,)`` int, the true class index into ``classes``.
        probabilities: ``(n, K)`` float, a score per class in [0, 1] (softmax, or an
            aggregate of softmax values).
        classes: the ``K`` class names.
    """

    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]
    classes: tuple[str, ...]

    @classmethod
    def build(
        cls, labels: Sequence[int] | NDArray[Any], probabilities: Any, classes: Sequence[str]
    ) -> Scores:
        """Check and wrap the arrays.

        Raises:
            OncoscopeError: labels and probabilities of different lengths, probabilities that
                are not ``(n, len(classes))``, labels outside ``0..K-1``, or no rows.
        """
        y = np.asarray(labels)
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise OncoscopeError(
                f"probabilities have shape {p.shape}; expected (n, {len(classes)}) for classes "
                f"{list(classes)}"
            )
        if y.ndim != 1 or len(y) != len(p):
            raise OncoscopeError(
                f"{len(y)} labels but {len(p)} predictions; each image needs one of each"
            )
        if len(y) == 0:
            raise OncoscopeError("no predictions to evaluate")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
            raise OncoscopeError(f"labels must be class indices 0..{len(classes) - 1}")
        return cls(y.astype(np.int64), p, tuple(classes))

    def subset(self, indices: NDArray[np.intp]) -> Scores:
        """The rows at ``indices`` (repeats allowed, as a bootstrap resample needs)."""
        return Scores(self.labels[indices], self.probabilities[indices], self.classes)

    def predictions(self, threshold: float | None = None, positive: int = 1) -> NDArray[np.int64]:
        """Predicted class indices: the highest score, or for two classes with ``threshold``,
        ``positive`` when its score is at least the threshold."""
        if threshold is None:
            return np.asarray(self.probabilities.argmax(axis=1), dtype=np.int64)
        if len(self.classes) != 2:
            raise OncoscopeError("a threshold applies to two-class tasks only")
        hit = self.probabilities[:, positive] >= threshold
        return np.where(hit, positive, 1 - positive).astype(np.int64)


def _number(value: Any) -> Metric:
    number = float(value)
    return None if math.isnan(number) else number


def _macro(values: list[Metric]) -> Metric:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def classification_metrics(
    scores: Scores, *, threshold: float | None = None, positive: int = 1
) -> dict[str, Any]:
    """All metrics of :data:`CLASS_METRICS` per class (one-vs-rest) and :data:`MACRO_METRICS`.

    Args:
        scores: labels and probabilities.
        threshold: for two classes, predict ``positive`` at or above this score (an operating
            point); otherwise the predicted class is the highest score.
        positive: index of the positive class for ``threshold``.

    Returns:
        ``{"macro": {metric: value}, "classes": {name: {metric: value}}, "confusion_matrix":
        {"labels", "counts", "normalized"}}``; values are floats or ``None`` when undefined.
        ``counts[i][j]`` is the number with true class i predicted as j; ``normalized`` divides
        each row by its total (``None`` for a class with no images).

    Example:
        >>> s = Scores.build([0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]], "ab")
        >>> m = classification_metrics(s)
        >>> b = m["classes"]["b"]
        >>> round(b["precision"], 4), b["recall"], b["specificity"], m["macro"]["auroc"]
        (0.6667, 1.0, 0.5, 1.0)
    """
    k = len(scores.classes)
    y = torch.tensor(scores.labels)
    p = torch.tensor(scores.probabilities)
    pred = torch.tensor(scores.predictions(threshold, positive))
    nan = float("nan")
    fixed: dict[str, Any] = {"num_classes": k, "average": None, "validate_args": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined figures are masked below
        tp, fp, tn, fn, _ = tm.multiclass_stat_scores(pred, y, **fixed).T
        hits = torch.nn.functional.one_hot(pred, k), torch.nn.functional.one_hot(y, k)
        values = {
            "accuracy": tm.multilabel_accuracy(*hits, num_labels=k, average=None),
            "precision": tm.multiclass_precision(pred, y, zero_division=nan, **fixed),
            "recall": tm.multiclass_recall(pred, y, zero_division=nan, **fixed),
            "specificity": tm.multiclass_specificity(pred, y, **fixed),
            "npv": tm.multiclass_negative_predictive_value(pred, y, zero_division=nan, **fixed),
            "f1": tm.multiclass_f1_score(pred, y, zero_division=nan, **fixed),
            "auroc": tm.multiclass_auroc(p, y, **fixed),
            "average_precision": tm.multiclass_average_precision(p, y, **fixed),
        }
        overall = tm.multiclass_accuracy(pred, y, k, average="micro", validate_args=False)
        counts = tm.multiclass_confusion_matrix(pred, y, k, validate_args=False)
    positives, negatives = tp + fn, tn + fp
    undefined = {
        "specificity": negatives == 0,
        "f1": tp + fp + fn == 0,
        "auroc": (positives == 0) | (negatives == 0),
        "average_precision": positives == 0,
    }
    per_class: dict[str, dict[str, Metric]] = {}
    for index, name in enumerate(scores.classes):
        per_class[name] = {
            metric: None
            if metric in undefined and bool(undefined[metric][index])
            else _number(values[metric][index])
            for metric in CLASS_METRICS
        }
    macro: dict[str, Metric] = {"accuracy": _number(overall)}
    for metric in MACRO_METRICS[1:]:
        source = "average_precision" if metric == "map" else metric
        macro[metric] = _macro([per_class[name][source] for name in scores.classes])
    totals = counts.sum(dim=1)
    normalized = [
        [float(c) / int(totals[i]) for c in row] if totals[i] else None
        for i, row in enumerate(counts.tolist())
    ]
    return {
        "macro": macro,
        "classes": per_class,
        "confusion_matrix": {
            "labels": list(scores.classes),
            "counts": counts.tolist(),
            "normalized": normalized,
        },
    }


def flatten(metrics: dict[str, Any]) -> dict[tuple[str, ...], Metric]:
    """``{("macro", "auroc"): v, ("classes", name, "f1"): v, ...}`` of
    :func:`classification_metrics` (the confusion matrix left out).

    Example:
        >>> flatten({"macro": {"f1": 0.5}, "classes": {"a": {"f1": None}}})
        {('macro', 'f1'): 0.5, ('classes', 'a', 'f1'): None}
    """
    flat: dict[tuple[str, ...], Metric] = {("macro", m): v for m, v in metrics["macro"].items()}
    for name, values in metrics["classes"].items():
        flat.update({("classes", name, m): v for m, v in values.items()})
    return flat
