"""Lesion-level detection: hits, false positives, sensitivity by size, FROC points, CIs."""

from __future__ import annotations

import numpy as np
import pytest

from oncoscope.locate.detection import VolumeDetection, detection_scores, match_volume


def test_a_candidate_touching_a_lesion_detects_it_and_one_touching_none_is_false() -> None:
    tumour = np.zeros((4, 20, 20), bool)
    tumour[1:3, 2:6, 2:6] = True  # 4 x 4 pixels of 2 mm: diameter 8 * sqrt(2) = 11.3 mm
    tumour[1, 15:17, 15:17] = True  # 2 x 2 pixels: 5.7 mm
    candidates = np.zeros(tumour.shape, np.uint16)
    candidates[2, 5:8, 5:8] = 1  # touches the first lesion at one voxel
    candidates[1, 10:12, 10:12] = 2  # touches nothing
    matched = match_volume("p1", candidates, [0.7, 0.4], tumour, (3.0, 2.0, 2.0))
    diameters = [d for d, _ in matched.lesions]
    assert diameters == pytest.approx([8 * np.sqrt(2), 4 * np.sqrt(2)])
    assert [best for _, best in matched.lesions] == [0.7, -1.0]
    assert matched.false_scores == [0.4]


def test_froc_points_by_size_with_intervals_over_volumes() -> None:
    volumes = [
        VolumeDetection("a", [(5.0, 0.9), (15.0, -1.0)], [0.3]),
        VolumeDetection("b", [(25.0, 0.6)], [0.95, 0.2]),
    ]
    result = detection_scores(volumes, scores=(0.0, 0.5, 0.8), resamples=200, seed=0)
    assert result["volumes"] == 2 and result["lesions"] == 3
    assert result["lesions_by_size"] == {"<10 mm": 1, "10-20 mm": 1, ">20 mm": 1}
    every, half, high = result["froc"]
    assert every["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert every["false_positives_per_volume"]["value"] == pytest.approx(3 / 2)
    assert half["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert half["false_positives_per_volume"]["value"] == pytest.approx(1 / 2)
    assert high["sensitivity"]["value"] == pytest.approx(1 / 3)
    assert high["sensitivity_by_size"]["<10 mm"]["value"] == 1.0
    assert high["sensitivity_by_size"][">20 mm"]["value"] == 0.0
    assert high["sensitivity_by_size"]["10-20 mm"]["value"] == 0.0
    low, up = every["sensitivity"]["ci_low"], every["sensitivity"]["ci_high"]
    assert low is not None and up is not None and low <= 2 / 3 <= up


def test_one_volume_has_no_interval() -> None:
    result = detection_scores([VolumeDetection("a", [(5.0, 0.9)], [])], scores=(0.0,))
    figure = result["froc"][0]["sensitivity"]
    assert figure == {"value": 1.0, "ci_low": None, "ci_high": None}
    assert result["froc"][0]["sensitivity_by_size"]["10-20 mm"]["value"] is None


def test_lesions_split_among_candidates_and_candidates_joining_lesions_are_counted() -> None:
    tumour = np.zeros((2, 20, 20), bool)
    tumour[0, 2:6, 2:6] = True  # lesion 1: touched by candidates 1 and 2
    tumour[0, 2:6, 10:14] = True  # lesion 2: touched by candidate 2 only
    tumour[1, 15:18, 15:18] = True  # lesion 3: touched by candidate 3 only
    candidates = np.zeros(tumour.shape, np.uint16)
    candidates[0, 3, 3] = 1
    candidates[0, 4, 5:12] = 2  # runs from lesion 1 into lesion 2
    candidates[1, 16, 16] = 3
    matched = match_volume("p", candidates, [0.9, 0.8, 0.7], tumour, (1.0, 1.0, 1.0))
    assert matched.candidates_per_lesion == [2, 1, 1]
    assert sorted(matched.lesions_per_candidate) == [1, 1, 2]
    result = detection_scores([matched, VolumeDetection("q", [(5.0, -1.0)], [], [0], [])])
    assert (result["lesions_split"], result["candidates_joined"]) == (1, 1)
