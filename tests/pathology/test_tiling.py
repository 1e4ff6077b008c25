from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoscope.errors import InvalidOptionError
from oncoscope.pathology.tiling import axis_starts, grid_positions, random_positions


def _reference_starts(length, extent, overlap):
    """Seed 004's Fig. 4 loop, written plainly: step by extent * (1 - overlap) while it fits."""
    starts, j, stride = [], 0, extent * (1 - overlap)
    while True:
        start = round(j * stride)
        if start + extent > length:
            return starts
        starts.append(start)
        j += 1


def test_seed_004_grid_of_400_px_tiles_with_overlap_03_on_a_known_slide():
    positions = grid_positions((2000, 1200), (400, 400), 0.3)
    xs = [0, 280, 560, 840, 1120, 1400]  # 1400 + 400 <= 2000 < 1680 + 400
    ys = [0, 280, 560]  # 840 + 400 > 1200
    expected = [(x, y) for y in ys for x in xs]  # left to right, then top to bottom
    assert positions.tolist() == [list(p) for p in expected]
    # consecutive tiles share 30 % of a tile: 120 of 400 px
    assert all(positions[i][0] + 400 - positions[i + 1][0] == 120 for i in range(5))


def test_shift_adds_one_tile_flush_with_the_edge_and_never_pads():
    assert axis_starts(1000, 400, 0.3, edge="shift") == [0, 280, 560, 600]
    assert axis_starts(960, 400, 0.3, edge="shift") == [0, 280, 560]  # 560 + 400 = 960 already


def test_a_tile_larger_than_the_slide_is_a_clear_error():
    with pytest.raises(InvalidOptionError, match="smaller --size"):
        grid_positions((300, 1000), (400, 400), 0.3)


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(16, 5000),
    extent=st.floats(8, 2000),
    overlap=st.floats(0, 0.95),
)
def test_grid_matches_the_reference_loop_and_stays_inside_the_slide(length, extent, overlap):
    if extent > length or extent * (1 - overlap) < 1:
        with pytest.raises(InvalidOptionError):
            axis_starts(length, extent, overlap)
        return
    starts = axis_starts(length, extent, overlap)
    assert starts == _reference_starts(length, extent, overlap)
    assert all(s >= 0 and s + extent <= length + 1e-6 for s in starts)
    shifted = axis_starts(length, extent, overlap, edge="shift")
    assert shifted[: len(starts)] == starts
    assert all(s + extent <= length + 1e-6 for s in shifted)
    # the shift policy leaves no pixel of the axis uncovered
    covered_to = 0.0
    for s in shifted:
        assert s <= covered_to + 1
        covered_to = max(covered_to, s + extent)
    assert covered_to >= length - 1


@settings(max_examples=50, deadline=None)
@given(
    width=st.integers(64, 3000),
    height=st.integers(64, 3000),
    extent=st.integers(32, 64),
    overlap=st.sampled_from([0.0, 0.25, 0.5]),
)
def test_grid_is_the_product_of_the_axes_in_row_major_order(width, height, extent, overlap):
    grid = grid_positions((width, height), (extent, extent), overlap)
    xs, ys = _reference_starts(width, extent, overlap), _reference_starts(height, extent, overlap)
    assert grid.tolist() == [[x, y] for y in ys for x in xs]


def test_random_tiles_are_centred_in_the_mask_and_inside_the_slide():
    mask = np.zeros((30, 40), bool)
    mask[10, 20] = True  # one mask pixel = level-0 [320, 336) x [160, 176)
    positions = random_positions(mask, 16.0, (640, 480), (64, 64), 25, np.random.default_rng(1))
    assert positions.shape == (25, 2)
    centres = positions + 32
    assert ((centres[:, 0] >= 320 - 1) & (centres[:, 0] <= 336 + 1)).all()
    assert ((centres[:, 1] >= 160 - 1) & (centres[:, 1] <= 176 + 1)).all()
    near_edge = np.zeros((30, 40), bool)
    near_edge[0, 0] = True
    edge = random_positions(near_edge, 16.0, (640, 480), (64, 64), 5, np.random.default_rng(2))
    assert (edge >= 0).all()
    empty = random_positions(
        np.zeros((3, 3), bool), 1.0, (9, 9), (2, 2), 5, np.random.default_rng()
    )
    assert empty.shape == (0, 2)


def test_reference_formula_counts():
    assert len(_reference_starts(2000, 400, 0.3)) == math.floor((2000 - 400) / 280) + 1
