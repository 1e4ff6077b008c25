"""Percentile-bootstrap confidence intervals that resample groups (patients, slides), not images.

Images of one patient are not independent, so each resample draws whole groups with replacement
and keeps all of a drawn group's images. Written here because scikit-learn's ``resample`` and
SciPy's ``bootstrap`` draw single rows, not groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from oncoscope.errors import InvalidOptionError, OncoscopeError

#: Fewest groups (patients, slides) in which every class present must appear for an interval
#: to be trusted. With fewer, a group bootstrap has too few distinct resamples: with one group
#: per class every resample is the data itself and the interval has zero width ("0.957 (0.957
#: to 0.957)"); with two, a sensitivity can only be 0, 0.5 or 1 and the percentile interval
#: covers far less than its nominal 95%. Five per class is a floor, not a guarantee.
MIN_GROUPS_PER_CLASS = 5

Key = tuple[str, ...]
#: Maps row indices to named figures; a name is a path such as ``("macro", "auroc")``.
Statistic = Callable[[NDArray[np.intp]], Mapping[Key, float | None]]


def group_members(groups: Sequence[Any] | NDArray[Any]) -> list[NDArray[np.intp]]:
    """Row indices of each group, groups in order of first appearance.

    Example:
        >>> [m.tolist() for m in group_members(["p1", "p2", "p1"])]
        [[0, 2], [1]]
    """
    values = np.asarray(groups).astype(str)
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == code).astype(np.intp) for code in order]


def group_resamples(
    groups: Sequence[Any] | NDArray[Any], n_resamples: int, seed: int
) -> Iterator[NDArray[np.intp]]:
    """Yield ``n_resamples`` row-index arrays, each made of whole groups drawn with replacement.

    Each resample draws as many groups as there are (so a patient may appear twice, with all of
    its images each time); the draws depend only on ``seed``.

    Raises:
        InvalidOptionError: ``n_resamples`` below 1.
    """
    if n_resamples < 1:
        raise InvalidOptionError(f"resamples must be at least 1, not {n_resamples}")
    members = group_members(groups)
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[g] for g in drawn])


def interval_trust(
    labels: NDArray[np.integer[Any]],
    groups: Sequence[Any] | NDArray[Any],
    classes: Sequence[str],
    minimum: int = MIN_GROUPS_PER_CLASS,
) -> dict[str, Any]:
    """Whether group-bootstrap intervals over these rows can be trusted: every class present
    must appear in at least ``minimum`` groups.

    Args:
        labels: ``(n,)`` class index of each row.
        groups: ``(n,)`` the group of each row.
        classes: the class names (index order).
        minimum: fewest groups per class (default :data:`MIN_GROUPS_PER_CLASS`).

    Returns:
        ``{"trusted": bool, "min_groups_per_class": minimum, "groups_per_class": {class: n},
        "warning": str or None}``; ``n`` counts the groups holding at least one row of the
        class (a class with no rows is listed with 0 and has no interval to judge).

    Example:
        >>> trust = interval_trust(np.array([0, 1, 0]), ["p1", "p1", "p2"], ["a", "b"])
        >>> trust["trusted"], trust["groups_per_class"]
        (False, {'a': 2, 'b': 1})
    """
    values = np.asarray(groups).astype(str)
    labels = np.asarray(labels)
    counts = {
        name: len(set(values[labels == index].tolist())) for index, name in enumerate(classes)
    }
    short = {name: n for name, n in counts.items() if 0 < n < minimum}
    warning = None
    if short:
        listed = ", ".join(
            f"{name} in {n} group{'s' if n > 1 else ''}" for name, n in short.items()
        )
        warning = (
            f"intervals come from too few groups and are not to be trusted: {listed} "
            f"(fewer than {minimum} per class)"
        )
    return {
        "trusted": not short,
        "min_groups_per_class": minimum,
        "groups_per_class": counts,
        "warning": warning,
    }


def bootstrap(
    statistic: Statistic,
    groups: Sequence[Any] | NDArray[Any],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[Key, dict[str, float | None]]:
    """Point estimate and percentile interval of every figure a statistic returns.

    Args:
        statistic: maps row indices to named figures (``None`` where undefined).
        groups: ``(n,)`` the group of each row.
        n_resamples: number of group resamples.
        seed: seed of the resampling.
        confidence: interval coverage (0.95 gives the 2.5th and 97.5th percentiles).

    Returns:
        ``{name: {"value", "ci_low", "ci_high"}}``. The interval uses the resamples where the
        figure is defined; it is ``None`` where the point estimate is undefined or no resample
        defines it.

    Raises:
        OncoscopeError: no rows.
        InvalidOptionError: bad ``n_resamples`` or ``confidence``.

    Example:
        >>> values = np.array([1.0, 1.0, 0.0, 0.0])
        >>> out = bootstrap(lambda i: {("mean",): float(values[i].mean())}, ["a", "a", "b", "b"],
        ...                 n_resamples=200, seed=0)
        >>> out["mean",]["value"], out["mean",]["ci_low"], out["mean",]["ci_high"]
        (0.5, 0.0, 1.0)
    """
    if not 0 < confidence < 1:
        raise InvalidOptionError(f"confidence must be between 0 and 1, not {confidence}")
    if len(groups) == 0:
        raise OncoscopeError("no rows to resample")
    point = statistic(np.arange(len(groups), dtype=np.intp))
    draws: dict[Key, list[float]] = {name: [] for name in point}
    for indices in group_resamples(groups, n_resamples, seed):
        for name, value in statistic(indices).items():
            if value is not None and name in draws:
                draws[name].append(value)
    tail = (1 - confidence) / 2 * 100
    result: dict[Key, dict[str, float | None]] = {}
    for name, value in point.items():
        low = high = None
        if value is not None and draws[name]:
            low, high = (float(v) for v in np.percentile(draws[name], [tail, 100 - tail]))
        result[name] = {"value": value, "ci_low": low, "ci_high": high}
    return result


def mark_differences(estimates: Iterable[dict[str, Any]], trusted: bool) -> None:
    """Add ``spans_zero`` (the interval contains 0) and ``significant`` (it excludes 0 and the
    intervals can be ``trusted``) to each difference estimate, in place (None without an
    interval)."""
    for estimate in estimates:
        low, high = estimate["ci_low"], estimate["ci_high"]
        spans = None if low is None or high is None else low <= 0 <= high
        estimate["spans_zero"] = spans
        estimate["significant"] = None if spans is None else not spans and trusted


def paired_bootstrap(
    figures: Callable[[str, NDArray[np.intp]], Mapping[Key, float | None]],
    names: Sequence[str],
    reference: str,
    groups: Sequence[Any] | NDArray[Any],
    *,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """Each model's figures and their differences from ``reference``'s, with intervals over the
    same resampled groups (a paired bootstrap: every model was scored on the same rows).

    Args:
        figures: ``(model name, row indices) -> {figure key: value or None}``.
        names: the models; ``reference`` is one of them.
        groups, resamples, seed, confidence: as :func:`bootstrap`.

    Returns:
        ``{name: {*key: estimate, "difference": {*key: estimate}}}``, nested (:func:`nest`), each
        estimate as :func:`bootstrap` gives it; mark the differences with
        :func:`mark_differences`.
    """

    def statistic(indices: NDArray[np.intp]) -> dict[Key, float | None]:
        per_model = {name: figures(name, indices) for name in names}
        out: dict[Key, float | None] = {}
        for name, values in per_model.items():
            for key, value in values.items():
                base = per_model[reference][key]
                out[(name, *key)] = value
                out[(name, "difference", *key)] = (
                    None if value is None or base is None else value - base
                )
        return out

    return nest(
        bootstrap(statistic, groups, n_resamples=resamples, seed=seed, confidence=confidence)
    )


def nest(flat: Mapping[Key, Any]) -> dict[str, Any]:
    """Turn path names back into nested mappings.

    Example:
        >>> nest({("macro", "f1"): 1, ("classes", "a", "f1"): 2})
        {'macro': {'f1': 1}, 'classes': {'a': {'f1': 2}}}
    """
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested
