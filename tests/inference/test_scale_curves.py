"""The scale search's arithmetic on hand-worked numbers (seed 003, Algorithm 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncoscope.inference.scale_curves import (
    WIDEN_FRACTION,
    classify_curve,
    hyperplane_distances,
    majority_vote,
    point_scale_index,
    vote_histogram,
    widen_advice,
)


def test_distances_divide_each_column_by_its_own_norm() -> None:
    # X: N=2 scales x M=3 features; W: M=3 x C=2 classes.
    features = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    weight = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # ||w_0|| = sqrt(5), ||w_1|| = 1
    # By hand: x_0 . w_0 = 1*2 + 2*1 = 4, x_0 . w_1 = 0; x_1 . w_0 = 1, x_1 . w_1 = 3.
    expected = [[4 / math.sqrt(5), 0.0], [1 / math.sqrt(5), 3.0]]
    assert hyperplane_distances(features, weight) == pytest.approx(np.array(expected))


def test_bias_gives_the_signed_euclidean_distance_to_each_hyperplane() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(4, 6))
    weight = rng.normal(size=(6, 3))
    bias = rng.normal(size=3)
    distances = hyperplane_distances(features, weight, bias)
    for c in range(3):
        w, b = weight[:, c], bias[c]
        for i, x in enumerate(features):
            # the foot of the perpendicular from x onto w.x + b = 0, and the signed length to it
            foot = x - (w @ x + b) / (w @ w) * w
            assert w @ foot + b == pytest.approx(0.0, abs=1e-9)
            signed = np.linalg.norm(x - foot) * np.sign(w @ x + b)
            assert distances[i, c] == pytest.approx(signed)


def test_point_scale_is_argmax_over_scales_of_max_over_classes() -> None:
    distances = np.array([[0.2, 1.0], [2.5, -3.0], [0.1, 2.4]])
    assert point_scale_index(distances) == 1  # 2.5 at scale 1 beats 2.4 at scale 2


def test_majority_vote_and_histogram() -> None:
    scales = [10, 12, 14, 17, 20]
    votes = [14, 14, 17, 14, 20, 10]
    assert majority_vote(votes, scales) == 14
    assert vote_histogram(votes, scales) == {10: 1, 12: 0, 14: 3, 17: 1, 20: 1}


def test_tie_goes_to_the_tied_scale_nearest_the_median_then_the_lower() -> None:
    scales = [10, 12, 14, 17, 20]
    # 10 and 20 tie with two votes each; the median vote is 17: 20 is nearer in log terms.
    assert majority_vote([10, 10, 20, 20, 17], scales) == 20
    # 12 and 17 tie, median of logs exactly between them: the lower magnification wins.
    assert majority_vote([12, 17], scales) == 12
    with pytest.raises(ValueError):
        majority_vote([], scales)


@pytest.mark.parametrize(
    ("envelope", "kind"),
    [
        ([1.0, 2.0, 4.0, 2.5, 1.5], "peak"),  # clear interior maximum
        ([5.0, 4.0, 3.0, 2.0, 1.0], "monotonic_low"),  # highest at the lowest scale
        ([1.0, 2.0, 3.0, 4.0, 5.0], "monotonic_high"),  # highest at the highest scale
        ([1.0, 2.0, 3.0, 4.0, 4.05], "monotonic_high"),
        ([1.0, 2.0, 3.0, 4.05, 4.0], "monotonic_high"),  # levels off: drop 0.05 < 10% of 3.05
        ([4.0, 4.05, 3.0, 2.0, 1.0], "monotonic_low"),
        ([3.0, 3.05, 3.1, 3.02, 3.0], "flat"),  # range 0.1 <= 5% of 3.1
        ([-2.0, -1.0, -2.0], "peak"),  # signs do not matter
    ],
)
def test_curve_kinds_on_hand_made_curves(envelope: list[float], kind: str) -> None:
    # the other class's curve stays far below, so the envelope is the first column
    distances = np.stack([envelope, np.full(len(envelope), -10.0)], axis=1)
    assert classify_curve(distances) == kind


def test_curve_is_judged_on_the_maximum_over_classes() -> None:
    # each class alone is monotonic, but their maximum peaks in the middle
    rising = [0.0, 1.0, 2.0, 3.0, 0.0]
    falling = [0.0, 3.0, 2.0, 1.0, 0.0]
    assert classify_curve(np.stack([rising, falling], axis=1)) == "peak"


def test_widening_is_advised_towards_the_end_most_points_run_to() -> None:
    scales = [10, 12, 14, 17, 20]
    few = widen_advice(["monotonic_low"] + ["peak"] * 9, scales)
    assert not few["low"]["advised"] and few["message"] is None
    kinds = ["monotonic_low"] * 3 + ["peak"] * 4 + ["monotonic_high"] * 1 + ["flat"] * 2
    advice = widen_advice(kinds, scales)
    assert advice["low"]["fraction"] == pytest.approx(0.3)
    assert WIDEN_FRACTION <= 0.3
    assert advice["low"]["advised"] and not advice["high"]["advised"]
    assert "lower magnifications" in advice["message"]
    assert all(s < 10 for s in advice["low"]["suggest"])
