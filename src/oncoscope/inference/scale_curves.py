"""The arithmetic of the scale search (seed 003, Algorithm 1) on distance curves.

A point's curves are its ``(N scales, C classes)`` distance matrix ``D = X . W / ||W||``: row
``i`` holds the distances of the features of the crop at scale ``s_i`` to the classifier's ``C``
separating hyperplanes. Here live the steps that need no model or slide: the distances
(line 9), each point's scale (line 10), the slide's majority vote, and the shape of each point's
curve as the seed describes it (Fig. 4): a clear interior peak (the set is wide enough), a
monotonic curve (the best scale lies beyond one end of the set: widen it that way), or a nearly
flat one (the scales are equivalent). Written by hand: a few lines of numpy no library holds.

Curve shape is judged on the envelope ``e_i = max_c D[i, c]``, the quantity whose argmax picks
the point's scale. With ``R = max(e) - min(e)``:

* ``flat`` when ``R <= FLAT_RELATIVE_RANGE * max|e|`` (the envelope varies by at most 5% of its
  size: every scale gives the same margin);
* otherwise, with ``i*`` the argmax, the drops from the peak to the lowest value on each side,
  ``left = e[i*] - min(e[:i*])`` and ``right = e[i*] - min(e[i*+1:])`` (0 on a side with no
  scales): ``peak`` when both are at least ``PEAK_MIN_DROP * R`` (a clear interior maximum),
  else ``monotonic_low`` when the left drop is the small one (the envelope is highest at, or
  levels off towards, the lowest magnification) and ``monotonic_high`` otherwise.

When at least :data:`WIDEN_FRACTION` of the points are monotonic towards one end, the scale
set should be widened that way (:func:`widen_advice`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

CurveKind = Literal["peak", "monotonic_low", "monotonic_high", "flat"]
CURVE_KINDS: tuple[CurveKind, ...] = ("peak", "monotonic_low", "monotonic_high", "flat")
#: An envelope whose range is at most this share of its largest magnitude is ``flat``.
FLAT_RELATIVE_RANGE = 0.05
#: A ``peak`` falls by at least this share of the envelope's range on both sides.
PEAK_MIN_DROP = 0.10
#: Share of points monotonic towards one end above which widening the set that way is advised.
WIDEN_FRACTION = 0.25


def hyperplane_distances(
    features: np.ndarray[Any, Any],
    weight: np.ndarray[Any, Any],
    bias: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Distance matrix of Algorithm 1, line 9: ``D = X . W / ||W||`` (column-wise norms).

    Args:
        features: ``(N, M)`` features ``X`` (one row per scale).
        weight: ``(M, C)`` matrix ``W`` whose column ``c`` is the normal of class ``c``'s
            hyperplane (a PyTorch ``nn.Linear`` stores its transpose, ``(C, M)``).
        bias: ``(C,)`` classifier bias, or None. With it, ``D[i, c] = (x_i . w_c + b_c) /
            ||w_c||``: the signed Euclidean distance of ``x_i`` to the hyperplane ``w_c . x +
            b_c = 0``. Without it (the seed's formula), the distance to the parallel hyperplane
            through the origin.

    Returns:
        ``(N, C) float64``, each column divided by the norm of its own weight vector.

    Example:
        >>> X = np.array([[1.0, 2.0], [3.0, 0.0]])
        >>> W = np.array([[3.0, 0.0], [4.0, 2.0]])  # ||w_0|| = 5, ||w_1|| = 2
        >>> hyperplane_distances(X, W).tolist()
        [[2.2, 2.0], [1.8, 0.0]]
    """
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    products = x @ w
    if bias is not None:
        products = products + np.asarray(bias, dtype=np.float64)
    norms = np.linalg.norm(w, axis=0)
    distances: np.ndarray[Any, np.dtype[np.float64]] = products / norms
    return distances


def point_scale_index(distances: np.ndarray[Any, Any]) -> int:
    """Algorithm 1, line 10: index of the scale of the largest distance over all classes.

    Args:
        distances: ``(N, C)`` distance matrix of one point.

    Returns:
        ``argmax_i max_c D[i, c]`` (the first such scale on an exact tie).

    Example:
        >>> point_scale_index(np.array([[0.1, 0.5], [0.9, -1.0], [0.2, 0.3]]))
        1
    """
    return int(np.argmax(np.max(np.asarray(distances), axis=-1)))


def majority_vote(votes: Sequence[float], scales: Sequence[float]) -> float:
    """The slide's scale: the scale most points voted for.

    A tie goes to the tied scale nearest the median vote (in log magnification); if two are
    equally near, to the lower magnification (fewer tiles to process at the same evidence).

    Args:
        votes: one scale (magnification) per point, each one of ``scales``.
        scales: the scale set searched.

    Raises:
        ValueError: no votes.

    Example:
        >>> majority_vote([20, 20, 17, 25, 25], [10, 17, 20, 25])  # 20 and 25 tie; median 20
        20
        >>> majority_vote([17, 25], [17, 20, 25])  # tie, median between: the lower one
        17
    """
    if not votes:
        raise ValueError("no votes to count")
    counts = Counter(votes)
    top = max(counts.values())
    tied = [s for s in scales if counts.get(s, 0) == top]
    median_log = float(np.median(np.log(np.asarray(votes, dtype=np.float64))))
    return min(tied, key=lambda s: (round(abs(math.log(s) - median_log), 9), s))


def classify_curve(distances: np.ndarray[Any, Any]) -> CurveKind:
    """Shape of a point's distance curves (see the module docstring for the thresholds).

    Args:
        distances: ``(N, C)`` distance matrix of one point, rows in increasing scale.

    Example:
        >>> classify_curve(np.array([[1.0], [3.0], [2.0]]))
        'peak'
        >>> classify_curve(np.array([[3.0], [2.0], [1.0]]))
        'monotonic_low'
        >>> classify_curve(np.array([[2.0], [2.01], [2.02]]))
        'flat'
    """
    envelope = np.max(np.asarray(distances, dtype=np.float64), axis=-1)
    spread = float(envelope.max() - envelope.min())
    if spread <= FLAT_RELATIVE_RANGE * float(np.abs(envelope).max()):
        return "flat"
    best = int(np.argmax(envelope))
    peak = float(envelope[best])
    left = peak - float(envelope[:best].min()) if best > 0 else 0.0
    right = peak - float(envelope[best + 1 :].min()) if best < len(envelope) - 1 else 0.0
    if min(left, right) >= PEAK_MIN_DROP * spread:
        return "peak"
    return "monotonic_low" if left <= right else "monotonic_high"


def widen_advice(kinds: Sequence[CurveKind], scales: Sequence[float]) -> dict[str, Any]:
    """Whether the scale set should be widened, and which way.

    Args:
        kinds: each point's curve kind.
        scales: the scale set searched (increasing).

    Returns:
        ``{"low": {"fraction", "advised", "suggest"}, "high": {...}, "threshold", "message"}``:
        the share of points monotonic towards each end, whether it reaches
        :data:`WIDEN_FRACTION`, two scales beyond that end at the set's mean ratio between
        neighbours, and a one-line message (None when the set is wide enough).

    Example:
        >>> advice = widen_advice(["monotonic_high"] * 3 + ["peak"], [10, 20, 40])
        >>> advice["high"]["advised"], advice["high"]["suggest"], advice["low"]["advised"]
        (True, [80.0, 160.0], False)
    """
    total = max(len(kinds), 1)
    ordered = sorted(scales)
    ratio = (ordered[-1] / ordered[0]) ** (1 / (len(ordered) - 1)) if len(ordered) > 1 else 1.2
    advice: dict[str, Any] = {"threshold": WIDEN_FRACTION}
    messages = []
    for end, kind, edge, step in (
        ("low", "monotonic_low", ordered[0], 1 / ratio),
        ("high", "monotonic_high", ordered[-1], ratio),
    ):
        fraction = sum(k == kind for k in kinds) / total
        advised = len(kinds) > 0 and fraction >= WIDEN_FRACTION
        suggest = [round(edge * step, 1), round(edge * step * step, 1)]
        advice[end] = {"fraction": fraction, "advised": advised, "suggest": suggest}
        if advised:
            direction = "lower" if end == "low" else "higher"
            messages.append(
                f"{fraction:.0%} of points are monotonic towards x{edge:g}: widen the set to "
                f"{direction} magnifications (e.g. add {', '.join(f'x{s:g}' for s in suggest)})"
            )
    advice["message"] = "; ".join(messages) if messages else None
    return advice


def vote_histogram(votes: Sequence[float], scales: Sequence[float]) -> dict[float, int]:
    """Votes per scale, every scale of the set present (0 when none voted for it).

    Example:
        >>> vote_histogram([20, 20, 17], [17, 20, 25])
        {17: 1, 20: 2, 25: 0}
    """
    counts = Counter(votes)
    return {s: counts.get(s, 0) for s in scales}
