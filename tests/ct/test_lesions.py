from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoscope.ct.lesions import feret_diameter_mm, find_lesions, label_lesions


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    row_mm=st.floats(0.3, 5.0),
    col_mm=st.floats(0.3, 5.0),
    top=st.integers(0, 5),
    left=st.integers(0, 5),
)
def test_rectangle_diameter_is_its_diagonal_in_mm(rows, cols, row_mm, col_mm, top, left):
    mask = np.zeros((20, 20), bool)
    mask[top : top + rows, left : left + cols] = True
    expected = math.hypot(rows * row_mm, cols * col_mm)
    assert feret_diameter_mm(mask, row_mm, col_mm) == pytest.approx(expected, rel=1e-9)


def test_diameter_uses_spacing_never_pixel_counts():
    # a 10-pixel-wide bar is 10 mm at 1 mm/px and 5 mm at 0.5 mm/px
    mask = np.zeros((5, 20), bool)
    mask[2, 5:15] = True
    assert feret_diameter_mm(mask, 1.0, 1.0) == pytest.approx(math.hypot(1, 10))
    assert feret_diameter_mm(mask, 0.5, 0.5) == pytest.approx(math.hypot(0.5, 5))
    assert feret_diameter_mm(np.zeros((3, 3), bool), 1.0, 1.0) == 0.0


def test_disk_diameter_matches_its_drawn_size():
    yy, xx = np.mgrid[:101, :101]
    disk = (yy - 50) ** 2 + (xx - 50) ** 2 <= 30**2  # 61 pixels across
    assert feret_diameter_mm(disk, 0.5, 0.5) == pytest.approx(30.5, abs=0.5)


def test_lesions_are_3d_components_measured_on_their_largest_section():
    tumour = np.zeros((6, 30, 30), bool)
    tumour[1, 5:8, 5:8] = True  # lesion A: 3x3 on slice 1 ...
    tumour[2, 4:10, 5:8] = True  # ... 6x3 on slice 2 (largest section)
    tumour[3, 20:22, 20:22] = True  # lesion B touches A nowhere
    tumour[4, 22, 22] = True  # diagonal neighbour of B: same lesion (26-connectivity)
    lesions = find_lesions(tumour, (2.0, 0.8, 0.7))
    labels = label_lesions(tumour)
    assert len(lesions) == 2
    a, b = sorted(lesions, key=lambda lesion: lesion.slice_indices[0])
    assert a.slice_indices == (1, 2)
    assert a.diameter_mm == pytest.approx(math.hypot(6 * 0.8, 3 * 0.7))
    assert a.section_diameters_mm[0] == pytest.approx(math.hypot(3 * 0.8, 3 * 0.7))
    assert b.slice_indices == (3, 4)
    assert a.volume_ml == pytest.approx((9 + 18) * 2.0 * 0.8 * 0.7 / 1000)
    assert set(np.unique(labels)) == {0, a.lesion_id, b.lesion_id}
    assert (labels[2, 4:10, 5:8] == a.lesion_id).all() and labels[4, 22, 22] == b.lesion_id
    np.testing.assert_allclose(a.centroid_dhw[1:], [(9 * 6 + 18 * 6.5) / 27, 6.0])
    assert a.is_small(20.0) and not a.is_small(4.0)
