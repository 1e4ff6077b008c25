"""Tissue masks at thumbnail scale, and the fraction of a level-0 box a mask covers.

The mask is Otsu's threshold (scikit-image) on the HSV saturation of a thumbnail: glass is
white or grey (low saturation), stained tissue is coloured. It is cleaned up by a binary
closing, then objects and holes smaller than a minimum area in square microns are removed
(scikit-image morphology).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

#: Below this saturation spread a thumbnail is taken as blank glass (no tissue).
MIN_SATURATION_SPREAD = 0.05


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask and how it was made.

    Attributes:
        mask: ``(rows, cols) bool``, True = tissue.
        downsample: level-0 pixels per mask pixel.
        threshold: the saturation threshold (0..1) used; None when the thumbnail is blank.
    """

    mask: np.ndarray[Any, np.dtype[np.bool_]]
    downsample: float
    threshold: float | None

    @property
    def fraction(self) -> float:
        """Share of the slide that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def tissue_mask(
    thumbnail: np.ndarray[Any, np.dtype[np.uint8]],
    downsample: float,
    *,
    mpp: float,
    min_object_um2: float = 10_000.0,
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
    saturation = hsv_saturation(thumbnail)
    if saturation.max() - saturation.min() < MIN_SATURATION_SPREAD:
        return TissueMask(np.zeros(saturation.shape, dtype=bool), downsample, None)
    threshold = float(threshold_otsu(saturation))
    mask = saturation > threshold
    pixel_um = mpp * downsample
    radius = max(1, round(smoothing_um / pixel_um)) if smoothing_um else 1
    footprint = disk(radius)
    mask = closing(mask, footprint)
    min_px = max(1, math.ceil(min_object_um2 / pixel_um**2))
    mask = remove_small_objects(mask, max_size=min_px - 1)
    mask = remove_small_holes(mask, max_size=min_px - 1)
    return TissueMask(mask.astype(bool), downsample, threshold)


def hsv_saturation(rgb: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """HSV saturation ``(max - min) / max`` of ``(rows, cols, 3) uint8`` RGB, in 0..1 (float32).

    Example:
        >>> hsv_saturation(np.array([[[255, 255, 255], [200, 100, 100]]], np.uint8)).tolist()
        [[0.0, 0.5]]
    """
    channels = rgb[..., :3].astype(np.float32)
    high = channels.max(axis=-1)
    spread = high - channels.min(axis=-1)
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
