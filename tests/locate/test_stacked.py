"""A volume's slice candidates, stacked: what ``locate`` joins into 3-D candidates."""

from __future__ import annotations

import numpy as np
import pytest

from oncoscope.locate.candidates import stack_slice_candidates


def _volume() -> tuple[np.ndarray, list[np.ndarray]]:
    """Four 20x20 slices, liver in rows 0-9 of each; a hot square on rows 4-7, columns 4-7 of
    every map (slices 1, 2, 3), given on slice 3 at half size (10x10, hot on 2-3)."""
    liver = np.zeros((4, 20, 20), bool)
    liver[:, :10, :] = True
    full = np.zeros((20, 20), np.float32)
    full[4:8, 4:8] = 0.8
    half = np.zeros((10, 10), np.float32)
    half[2:4, 2:4] = 0.8
    return liver, [full, full, half]


def test_slices_the_model_calls_tumour_are_stacked_with_their_scores() -> None:
    liver, heats = _volume()
    stacked = stack_slice_candidates(
        [1, 2, 3], heats, [0.9, 0.3, 0.5], liver, threshold=0.5, min_prob=0.5, pixel_mm=(1.0, 1.0)
    )
    # slice 2 (p 0.3 < 0.5) has none; slice 0 has no map
    assert sorted(stacked.per_slice) == [1, 3]
    assert not stacked.mask[[0, 2]].any()
    expected = np.zeros((20, 20), bool)
    expected[4:8, 4:8] = True
    np.testing.assert_array_equal(stacked.mask[1], expected)
    np.testing.assert_allclose(stacked.scores[1], np.where(expected, 0.9 * 0.8, 0.0), atol=1e-6)
    assert [c.area_px for c in stacked.per_slice[1]] == [16]
    assert stacked.per_slice[1][0].score == pytest.approx(0.72)
    # the half-size map is brought to the volume's size: its hot square grows to about 4x4
    assert stacked.heats[3].shape == (20, 20)
    rows, cols = np.nonzero(stacked.mask[3])
    assert 3 <= rows.min() <= 4 and 7 <= rows.max() <= 8
    assert 3 <= cols.min() <= 4 and 7 <= cols.max() <= 8
    assert stacked.scores[3].max() <= 0.5 * 0.8 + 1e-6


def test_a_hot_piece_outside_the_liver_is_kept_only_beyond_it() -> None:
    liver, _ = _volume()
    heat = np.zeros((20, 20), np.float32)
    heat[8:14, 4:8] = 0.9  # rows 8-9 inside the liver, rows 10-13 outside
    cut = stack_slice_candidates(
        [0], [heat], [0.9], liver, threshold=0.5, min_prob=0.5, pixel_mm=(2.0, 1.0)
    )
    beyond = stack_slice_candidates(
        [0],
        [heat],
        [0.9],
        liver,
        threshold=0.5,
        min_prob=0.5,
        pixel_mm=(2.0, 1.0),
        beyond_liver_mm=4.0,
    )
    assert np.nonzero(cut.mask[0].any(axis=1))[0].tolist() == [8, 9]
    # rows are 2 mm: rows 10 and 11 lie 2 and 4 mm outside the liver
    assert np.nonzero(beyond.mask[0].any(axis=1))[0].tolist() == [8, 9, 10, 11]


def test_sequences_of_different_lengths_are_refused() -> None:
    liver, heats = _volume()
    with pytest.raises(ValueError):
        stack_slice_candidates(
            [1, 2], heats, [0.9, 0.9, 0.9], liver, threshold=0.5, min_prob=0.5, pixel_mm=(1.0, 1.0)
        )
