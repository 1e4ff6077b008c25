"""Attention of one slide painted like ``oncoscope slide``'s probability map.

Each tile's attention is painted on the cells it covers (the output-cell grid of
:mod:`oncoscope.inference.outputs`: the cell is the stride at level 0, a tile covers
``tile / stride`` cells a side; where tiles overlap a cell holds the mean of theirs). What is
painted is the tile's attention as a percentile within its slide (0 lowest, 1 highest): raw
attention weights sum to 1 over a bag and are not comparable between slides of different sizes.
Outputs: a pyramidal float32 TIFF (the painting of ``slide``), a PNG over the slide thumbnail
(over white when the slide file is absent), a gallery of the top-k tiles (needs the slide)
and GeoJSON of the top-k tiles' region for QuPath.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from shapely import box, union_all

from oncoscope.inference import heatmaps, outputs
from oncoscope.io.atomic import atomic_path
from oncoscope.pathology.annotations import Annotation, write_geojson

#: Longer side (px) of the heatmap figure's thumbnail, as ``oncoscope slide``'s.
FIGURE_PX = 1024
#: Side (px) of one tile in the gallery.
GALLERY_TILE_PX = 160
#: Tiles per gallery row.
GALLERY_COLUMNS = 4


@dataclass(frozen=True)
class TileLayout:
    """Where a bag's tiles lie, from its attributes (see :mod:`oncoscope.features.bags`).

    Attributes:
        tile_px_level0: tile side at level 0 (px).
        cells_per_tile: cells a tile side covers (``tile_px / stride_px``, at least 1).
        slide_mpp: microns per level-0 pixel.
    """

    tile_px_level0: int
    cells_per_tile: int
    slide_mpp: float

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> TileLayout:
        """The layout recorded in a bag's attributes."""
        tile_px, tile0 = int(attrs["tile_px"]), int(attrs["tile_px_level0"])
        stride = max(1, int(attrs["stride_px"]))
        cells = max(1, round(tile_px / stride))
        return cls(tile0, cells, float(attrs["mpp"]) * tile_px / max(tile0, 1))

    @property
    def cell_size_level0(self) -> float:
        """Level-0 pixels per cell side (the stride at level 0)."""
        return self.tile_px_level0 / self.cells_per_tile


def attention_percentiles(attention: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Each tile's attention as its percentile within the bag: 0 (lowest) to 1 (highest).

    Ties share their mean rank.

    Example:
        >>> attention_percentiles(np.array([0.1, 0.6, 0.3])).tolist()
        [0.0, 1.0, 0.5]
    """
    from scipy.stats import rankdata

    n = len(attention)
    if n < 2:
        return np.ones(n, dtype=np.float32)
    ranks = np.asarray(rankdata(np.asarray(attention, dtype=np.float64), method="average"))
    percentiles: np.ndarray[Any, np.dtype[np.float32]] = ((ranks - 1) / (n - 1)).astype(np.float32)
    return percentiles


def attention_map(
    values: np.ndarray[Any, Any],
    coords: np.ndarray[Any, Any],
    layout: TileLayout,
    slide_wh: tuple[int, int],
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``(rows, cols)`` float32 map of per-tile ``values`` on the cell grid; NaN: no tile.

    Args:
        values: ``(n,)`` one value per tile.
        coords: ``(n, 2)`` level-0 ``(x, y)`` of each tile's top-left corner.
        layout: the tiles' size and stride.
        slide_wh: level-0 size of the slide (the map covers it, and every tile).
    """
    cell = layout.cell_size_level0
    k = layout.cells_per_tile
    top_left = np.round(np.asarray(coords, dtype=np.float64) / cell).astype(np.int64)
    extent = top_left.max(axis=0) + k if len(top_left) else np.zeros(2, dtype=np.int64)
    cols = max(math.ceil(slide_wh[0] / cell), int(extent[0]), 1)
    rows = max(math.ceil(slide_wh[1] / cell), int(extent[1]), 1)
    total = np.zeros((rows, cols), dtype=np.float64)
    count = np.zeros((rows, cols), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            r, c = top_left[:, 1] + dy, top_left[:, 0] + dx
            np.add.at(total, (r, c), values)
            np.add.at(count, (r, c), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        painted = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return painted.astype(np.float32)


def write_attention_tiff(
    painted: np.ndarray[Any, Any], path: str | Path, layout: TileLayout
) -> Path:
    """The map as ``slide``'s pyramidal float32 TIFF (resolution tags overlay it on level 0)."""
    return outputs.write_probability_tiff(
        painted[..., None], path, layout.cell_size_level0, layout.slide_mpp
    )


def attention_record(
    painted: np.ndarray[Any, Any],
    layout: TileLayout,
    slide: str,
    slide_found: Path | None,
    slide_wh: tuple[int, int],
    bag: Path,
) -> dict[str, Any]:
    """What ``attention.json`` says of a painted map: the slide (as the bag names it, and the
    file found), the bag, and the map's cell grid on level 0 in the form of ``oncoscope
    slide``'s ``summary.json`` (``grid``: ``origin_level0_xy``, ``cell_size_level0_px``,
    ``shape_rows_cols``), so ``oncoscope view`` lays ``attention.tif`` over the slide."""
    return {
        "slide": slide,
        "slide_found": str(slide_found.absolute()) if slide_found is not None else None,
        "bag": str(bag.absolute()),
        "slide_dimensions_level0": list(slide_wh),
        "slide_mpp": layout.slide_mpp,
        "painted": "percentile of the tile's attention within its slide (0 lowest, 1 highest)",
        "grid": {
            "origin_level0_xy": [0.0, 0.0],
            "cell_size_level0_px": layout.cell_size_level0,
            "shape_rows_cols": [int(n) for n in painted.shape[:2]],
        },
    }


def write_attention_png(
    painted: np.ndarray[Any, Any],
    path: str | Path,
    layout: TileLayout,
    thumbnail: np.ndarray[Any, Any] | None,
    thumb_downsample: float | None,
) -> Path:
    """The map over the slide thumbnail (``inferno``, as ``slide``'s heatmap), or over white.

    Args:
        thumbnail: ``(rows, cols, 3) uint8`` of the slide and its level-0 px per pixel; None:
            the map is drawn over white at most :data:`FIGURE_PX` pixels a side.
    """
    cell = layout.cell_size_level0
    if thumbnail is None or thumb_downsample is None:
        height, width = painted.shape[0] * cell, painted.shape[1] * cell
        thumb_downsample = max(1.0, max(width, height) / FIGURE_PX)
        shape = (max(1, round(height / thumb_downsample)), max(1, round(width / thumb_downsample)))
        thumbnail = np.full((*shape, 3), 255, dtype=np.uint8)
    values = heatmaps.sample_cells(painted, thumbnail.shape[:2], thumb_downsample, cell)
    return heatmaps.write_heatmap(
        values, thumbnail, path, "attention (percentile within the slide)"
    )


def top_tiles(attention: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Indices of the ``k`` tiles of highest attention, highest first (ties: lower index first).

    Example:
        >>> top_tiles(np.array([0.1, 0.5, 0.2, 0.5]), 3).tolist()
        [1, 3, 2]
    """
    order = np.argsort(-np.asarray(attention, dtype=np.float64), kind="stable")
    return order[: max(0, k)].astype(np.int64)


def top_regions(
    coords: np.ndarray[Any, Any], chosen: np.ndarray[Any, Any], layout: TileLayout
) -> list[Annotation]:
    """The union of the chosen tiles' squares (level-0 px) as one annotation for QuPath."""
    size = layout.tile_px_level0
    boxes = [box(float(x), float(y), float(x + size), float(y + size)) for x, y in coords[chosen]]
    if not boxes:
        return []
    return [Annotation(f"top {len(boxes)} attention", union_all(boxes))]


def write_top_regions(
    coords: np.ndarray[Any, Any], chosen: np.ndarray[Any, Any], layout: TileLayout, path: Path
) -> Path:
    """QuPath-importable GeoJSON of :func:`top_regions` (annotations, ``classification.name``)."""
    return write_geojson(top_regions(coords, chosen, layout), path)


def write_gallery(tiles: list[np.ndarray[Any, Any]], captions: list[str], path: str | Path) -> Path:
    """The tiles (``(h, w, 3) uint8`` each) in rows of :data:`GALLERY_COLUMNS`, captioned."""
    side, gap, caption_h = GALLERY_TILE_PX, 6, 18
    columns = min(GALLERY_COLUMNS, max(1, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    canvas = Image.new(
        "RGB", (columns * (side + gap) + gap, rows * (side + caption_h + gap) + gap), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for index, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        row, column = divmod(index, columns)
        left, top = gap + column * (side + gap), gap + row * (side + caption_h + gap)
        canvas.paste(Image.fromarray(tile).resize((side, side)), (left, top))
        draw.text((left, top + side + 2), caption, fill="black")
    path = Path(path)
    with atomic_path(path) as temporary:
        canvas.save(temporary, format="PNG", compress_level=1)
    return path
