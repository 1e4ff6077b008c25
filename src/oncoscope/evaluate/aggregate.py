"""Group-level (patient, slide) scores aggregated from image predictions.

A group's scores always sum to 1, like an image's:

- ``mean``: each class's probability averaged over the group's images (the average call, the
  default for several classes such as slide tissue types).
- ``max`` with two classes ("any tumour", the usual patient-level rule in CT): the positive
  class's score is the highest positive probability of any of the group's images, the other
  class's score its complement. A patient with one slice called tumour at 0.99 scores 0.99 for
  tumour and 0.01 for healthy, however many healthy slices it has.
- ``max`` with more classes: each class's highest probability over the group's images, the
  group's scores then divided by their sum. The predicted class is the one that some image
  shows most strongly; the scores rank groups by that strongest evidence.

A group's true label: with two classes, the positive class if any of its images is positive
(a patient with one tumour slice has a tumour); with more classes, its most frequent image label
(ties go to the class listed first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.evaluate.metrics import Scores

Aggregation = Literal["max", "mean"]
AGGREGATIONS: tuple[str, ...] = ("auto", "max", "mean")


def default_aggregation(n_classes: int) -> Aggregation:
    """``max`` for two classes ("any tumour"), ``mean`` for more."""
    return "max" if n_classes == 2 else "mean"


def resolve_aggregation(method: str, n_classes: int) -> Aggregation:
    """``auto`` → :func:`default_aggregation`; ``max``/``mean`` as given.

    Raises:
        InvalidOptionError: another name.
    """
    if method == "auto":
        return default_aggregation(n_classes)
    if method == "max":
        return "max"
    if method == "mean":
        return "mean"
    raise InvalidOptionError(
        f"unknown aggregation '{method}'; use one of {', '.join(AGGREGATIONS)}"
    )


def describe_aggregation(method: str, n_classes: int) -> str:
    """One sentence for reports: how a group's scores come from its images' probabilities.

    Example:
        >>> describe_aggregation("max", 2)[:60]
        "A group's score for the positive class is the highest probab"
    """
    if method == "mean":
        return "A group's score per class is the mean of its images' probabilities."
    if n_classes == 2:
        return (
            "A group's score for the positive class is the highest probability of that class "
            "on any of its images; the other class's score is its complement."
        )
    return (
        "A group's score per class is the highest probability of that class on any of its "
        "images, divided by the sum of these maxima so that the scores sum to one."
    )


@dataclass(frozen=True)
class GroupScores:
    """One row per group: ``groups[i]`` has label and scores ``scores`` row ``i``."""

    groups: tuple[str, ...]
    scores: Scores
    method: Aggregation


def aggregate_groups(
    scores: Scores,
    groups: Sequence[Any] | NDArray[Any],
    method: Aggregation,
    *,
    positive: int = 1,
) -> GroupScores:
    """Aggregate image scores to one row per group (see the module docstring for the rules).

    Args:
        scores: image labels and probabilities.
        groups: ``(n,)`` the group of each image.
        method: ``max`` or ``mean`` (see the module docstring).
        positive: for two classes, the index of the positive class (the one ``max`` follows).

    Raises:
        OncoscopeError: ``groups`` not of the images' length.

    Example:
        >>> s = Scores.build([0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], ["healthy", "tumour"])
        >>> g = aggregate_groups(s, ["p1", "p1", "p2"], "max")
        >>> g.groups, g.scores.labels.tolist(), g.scores.probabilities.round(3).tolist()
        (('p1', 'p2'), [1, 0], [[0.2, 0.8], [0.7, 0.3]])
    """
    if len(groups) != len(scores.labels):
        raise OncoscopeError(f"{len(groups)} group ids for {len(scores.labels)} images")
    frame = pd.DataFrame(scores.probabilities, columns=range(len(scores.classes)))
    frame["group"] = np.asarray(groups).astype(str)
    frame["label"] = scores.labels
    grouped = frame.groupby("group", sort=False)
    probabilities = grouped[list(range(len(scores.classes)))].agg(method)
    if method == "max" and len(scores.classes) == 2:
        probabilities[1 - positive] = 1.0 - probabilities[positive]
    elif method == "max":
        probabilities = probabilities.div(probabilities.sum(axis=1), axis=0)
    if len(scores.classes) == 2:
        labels = grouped["label"].agg(lambda y: positive if (y == positive).any() else 1 - positive)
    else:
        labels = grouped["label"].agg(lambda y: int(np.bincount(y).argmax()))
    return GroupScores(
        groups=tuple(str(g) for g in probabilities.index),
        scores=Scores.build(labels.to_numpy(), probabilities.to_numpy(), scores.classes),
        method=method,
    )
