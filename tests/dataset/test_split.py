from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoscope.dataset.split import SPLITS, parse_ratio, split_counts, split_groups
from oncoscope.errors import InvalidOptionError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3:1:1", (0.6, 0.2, 0.2)),
        ("8:1:1", (0.8, 0.1, 0.1)),
        ("1:0:0", (1.0, 0.0, 0.0)),
        ("0.7:0.15:0.15", (0.7, 0.15, 0.15)),
    ],
)
def test_ratios(text, expected):
    assert parse_ratio(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["3:1", "a:b:c", "0:1:1", "3:-1:1", "3:1:1:1"])
def test_bad_ratios(text):
    with pytest.raises(InvalidOptionError, match="train:val:test"):
        parse_ratio(text)


def test_counts_follow_the_ratio_by_patients():
    assert split_counts(10, (0.6, 0.2, 0.2)) == (6, 2, 2)
    assert split_counts(5, (0.6, 0.2, 0.2)) == (3, 1, 1)
    assert split_counts(3, (0.6, 0.2, 0.2)) == (1, 1, 1)
    assert split_counts(4, (1.0, 0.0, 0.0)) == (4, 0, 0)
    with pytest.raises(InvalidOptionError, match="2 patient"):
        split_counts(2, (0.6, 0.2, 0.2))


strata_lists = st.lists(
    st.sampled_from(["large", "small-only", "no-tumour"]), min_size=3, max_size=60
)


@settings(max_examples=80, deadline=None)
@given(
    strata=strata_lists,
    seed=st.integers(0, 10_000),
    parts=st.tuples(st.integers(1, 8), st.integers(0, 3), st.integers(0, 3)),
)
def test_split_properties(strata, seed, parts):
    ratio = tuple(p / sum(parts) for p in parts)
    groups = {f"p{i}": s for i, s in enumerate(strata)}
    result = split_groups(groups, ratio, seed=seed)
    # every patient in exactly one split, and nothing else
    assert set(result) == set(groups) and set(result.values()) <= set(SPLITS)
    counts = tuple(list(result.values()).count(s) for s in SPLITS)
    assert counts == split_counts(len(groups), ratio)
    # each stratum is shared in the ratio, give or take two patients
    for stratum in set(strata):
        members = [g for g, s in groups.items() if s == stratum]
        for share, split in zip(ratio, SPLITS, strict=True):
            got = sum(1 for g in members if result[g] == split)
            assert abs(got - share * len(members)) <= 2
    assert split_groups(groups, ratio, seed=seed) == result  # replayable


def test_seed_changes_who_goes_where():
    groups = {f"p{i}": "x" for i in range(20)}
    assert split_groups(groups, seed=1) != split_groups(groups, seed=2)
