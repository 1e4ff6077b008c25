"""The one tissue-mask step of ``wsi tile``, slide inference and the scale search: 8 um/px."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import Polygon
from shapely.ops import unary_union

from oncoscope.errors import NoTissueError
from oncoscope.inference.scale_search import search_scale
from oncoscope.io.slides import open_slide
from oncoscope.pathology.synthetic import default_regions, write_synthetic_slide
from oncoscope.pathology.tissue import TISSUE_MPP, slide_tissue

from .test_scale_search import write_checkpoint

SIZE = (2048, 1536)  # levels at downsample 1, 2 and 4 (512 x 384)


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_slide(tmp_path_factory.mktemp("tissue") / "s.tif", SIZE).path


def _filled_tissue_fraction() -> float:
    """Share of the slide inside the drawn regions' outlines (the mask fills holes < 0.01 mm^2;
    the stroma's hole is 77 x 77 um)."""
    outlines = unary_union([Polygon(r.geometry.exterior) for r in default_regions(SIZE)])
    return float(outlines.area / (SIZE[0] * SIZE[1]))


def test_mask_is_made_at_8_um_per_pixel_and_covers_the_drawn_tissue(slide: Path) -> None:
    with open_slide(slide) as s:
        tissue = slide_tissue(s)
    # resampled to exactly 8 um/px (32 level-0 px at 0.25 um/px) from the 1 um/px level
    assert tissue.mpp == TISSUE_MPP and tissue.downsample == 32.0
    assert tissue.mask.shape == (SIZE[1] / 32, SIZE[0] / 32)
    # within the mask pixels the outlines cross (~ perimeter x 8 um / area: 0.01 here)
    assert tissue.fraction == pytest.approx(_filled_tissue_fraction(), abs=0.01)


def test_blank_slide_has_no_tissue(tmp_path: Path) -> None:
    blank = write_synthetic_slide(tmp_path / "blank.tif", (1024, 768), regions=[]).path
    with open_slide(blank) as s, pytest.raises(NoTissueError, match="no tissue"):
        slide_tissue(s)


def test_scale_search_draws_its_points_in_that_mask(slide: Path, tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "model.ckpt")
    result = search_scale(checkpoint, slide, scales=[10, 20], points=40, seed=3)
    with open_slide(slide) as s:
        tissue = slide_tissue(s)
    # regions lie 10 % of the slide from its edges, so no point is shifted inward
    for p in result.points:
        assert tissue.mask[int(p.y // tissue.downsample), int(p.x // tissue.downsample)]
