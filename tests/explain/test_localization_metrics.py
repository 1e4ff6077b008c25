"""Localisation scores on hand-made maps and masks, with hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from oncoscope.explain.localization_metrics import (
    dice_iou,
    dice_iou_curves,
    lesion_hits,
    pixel_counts,
    pointing_hit,
    pxap,
    random_point_rate,
    size_bin,
)
from oncoscope.explain.localize import lesion_boxes, lesion_mask

# A 10 x 10 image with a 2 x 2 lesion at rows 2-3, cols 2-3; the liver is rows 0-4 (50 px).
TRUTH = np.zeros((10, 10), bool)
TRUTH[2:4, 2:4] = True
LIVER = np.zeros((10, 10), bool)
LIVER[:5] = True


def test_pointing_game_hits_only_inside_the_lesion_unless_tolerated():
    heat = np.zeros((10, 10))
    heat[3, 3] = 1.0
    assert pointing_hit(heat, TRUTH)
    heat = np.zeros((10, 10))
    heat[3, 6] = 1.0  # three columns right of the lesion's last column (3)
    assert not pointing_hit(heat, TRUTH)
    assert not pointing_hit(heat, TRUTH, tolerance_px=2)
    assert pointing_hit(heat, TRUTH, tolerance_px=3)


def test_random_point_baseline_is_the_lesion_area_fraction():
    assert random_point_rate(TRUTH) == pytest.approx(4 / 100)
    assert random_point_rate(TRUTH, LIVER) == pytest.approx(4 / 50)
    # tolerance 1 grows the 2x2 square by its 8 edge neighbours: 4 + 8 = 12 px
    assert random_point_rate(TRUTH, tolerance_px=1) == pytest.approx(12 / 100)


def test_pxap_matches_hand_value_and_sklearn():
    heat = np.full((10, 10), 0.1)
    heat[2:4, 2:4] = [[0.9, 0.9], [0.5, 0.5]]
    heat[7, 7:9] = 0.5  # two false positives at 0.5
    # thresholds: 0.9 -> P 1, R 1/2; 0.5 -> P 4/6, R 1; AP = 0.5 * 1 + 0.5 * 4/6
    assert pxap(pixel_counts(heat, TRUTH)) == pytest.approx(0.5 + 0.5 * 4 / 6)
    assert pxap(pixel_counts(heat, TRUTH)) == pytest.approx(
        average_precision_score(TRUTH.ravel(), heat.ravel())
    )


def test_pxap_sums_pixel_counts_over_images():
    rng = np.random.default_rng(0)
    heats = [np.round(rng.random((10, 10)), 3) for _ in range(3)]
    truths = [rng.random((10, 10)) < 0.2 for _ in range(3)]
    counts = sum(pixel_counts(h, t) for h, t in zip(heats, truths, strict=True))
    expected = average_precision_score(
        np.concatenate([t.ravel() for t in truths]), np.concatenate([h.ravel() for h in heats])
    )
    assert pxap(counts) == pytest.approx(expected, abs=1e-9)


def test_dice_and_iou_of_the_thresholded_map():
    heat = np.zeros((10, 10))
    heat[2:4, 2:5] = 0.8  # covers the lesion and 2 pixels beside it
    predicted = lesion_mask(heat, 0.5)
    dice, iou = dice_iou(predicted, TRUTH)
    assert dice == pytest.approx(2 * 4 / (6 + 4)) and iou == pytest.approx(4 / 6)
    curve_dice, curve_iou = dice_iou_curves(pixel_counts(heat, TRUTH))
    assert curve_dice[500] == pytest.approx(dice) and curve_iou[800] == pytest.approx(iou)
    assert curve_dice[801] == 0.0  # nothing predicted above 0.8
    assert curve_dice[0] == pytest.approx(2 * 4 / (100 + 4))  # everything predicted


def test_lesion_hits_by_size_bin_and_boxes():
    ids = np.zeros((10, 10), int)
    ids[0:2, 0:2] = 1
    ids[6:9, 6:9] = 2
    predicted = np.zeros((10, 10), bool)
    predicted[1, 1] = True  # one pixel of lesion 1
    predicted[4, 4:6] = True  # touches nothing
    assert lesion_hits(predicted, ids) == {1: True, 2: False}
    assert lesion_boxes(predicted) == [(4, 4, 5, 6), (1, 1, 2, 2)]
    assert [size_bin(d) for d in (5.0, 10.0, 15.0, 20.0, 20.5, 40.0)] == [
        "<10 mm",
        "10-20 mm",
        "10-20 mm",
        "10-20 mm",
        ">20 mm",
        ">20 mm",
    ]
