"""The operating point of a two-class model: a threshold picked on validation, used on test.

Picking the threshold on the split it is scored on would flatter the model, so
:func:`pick_threshold` only ever sees validation scores; the caller applies the result to test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_curve

from oncoscope.errors import InvalidOptionError, OncoscopeError

METHODS = ("youden", "sensitivity")


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the positive class's score and what it gave on validation."""

    method: str
    threshold: float
    val_sensitivity: float
    val_specificity: float
    target_sensitivity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def pick_threshold(
    truth: NDArray[np.bool_],
    score: NDArray[np.float64],
    *,
    method: str = "youden",
    target_sensitivity: float | None = None,
) -> OperatingPoint:
    """Threshold on validation scores: Youden's J (max sensitivity + specificity - 1) or the
    highest threshold that reaches a target sensitivity.

    Args:
        truth: ``(n,)`` bool, validation image (or group) is positive.
        score: ``(n,)`` float, the positive class's score; predict positive at ``>= threshold``.
        method: ``youden`` or ``sensitivity``.
        target_sensitivity: for ``sensitivity``, the sensitivity to reach (0-1].

    Raises:
        OncoscopeError: validation holds only one class (no threshold can be chosen).
        InvalidOptionError: unknown method, or ``sensitivity`` without a target in (0, 1].

    Example:
        >>> truth = np.array([False, False, True, True])
        >>> pick_threshold(truth, np.array([0.1, 0.4, 0.35, 0.8])).threshold
        0.8
        >>> pick_threshold(truth, np.array([0.1, 0.4, 0.35, 0.8]), method="sensitivity",
        ...                target_sensitivity=1.0).threshold
        0.35
    """
    if method not in METHODS:
        raise InvalidOptionError(f"unknown threshold method '{method}'; use youden or sensitivity")
    if method == "sensitivity" and (target_sensitivity is None or not 0 < target_sensitivity <= 1):
        raise InvalidOptionError("a target sensitivity in (0, 1] is needed")
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        raise OncoscopeError("the validation split holds one class only; no threshold to pick")
    fpr, tpr, thresholds = roc_curve(truth, score, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first threshold is +inf (nothing called positive)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden":
        j = tpr - fpr  # ties (within rounding) go to the highest threshold
        best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])
    else:
        best = int(np.flatnonzero(tpr >= float(target_sensitivity or 0))[0])
    return OperatingPoint(
        method=method,
        threshold=float(thresholds[best]),
        val_sensitivity=float(tpr[best]),
        val_specificity=float(1 - fpr[best]),
        target_sensitivity=target_sensitivity if method == "sensitivity" else None,
    )
