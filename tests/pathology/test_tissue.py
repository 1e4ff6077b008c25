from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import box, unary_union

from oncoscope.io.slides import open_slide
from oncoscope.pathology.tissue import TissueMask, region_fraction, tile_fractions, tissue_mask


def test_tissue_fraction_of_a_synthetic_slide_matches_its_geometry(generic_slide):
    with open_slide(generic_slide.path) as slide:
        thumbnail, downsample = slide.thumbnail(512)
        mask = tissue_mask(thumbnail, downsample, mpp=slide.mpp)
    w, h = generic_slide.size_wh
    tissue = unary_union([r.geometry for r in generic_slide.regions])
    assert mask.fraction == np.float64(mask.fraction)
    assert abs(mask.fraction - tissue.area / (w * h)) < 0.01
    # tile by tile: the mask's fraction agrees with the exact polygon area
    for x, y in [(0, 0), (300, 300), (1700, 1300), (2400, 700), (2900, 1000), (1000, 2200)]:
        exact = tissue.intersection(box(x, y, x + 512, y + 512)).area / 512**2
        assert abs(region_fraction(mask.mask, (x, y), (512, 512), mask.downsample) - exact) < 0.08


def test_blank_glass_has_no_tissue_and_small_specks_are_removed():
    blank = np.full((100, 100, 3), 250, np.uint8)
    empty = tissue_mask(blank, 32.0, mpp=0.25)
    assert not empty.mask.any() and empty.threshold is None
    rgb = np.full((100, 100, 3), 255, np.uint8)
    rgb[20:60, 20:60] = (180, 90, 170)  # 40 x 40 px at 8 um/px: 0.1 mm^2
    rgb[80, 80] = (180, 90, 170)  # one 8 x 8 um speck
    mask = tissue_mask(rgb, 32.0, mpp=0.25, min_object_um2=1000).mask
    assert mask[20:60, 20:60].all() and not mask[80, 80] and mask.sum() == 1600


@settings(max_examples=100, deadline=None)
@given(
    x=st.floats(-50, 200),
    y=st.floats(-50, 200),
    w=st.floats(1, 150),
    h=st.floats(1, 150),
)
def test_region_fraction_is_the_exact_overlap_area(x, y, w, h):
    mask = np.zeros((20, 20), bool)
    mask[5:12, 3:15] = True  # level-0 [24, 120) x [40, 96) at downsample 8
    exact = box(24, 40, 120, 96).intersection(box(x, y, x + w, y + h)).area / (w * h)
    assert abs(region_fraction(mask, (x, y), (w, h), 8.0) - exact) < 1e-9


@settings(max_examples=100, deadline=None)
@given(
    boxes=st.lists(st.tuples(st.floats(-50, 200), st.floats(-50, 200)), min_size=1, max_size=20),
    w=st.floats(1, 150),
    h=st.floats(1, 150),
)
def test_tile_fractions_are_the_exact_overlap_areas(boxes, w, h):
    mask = np.zeros((20, 20), bool)
    mask[5:12, 3:15] = True  # level-0 [24, 120) x [40, 96) at downsample 8
    mask[14, 2] = True  # level-0 [16, 24) x [112, 120)
    tissue = unary_union([box(24, 40, 120, 96), box(16, 112, 24, 120)])
    fractions = tile_fractions(TissueMask(mask, 8.0, 0.5), np.array(boxes), (w, h))
    for (x, y), fraction in zip(boxes, fractions, strict=True):
        exact = tissue.intersection(box(x, y, x + w, y + h)).area / (w * h)
        assert abs(fraction - exact) < 1e-9
