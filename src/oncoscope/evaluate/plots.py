"""Evaluation figures as PNG files: ROC and precision-recall curves, confusion matrix,
calibration (reliability) curve, and a run's training curves.

Curves come from scikit-learn's display classes drawn on matplotlib figures made without
pyplot's global state (Agg canvas), so plotting in a loop does not accumulate open figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from oncoscope.evaluate.metrics import Scores
from oncoscope.io.atomic import atomic_path


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return path


def _curve_classes(scores: Scores, positive: int) -> Iterator[tuple[int, str]]:
    """Classes to draw one-vs-rest curves for: the positive class alone for two classes,
    otherwise every class that has both positives and negatives."""
    indices = [positive] if len(scores.classes) == 2 else range(len(scores.classes))
    for index in indices:
        truth = scores.labels == index
        if 0 < truth.sum() < len(truth):
            yield index, scores.classes[index]


def _one_vs_rest(
    scores: Scores, positive: int, display: Any, *, clip: bool = False, **options: Any
) -> tuple[Figure, Any]:
    """A figure with one scikit-learn ``display`` curve per class of :func:`_curve_classes`.

    Args:
        scores: labels and class probabilities.
        positive: the positive class of a two-class problem.
        display: a display class with ``from_predictions`` (``RocCurveDisplay``...).
        clip: clip the probabilities to ``[0, 1]`` first (for rounding above 1).
        options: passed on to ``from_predictions``.

    Returns:
        The figure and its axes.
    """
    figure = Figure(figsize=(5.2, 4.6))
    ax = figure.add_subplot()
    for index, name in _curve_classes(scores, positive):
        probabilities = scores.probabilities[:, index]
        display.from_predictions(
            scores.labels == index,
            probabilities.clip(0, 1) if clip else probabilities,
            name=name,
            ax=ax,
            **options,
        )
    return figure, ax


def _legend(ax: Any, loc: str) -> None:
    """A legend at ``loc``, unless nothing was drawn (a class absent from the data)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize="small")


def plot_roc(scores: Scores, path: Path, *, title: str, positive: int = 1) -> Path:
    """ROC curve (one-vs-rest) per class, with AUROC in the legend, written to ``path``."""
    figure, ax = _one_vs_rest(scores, positive, RocCurveDisplay)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(title=title, xlabel="1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    _legend(ax, "lower right")
    return _save(figure, path)


def plot_precision_recall(scores: Scores, path: Path, *, title: str, positive: int = 1) -> Path:
    """Precision-recall curve (one-vs-rest) per class, with AP in the legend."""
    figure, ax = _one_vs_rest(scores, positive, PrecisionRecallDisplay)
    ax.set(title=title, xlabel="recall (sensitivity)", ylabel="precision (PPV)", ylim=(0, 1.02))
    _legend(ax, "lower left")
    return _save(figure, path)


def plot_confusion(confusion: dict[str, Any], path: Path, *, title: str) -> Path:
    """Confusion matrix as counts and as row fractions (each true class sums to 1)."""
    counts = np.asarray(confusion["counts"])
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    labels = confusion["labels"]
    figure = Figure(figsize=(4.2 * 2 + 1, 4.2))
    for position, (matrix, kind, fmt) in enumerate(
        ((counts, "counts", "d"), (fractions, "fraction of true class", ".2f")), start=1
    ):
        ax = figure.add_subplot(1, 2, position)
        display = ConfusionMatrixDisplay(matrix, display_labels=labels)
        display.plot(ax=ax, values_format=fmt, colorbar=False, cmap="Blues")
        ax.set_title(f"{title}: {kind}")
        ax.tick_params(axis="x", labelrotation=30)
    return _save(figure, path)


def plot_calibration(
    scores: Scores, path: Path, *, title: str, positive: int = 1, n_bins: int = 10
) -> Path:
    """Reliability curve per class: the observed fraction of positives against the mean
    predicted probability in ``n_bins`` equal-width bins (the diagonal is perfect calibration)."""
    figure, ax = _one_vs_rest(scores, positive, CalibrationDisplay, clip=True, n_bins=n_bins)
    ax.set(title=title, xlabel="mean predicted probability", ylabel="observed fraction")
    _legend(ax, "upper left")
    return _save(figure, path)


def plot_training_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Loss and accuracy per epoch, training and validation (seed 000 Figs. 5-6), from a run's
    ``metrics.csv``; ``None`` when the file is missing or has no rows."""
    if not metrics_csv.is_file():
        return None
    history = pd.read_csv(metrics_csv)
    if history.empty or "epoch" not in history:
        return None
    figure = Figure(figsize=(10, 4))
    epochs = history["epoch"] + 1
    for position, (what, label) in enumerate((("loss", "loss"), ("acc", "accuracy")), start=1):
        ax = figure.add_subplot(1, 2, position)
        for split, style in (("train", "-o"), ("val", "-s")):
            column = f"{split}_{what}"
            if column in history and history[column].notna().any():
                ax.plot(epochs, history[column], style, markersize=3, label=split)
        ax.set(title=f"{label} per epoch", xlabel="epoch", ylabel=label)
        _legend(ax, "best")
    return _save(figure, path)
