"""Tile coordinates: the overlapping grid of seed 004 (Fig. 4) and random positions in tissue.

Pure coordinate functions, all in level-0 pixels: a position is the ``(x, y)`` of a tile's
top-left corner, a tile's extent is its size at the target resolution times the downsample.

Grid: consecutive tiles overlap by ``overlap`` of the tile's extent, so the stride is
``extent * (1 - overlap)``; column ``j`` starts at ``round(j * stride)``, left to right, then
top to bottom. Edge policy (never silent padding):

- ``"drop"`` (default): a tile that would cross the slide's right or bottom edge is not made;
  a strip narrower than one stride at those edges may stay untiled.
- ``"shift"``: as ``"drop"``, plus one more tile per row/column shifted inward so it ends
  exactly at the edge, whenever the last grid tile does not reach it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from oncoscope.errors import InvalidOptionError

EdgePolicy = Literal["drop", "shift"]
EDGE_POLICIES: tuple[EdgePolicy, ...] = ("drop", "shift")


def axis_starts(length: int, extent: float, overlap: float, edge: EdgePolicy = "drop") -> list[int]:
    """Start positions along one axis of length ``length`` (level-0 pixels).

    Tile ``j`` starts at ``round(j * stride)`` and exists when it ends inside the axis.

    Raises:
        InvalidOptionError: overlap outside [0, 1), a stride under one pixel, a non-positive
            extent, an extent longer than the axis, or an unknown edge policy.

    Example:
        >>> axis_starts(1000, 400, 0.3)
        [0, 280, 560]
        >>> axis_starts(1000, 400, 0.3, edge="shift")
        [0, 280, 560, 600]
    """
    if not 0 <= overlap < 1:
        raise InvalidOptionError(f"--overlap must be in [0, 1), got {overlap}")
    if edge not in EDGE_POLICIES:
        raise InvalidOptionError(f"edge policy '{edge}' is not one of {', '.join(EDGE_POLICIES)}")
    if extent <= 0:
        raise InvalidOptionError(f"tile extent must be positive, got {extent}")
    if extent > length + 1e-6:
        raise InvalidOptionError(
            f"a tile spans {extent:.0f} level-0 px but the slide is only {length} px; "
            "pass a smaller --size or a lower --magnification"
        )
    stride = extent * (1 - overlap)
    if stride < 1:
        raise InvalidOptionError(
            f"overlap {overlap} leaves a stride of {stride:.2f} level-0 px; lower --overlap"
        )
    count = math.floor((length - extent) / stride) + 2  # rounding may fit one more
    starts = [round(j * stride) for j in range(count)]
    starts = [s for s in starts if s + extent <= length + 1e-6]
    last_end = starts[-1] + extent
    if edge == "shift" and last_end < length - 0.5:
        starts.append(math.floor(length - extent))
    return starts


def grid_positions(
    slide_wh: tuple[int, int],
    extent_wh: tuple[float, float],
    overlap: float,
    edge: EdgePolicy = "drop",
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Top-left corners of the overlapping grid, left to right, then top to bottom.

    Args:
        slide_wh: level-0 size of the slide.
        extent_wh: level-0 size of a tile.
        overlap: fraction (0..1) of a tile shared by consecutive tiles.
        edge: ``"drop"`` or ``"shift"`` (see the module docstring).

    Returns:
        ``(n, 2) int64`` array of level-0 ``(x, y)``.
    """
    xs = axis_starts(slide_wh[0], extent_wh[0], overlap, edge)
    ys = axis_starts(slide_wh[1], extent_wh[1], overlap, edge)
    grid_x, grid_y = np.meshgrid(np.asarray(xs, np.int64), np.asarray(ys, np.int64))
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def random_positions(
    mask: np.ndarray[Any, Any],
    downsample: float,
    slide_wh: tuple[int, int],
    extent_wh: tuple[float, float],
    count: int,
    rng: np.random.Generator,
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Tiles centred on uniformly drawn points of a mask, shifted inward to fit the slide.

    Args:
        mask: ``(rows, cols)`` bool, True where tiles may be centred (tissue or annotation).
        downsample: level-0 pixels per mask pixel.
        slide_wh: level-0 size of the slide.
        extent_wh: level-0 size of a tile (at most the slide's).
        count: number of positions.
        rng: the random generator (seed it for a reproducible run).

    Returns:
        ``(count, 2) int64`` level-0 ``(x, y)``; ``(0, 2)`` when the mask is empty.
    """
    rows, cols = np.nonzero(mask)
    if count <= 0 or rows.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pick = rng.integers(0, rows.size, size=count)
    centre_x = (cols[pick] + rng.random(count)) * downsample
    centre_y = (rows[pick] + rng.random(count)) * downsample
    x = np.clip(np.round(centre_x - extent_wh[0] / 2), 0, math.floor(slide_wh[0] - extent_wh[0]))
    y = np.clip(np.round(centre_y - extent_wh[1] / 2), 0, math.floor(slide_wh[1] - extent_wh[1]))
    return np.stack([x, y], axis=1).astype(np.int64)
