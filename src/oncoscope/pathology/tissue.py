"""The tissue of a slide: one recipe at a fixed physical resolution, and one coverage rule.

**Recipe** (:func:`slide_tissue`, used by ``wsi tile``, ``slide`` and ``scale``): the whole
slide is read at exactly :data:`TISSUE_MPP` (8 um/px, about x1.25) from the pyramid level at or
finer than it, resampled and read in bands (:meth:`oncoscope.io.slides.Slide.whole_at`), so the
mask of a piece of tissue does not depend on the slide's size and memory stays bounded (a
100 000^2 slide at 0.25 um/px gives a 3125^2 mask). The mask is Otsu's threshold
(scikit-image) on the HSV saturation of that image: glass is white or grey (low saturation),
stained tissue is coloured. The threshold is computed over the bounding box of what is not
blank glass (saturation above 0.05) widened by 0.5 mm of glass (:data:`GLASS_MARGIN_UM`), so
the empty glass of a larger scan does not move it. It is cleaned up by a binary closing (one
mask pixel), then objects and holes smaller than :data:`MIN_TISSUE_UM2` are removed
(scikit-image morphology). A slide
without mpp in its file uses ``10 / magnification`` of its objective power (see
:mod:`oncoscope.io.slides`); one coarser than 8 um/px is masked at level 0 as it is.

**Coverage** (:func:`tile_fractions`, :func:`kept`): a tile's tissue fraction is the exact
area-weighted share of its level-0 footprint that the mask covers (outside the slide counts as
glass), and a tile is kept when that fraction is above 0 and at least the threshold
(``wsi tile --min-coverage``, ``slide --min-tissue``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

from oncoscope.errors import NoTissueError

if TYPE_CHECKING:
    from oncoscope.io.slides import Slide

#: Below this saturation spread a thumbnail is taken as blank glass (no tissue).
MIN_SATURATION_SPREAD = 0.05
#: Microns per pixel of every slide's tissue mask (about x1.25).
TISSUE_MPP = 8.0
#: Tissue pieces and holes smaller than this (square microns, 0.01 mm^2) are removed.
MIN_TISSUE_UM2 = 10_000.0
#: Blank glass kept around what is not blank glass when Otsu's threshold is computed (um).
GLASS_MARGIN_UM = 500.0
#: Tiles whose tissue fractions are computed at once (bounds memory on large grids).
FRACTION_CHUNK = 1 << 18
#: Image rows converted to saturation at once (bounds memory on large masks).
_SATURATION_ROWS = 512


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask and how it was made.

    Attributes:
        mask: ``(rows, cols) bool``, True = tissue.
        downsample: level-0 pixels per mask pixel.
        threshold: the saturation threshold (0..1) used; None when the thumbnail is blank.
        mpp: microns per mask pixel (None when not known).
    """

    mask: np.ndarray[Any, np.dtype[np.bool_]]
    downsample: float
    threshold: float | None
    mpp: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the slide that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def tissue_mask(
    thumbnail: np.ndarray[Any, np.dtype[np.uint8]],
    downsample: float,
    *,
    mpp: float,
    min_object_um2: float = MIN_TISSUE_UM2,
    smoothing_um: float = 0.0,
) -> TissueMask:
    """Tissue mask of a slide thumbnail.

    Args:
        thumbnail: ``(rows, cols, 3) uint8`` RGB of the whole slide.
        downsample: level-0 pixels per thumbnail pixel.
        mpp: microns per level-0 pixel.
        min_object_um2: tissue pieces and holes smaller than this area (square microns) are
            removed (default 0.01 mm^2).
        smoothing_um: radius of the closing in microns (0: one thumbnail pixel).

    Returns:
        The :class:`TissueMask`; all False (threshold None) on a blank thumbnail.

    Example:
        >>> rgb = np.full((64, 64, 3), 255, np.uint8); rgb[16:48, 16:48] = (200, 100, 180)
        >>> m = tissue_mask(rgb, 16.0, mpp=0.5, min_object_um2=100)
        >>> float(m.mask.mean())
        0.25
    """
    saturation = np.empty(thumbnail.shape[:2], dtype=np.float32)
    for top in range(0, thumbnail.shape[0], _SATURATION_ROWS):  # bounded temporaries
        rows = slice(top, top + _SATURATION_ROWS)
        saturation[rows] = hsv_saturation(thumbnail[rows])
    pixel_um = mpp * downsample
    if saturation.max() - saturation.min() < MIN_SATURATION_SPREAD:
        return TissueMask(np.zeros(saturation.shape, dtype=bool), downsample, None, pixel_um)
    threshold = float(threshold_otsu(saturation[_around_tissue(saturation, pixel_um)]))
    mask = saturation > threshold
    del saturation
    radius = max(1, round(smoothing_um / pixel_um)) if smoothing_um else 1
    footprint = disk(radius)
    mask = closing(mask, footprint)
    min_px = max(1, math.ceil(min_object_um2 / pixel_um**2))
    mask = remove_small_objects(mask, max_size=min_px - 1)
    mask = remove_small_holes(mask, max_size=min_px - 1)
    return TissueMask(mask.astype(bool), downsample, threshold, pixel_um)


def _around_tissue(
    saturation: np.ndarray[Any, np.dtype[np.float32]], pixel_um: float
) -> tuple[slice, slice]:
    """The part of the image Otsu's threshold is computed on: the bounding box of the pixels
    that are not blank glass (saturation above :data:`MIN_SATURATION_SPREAD`), widened by
    :data:`GLASS_MARGIN_UM` (and clipped to the image)."""
    margin = math.ceil(GLASS_MARGIN_UM / pixel_um)
    boxes = []
    for axis in (1, 0):
        hits = np.flatnonzero((saturation > MIN_SATURATION_SPREAD).any(axis=axis))
        if hits.size == 0:
            return slice(None), slice(None)
        stop = saturation.shape[1 - axis]
        boxes.append(slice(max(0, int(hits[0]) - margin), min(stop, int(hits[-1]) + 1 + margin)))
    return boxes[0], boxes[1]


def read_tissue(
    slide: Slide, *, min_object_um2: float = MIN_TISSUE_UM2
) -> tuple[TissueMask, np.ndarray[Any, np.dtype[np.uint8]]]:
    """The slide's tissue mask by the recipe of the module docstring, and the image it was
    made on (``(rows, cols, 3) uint8`` RGB at :data:`TISSUE_MPP`, e.g. for an overlay).

    Args:
        slide: the open slide (with any scan overrides).
        min_object_um2: tissue pieces and holes smaller than this are removed.

    Returns:
        ``(mask, image)``; the mask is all False (threshold None) on a blank slide.
    """
    image, downsample = slide.whole_at(TISSUE_MPP)
    return tissue_mask(image, downsample, mpp=slide.mpp, min_object_um2=min_object_um2), image


def slide_tissue(slide: Slide, *, min_object_um2: float = MIN_TISSUE_UM2) -> TissueMask:
    """The slide's tissue mask (:func:`read_tissue`), refusing a slide without tissue.

    Raises:
        NoTissueError: the mask is empty (a blank slide).
    """
    tissue, _ = read_tissue(slide, min_object_um2=min_object_um2)
    if not tissue.mask.any():
        raise NoTissueError("no tissue found (blank slide?)", slide.path)
    return tissue


def tile_fractions(
    tissue: TissueMask, positions_xy: np.ndarray[Any, Any], extent_wh: tuple[float, float]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Tissue fraction (0..1) of each tile's level-0 footprint: the coverage rule's measure.

    Exact for a mask that is constant within each of its pixels: the mask's summed-area table
    is bilinear inside each pixel, so the covered area of any box comes from four interpolated
    lookups (as :func:`region_fraction` computes it box by box). Outside the mask counts as 0.

    Args:
        tissue: the slide's mask.
        positions_xy: ``(n, 2)`` level-0 ``(x, y)`` of the tiles' top-left corners.
        extent_wh: level-0 size of a tile.

    Returns:
        ``(n,) float64``.

    Example:
        >>> m = TissueMask(np.eye(2, dtype=bool).repeat(4, 0).repeat(4, 1), 8.0, 0.5)
        >>> tile_fractions(m, np.array([[0, 0], [32, 0], [16, 16]]), (32.0, 32.0)).tolist()
        [1.0, 0.0, 0.5]
    """
    positions = np.asarray(positions_xy, dtype=np.float64).reshape(-1, 2)
    mask = tissue.mask
    out = np.zeros(len(positions), dtype=np.float64)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    d = tissue.downsample
    w, h = extent_wh[0] / d, extent_wh[1] / d
    x0, y0 = positions[:, 0] / d, positions[:, 1] / d
    # only the tiles that reach the tissue's bounding box hold any
    touching = np.flatnonzero(
        (x0 < cols[-1] + 1) & (x0 + w > cols[0]) & (y0 < rows[-1] + 1) & (y0 + h > rows[0])
    )
    if touching.size == 0:
        return out
    # the summed-area table of the bounding box alone (exact: nothing outside it is tissue)
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    table = np.zeros((box.shape[0] + 1, box.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(box, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    for start in range(0, len(touching), FRACTION_CHUNK):
        chosen = touching[start : start + FRACTION_CHUNK]
        left, top = x0[chosen] - cols[0], y0[chosen] - rows[0]
        right, bottom = left + w, top + h
        area = (
            _integral(table, right, bottom)
            - _integral(table, left, bottom)
            - _integral(table, right, top)
            + _integral(table, left, top)
        )
        out[chosen] = np.clip(area / (w * h), 0.0, 1.0)
    return out


def kept(fractions: np.ndarray[Any, Any], threshold: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The coverage rule: tiles with some tissue and a fraction of at least ``threshold``.

    Example:
        >>> kept(np.array([0.0, 0.2, 0.5, 0.9]), 0.5).tolist(), kept(np.zeros(1), 0).tolist()
        ([False, False, True, True], [False])
    """
    fractions = np.asarray(fractions)
    chosen: np.ndarray[Any, np.dtype[np.bool_]] = (fractions >= threshold) & (fractions > 0)
    return chosen


def _integral(
    table: np.ndarray[Any, np.dtype[np.int64]],
    x: np.ndarray[Any, np.dtype[np.float64]],
    y: np.ndarray[Any, np.dtype[np.float64]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Mask area in ``[0, x) x [0, y)`` (mask pixels) from its summed-area table ``table``
    (``table[r, c]`` = pixels of ``mask[:r, :c]``), bilinear between whole pixels."""
    rows, cols = table.shape[0] - 1, table.shape[1] - 1
    x = np.clip(x, 0, cols)
    y = np.clip(y, 0, rows)
    c = np.minimum(np.floor(x).astype(np.int64), max(cols - 1, 0))
    r = np.minimum(np.floor(y).astype(np.int64), max(rows - 1, 0))
    fx, fy = x - c, y - r
    top = table[r, c] * (1 - fx) + table[r, c + 1] * fx
    bottom = table[r + 1, c] * (1 - fx) + table[r + 1, c + 1] * fx
    area: np.ndarray[Any, np.dtype[np.float64]] = top * (1 - fy) + bottom * fy
    return area


def hsv_saturation(rgb: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """HSV saturation ``(max - min) / max`` of ``(rows, cols, 3) uint8`` RGB, in 0..1 (float32).

    Example:
        >>> hsv_saturation(np.array([[[255, 255, 255], [200, 100, 100]]], np.uint8)).tolist()
        [[0.0, 0.5]]
    """
    channels = rgb[..., :3]
    high = channels.max(axis=-1).astype(np.float32)
    spread = high - channels.min(axis=-1).astype(np.float32)
    saturation: np.ndarray[Any, np.dtype[np.float32]] = np.divide(
        spread, high, out=np.zeros_like(high), where=high > 0
    )
    return saturation


def region_fraction(
    mask: np.ndarray[Any, Any],
    location_xy: tuple[float, float],
    size_wh: tuple[float, float],
    downsample: float,
) -> float:
    """Share (0..1) of a level-0 box covered by a low-resolution mask, area-weighted.

    Mask pixels cut by the box's edges count by the part of them inside it, so the fraction is
    exact for a mask that is constant within each of its pixels. Outside the mask counts as 0.

    Args:
        mask: ``(rows, cols)`` bool or 0/1 values.
        location_xy: level-0 top-left corner of the box.
        size_wh: level-0 size of the box.
        downsample: level-0 pixels per mask pixel.

    Example:
        >>> m = np.zeros((4, 4), bool); m[:, :2] = True
        >>> region_fraction(m, (8.0, 0.0), (16.0, 16.0), 8.0)  # half the box on tissue
        0.5
    """
    x0, y0 = location_xy[0] / downsample, location_xy[1] / downsample
    x1, y1 = x0 + size_wh[0] / downsample, y0 + size_wh[1] / downsample
    rows, cols = mask.shape
    c0, c1 = max(0, math.floor(x0)), min(cols, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(rows, math.ceil(y1))
    if c0 >= c1 or r0 >= r1:
        return 0.0
    wx = np.clip(np.minimum(np.arange(c0, c1) + 1, x1) - np.maximum(np.arange(c0, c1), x0), 0, 1)
    wy = np.clip(np.minimum(np.arange(r0, r1) + 1, y1) - np.maximum(np.arange(r0, r1), y0), 0, 1)
    covered = float(wy @ mask[r0:r1, c0:c1].astype(np.float64) @ wx)
    return min(1.0, covered / ((x1 - x0) * (y1 - y0)))
