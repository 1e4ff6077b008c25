"""Train/validation/test splits by group (patient or slide), never one group in two splits.

Groups are split by count in the given ratio (3:1:1 by default) and stratified by a per-group
key (e.g. "has a large lesion", "small lesions only", "no tumour"): the groups are shuffled
(seeded) within each stratum, laid one stratum after the other, and dealt to the splits in an
order that spreads every split evenly along that sequence, so each stratum is shared in the ratio
as far as its size allows.

Written by hand because scikit-learn's ``StratifiedGroupKFold`` balances image counts rather than
group counts and needs at least as many groups as folds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from oncoscope.errors import InvalidOptionError

SPLITS = ("train", "val", "test")


def parse_ratio(text: str) -> tuple[float, float, float]:
    """Parse ``"3:1:1"`` (train:val:test, any non-negative numbers) into fractions summing to 1.

    Raises:
        InvalidOptionError: not three non-negative numbers with a positive train part.
    """
    parts = text.split(":")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 or not math.isfinite(v) for v in values) or values[0] <= 0:
        raise InvalidOptionError(
            f"split '{text}' is not train:val:test with a positive train part, e.g. 3:1:1"
        )
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def split_counts(n_groups: int, ratio: tuple[float, float, float]) -> tuple[int, int, int]:
    """Number of groups per split: largest remainder, at least one per split with a share.

    Raises:
        InvalidOptionError: fewer groups than splits with a non-zero share.
    """
    needed = sum(1 for r in ratio if r > 0)
    if n_groups < needed:
        shares = ":".join(f"{r:g}" for r in ratio)
        raise InvalidOptionError(
            f"{n_groups} patient(s) or slide(s) cannot fill a split with shares {shares}: each "
            f"non-empty split needs one; add data or give zero shares, e.g. --split 1:0:0"
        )
    exact = [n_groups * r for r in ratio]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n_groups - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if ratio[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts[0], counts[1], counts[2]


def split_groups(
    strata: Mapping[str, str],
    ratio: tuple[float, float, float] = (0.6, 0.2, 0.2),
    *,
    seed: int = 0,
) -> dict[str, str]:
    """Assign every group to ``train``, ``val`` or ``test``.

    Args:
        strata: group id -> stratum key (use one key for all groups to skip stratification).
        ratio: shares of train, val and test (fractions, see :func:`parse_ratio`).
        seed: seed of the shuffle; the same input and seed give the same split.

    Returns:
        group id -> split name.

    Raises:
        InvalidOptionError: too few groups for the ratio (see :func:`split_counts`).

    Example:
        >>> s = split_groups({f"p{i}": "x" for i in range(10)}, (0.6, 0.2, 0.2), seed=1)
        >>> sorted(list(s.values()).count(k) for k in ("train", "val", "test"))
        [2, 2, 6]
    """
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for stratum in sorted(set(strata.values())):
        members = sorted(g for g, s in strata.items() if s == stratum)
        order.extend(members[i] for i in rng.permutation(len(members)))
    counts = split_counts(len(order), ratio)
    assigned = [0, 0, 0]
    result: dict[str, str] = {}
    for position, group in enumerate(order, start=1):
        deficits = [counts[i] * position / len(order) - assigned[i] for i in range(3)]
        choice = max(range(3), key=lambda i: (deficits[i], -i))
        assigned[choice] += 1
        result[group] = SPLITS[choice]
    return result
