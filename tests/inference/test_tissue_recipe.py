"""One tissue recipe for ``wsi tile``, ``slide`` and ``scale``; one open slide per command.

The same tissue drawn on a 10 240^2 and a 100 000^2 synthetic slide of the same mpp gives the
same tiles relative to the tissue, from ``wsi tile`` and from ``slide``'s tile plan, and those
are the same tiles: the tissue mask is made at a fixed 8 um/px whatever the slide's size (before
it was made on a thumbnail of 1024 px, so the two slides gave different tiles).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shapely import box
from shapely.affinity import translate
from shapely.geometry import Polygon
from shapely.ops import unary_union
from typer.testing import CliRunner

import oncoscope.io.slides as slides_module
import oncoscope.pathology.tissue as tissue_module
from oncoscope.cli import app
from oncoscope.inference.slide_inference import SlideOptions, load_classifier, plan_tiles
from oncoscope.io.slides import close_pool, open_slide
from oncoscope.pathology.annotations import Annotation
from oncoscope.pathology.synthetic import write_synthetic_slide
from oncoscope.pathology.tile_dataset import TileOptions, tile_slides

from .conftest import TILE_PX

#: The tissue, in level-0 pixels from its own origin: a slanted piece and a triangle (0.04 mm^2).
TISSUE = (
    Annotation("tumour", Polygon([(0, 0), (1800, 200), (2100, 1500), (1000, 1900), (150, 1300)])),
    Annotation("stroma", Polygon([(2300, 300), (3300, 600), (2500, 1500)])),
)
#: Where the tissue lies on each slide: 49 664 level-0 px apart, whole periods of the synthetic
#: texture (97 px) and whole JPEG blocks of the 8 um/px level (16 px x 32), so both slides
#: store the same pixels for it.
SLIDES = {
    "small": ((10_240, 10_240), (3072, 3072)),
    "large": ((100_000, 100_000), (52_736, 52_736)),
}
MAGNIFICATION = 10.0  # downsample 4 on the x40 scans: a 32-px tile spans 128 level-0 px
THRESHOLD = 0.5


def _tissue_at(origin: tuple[int, int]) -> list[Annotation]:
    return [Annotation(a.label, translate(a.geometry, *origin)) for a in TISSUE]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Both slides (the large one sparse: only its tiles with tissue are stored)."""
    folder = tmp_path_factory.mktemp("recipe")
    made = {}
    for name, (size, origin) in SLIDES.items():
        slide = write_synthetic_slide(
            folder / f"{name}.tif", size, regions=_tissue_at(origin), sparse=True
        )
        made[name] = (slide.path, origin)
    return made


def _wsi_tiles(path: Path, out: Path) -> set[tuple[int, int]]:
    options = TileOptions(
        size_px=TILE_PX,
        magnification=MAGNIFICATION,
        overlap=0.5,
        min_coverage=THRESHOLD,
        tile_format="hdf5",
    )
    report = tile_slides([path], out, options)
    assert not report.failures, report.failures
    return {(int(row["x"]), int(row["y"])) for row in report.rows}


def _planned_tiles(path: Path, checkpoint: Path) -> set[tuple[int, int]]:
    spec = load_classifier(checkpoint).spec
    options = SlideOptions(magnification=MAGNIFICATION, stride=0.5, min_tissue=THRESHOLD)
    with open_slide(path) as slide:
        grid = plan_tiles(spec, slide, options)
    positions = grid.positions_level0
    assert np.array_equal(positions, np.round(positions))  # whole level-0 pixels here
    return {(int(x), int(y)) for x, y in positions.tolist()}


def _relative(tiles: set[tuple[int, int]], origin: tuple[int, int]) -> set[tuple[int, int]]:
    return {(x - origin[0], y - origin[1]) for x, y in tiles}


def test_same_tissue_gives_the_same_tiles_on_a_small_and_a_100k_slide_from_both_commands(
    drawn: dict[str, tuple[Path, tuple[int, int]]], colour_checkpoint: Path, tmp_path: Path
) -> None:
    wsi, planned = {}, {}
    for name, (path, origin) in drawn.items():
        wsi[name] = _relative(_wsi_tiles(path, tmp_path / name), origin)
        planned[name] = _relative(_planned_tiles(path, colour_checkpoint), origin)
    # the same tiles relative to the tissue on both slides, from both commands
    assert wsi["small"] == wsi["large"]
    assert planned["small"] == planned["large"]
    # and ``wsi tile`` keeps exactly the tiles ``slide`` classifies (same resolution, stride)
    assert wsi["small"] == planned["small"]
    # the independent truth, the exact polygon coverage of each tile: a tile wholly in the
    # tissue is kept, one wholly on glass is not (between, the mask's 8 um pixels decide)
    tissue = unary_union([a.geometry for a in TISSUE])
    extent, stride = 4 * TILE_PX, 2 * TILE_PX
    exact = {
        (x, y): tissue.intersection(box(x, y, x + extent, y + extent)).area / extent**2
        for x in range(-2 * extent, 3600, stride)
        for y in range(-2 * extent, 1800, stride)
    }
    inside = {xy for xy, f in exact.items() if f == 1.0}
    assert len(inside) > 100 and len(wsi["small"]) > 200
    assert inside <= wsi["small"]
    assert not {xy for xy, f in exact.items() if f == 0.0} & wsi["small"]


def test_the_tissue_mask_is_made_at_8_um_per_pixel_whatever_the_slide_size(
    drawn: dict[str, tuple[Path, tuple[int, int]]],
) -> None:
    masks = {}
    for name, (path, origin) in drawn.items():
        with open_slide(path) as slide:
            tissue = tissue_module.slide_tissue(slide)
        assert tissue.mpp == tissue_module.TISSUE_MPP and tissue.downsample == 32.0
        assert tissue.mask.shape == tuple(-(-side // 32) for side in SLIDES[name][0][::-1])
        row, col = origin[1] // 32, origin[0] // 32
        masks[name] = tissue.mask[row - 8 : row + 60, col - 8 : col + 120]
        assert tissue.mask.sum() == masks[name].sum()  # no tissue anywhere else
    np.testing.assert_array_equal(masks["small"], masks["large"])


def test_slide_auto_scale_opens_each_slide_once_and_makes_one_tissue_mask(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    close_pool()  # a slide pooled by an earlier test would be reused without opening
    opened: list[Path] = []
    masks: list[Path] = []
    original_init = slides_module.Slide.__init__
    original_read = tissue_module.read_tissue

    def counting_init(self: slides_module.Slide, path: str | Path, **kwargs: object) -> None:
        opened.append(Path(path))
        original_init(self, path, **kwargs)  # type: ignore[arg-type]

    def counting_read(slide: slides_module.Slide, **kwargs: float) -> object:
        masks.append(slide.path)
        return original_read(slide, **kwargs)

    monkeypatch.setattr(slides_module.Slide, "__init__", counting_init)
    monkeypatch.setattr(tissue_module, "read_tissue", counting_read)
    args = [
        "slide", str(colour_checkpoint), str(small_slide), "--out", str(tmp_path / "out"),
        "--auto-scale", "--scales", "5,10,20", "--scale-points", "8", "--stride", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / small_slide.stem / "scale.json").is_file()
    assert opened == [small_slide]
    assert masks == [small_slide]
    close_pool()
