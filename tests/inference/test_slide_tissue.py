"""The one tissue-mask step of slide inference and the scale search: a pyramid level as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import Polygon
from shapely.ops import unary_union

from oncoscope.errors import NoTissueError
from oncoscope.inference.scale_search import search_scale
from oncoscope.inference.slide_tissue import slide_tissue
from oncoscope.io.slides import open_slide
from oncoscope.pathology.synthetic import default_regions, write_synthetic_slide

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


@pytest.mark.parametrize(
    ("mpp", "level_downsample"),
    [(8.0, 4.0), (0.5, 2.0)],
    ids=["coarsest-level-under-8um", "finer-level-when-asked"],
)
def test_mask_is_made_on_a_pyramid_level_and_covers_the_drawn_tissue(
    slide: Path, mpp: float, level_downsample: float
) -> None:
    with open_slide(slide) as s:
        tissue = slide_tissue(s, mpp=mpp)
    # read from a level as it is (1 um/px at downsample 4; 0.5 um/px at 2), not a thumbnail
    assert tissue.downsample == level_downsample
    assert tissue.mask.shape == (SIZE[1] / level_downsample, SIZE[0] / level_downsample)
    assert tissue.fraction == pytest.approx(_filled_tissue_fraction(), abs=0.005)


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
