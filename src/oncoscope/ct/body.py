"""The patient's body on a rendered CT slice: the part of the image a lesion can lie in.

A slice rendered through an HU window (``ct prepare``) shows the air around the patient at the
window's floor (0 in every channel). The body is the convex hull of the pixels above the floor,
once pieces smaller than ``min_piece_px`` (noise, a stray bright pixel) are dropped. The hull,
not the pieces filled, because in a soft-tissue window the fat under the skin is at the floor
too and the body's outline need not be a closed ring. Built on scikit-image's
``remove_small_objects`` and ``convex_hull_image``.

Where the air is not at the floor, nothing is ruled out: in a window whose floor lies below
air (a lung window, -1350 HU) the air renders above 0 and the body is the whole image. On
slices that ``ct prepare --roi`` cut to the liver ROI (everything else at 0) the "body" is the
hull of the ROI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from skimage.morphology import convex_hull_image, remove_small_objects
from skimage.transform import resize

#: Pieces above the window's floor smaller than this many pixels are not the patient.
MIN_PIECE_PX = 64


def body_mask(
    pixels: npt.NDArray[np.uint8], *, min_piece_px: int = MIN_PIECE_PX
) -> npt.NDArray[np.bool_]:
    """``(H, W)`` mask of the patient's body on a rendered slice (module docstring).

    Args:
        pixels: ``(H, W)`` or ``(H, W, C)`` uint8 slice as ``ct prepare`` renders it (air at 0).
        min_piece_px: pieces above the floor smaller than this (in pixels) are dropped.

    Returns:
        The body; all True when nothing on the slice is above the floor (no body to tell
        from the air, so nothing is ruled out).

    Raises:
        ValueError: an image that is not 2-D or 3-D.
    """
    return _hull(_above_floor(pixels), min_piece_px)


def body_on_grid(pixels: npt.NDArray[np.uint8], size_px: int) -> npt.NDArray[np.bool_]:
    """:func:`body_mask` on the ``size_px`` square grid a model takes the slice at: what is
    above the floor is put on that grid (nearest neighbour) first, so the same slice gives the
    same body at whatever size it was rendered.

    Raises:
        ValueError: an image that is not 2-D or 3-D.
    """
    above = _above_floor(pixels)
    if above.shape != (size_px, size_px):
        above = np.asarray(
            resize(above, (size_px, size_px), order=0, anti_aliasing=False), dtype=bool
        )
    return _hull(above, MIN_PIECE_PX)


def bodies_on_grid(slices: Sequence[npt.NDArray[np.uint8]], size_px: int) -> npt.NDArray[np.bool_]:
    """``(B, size_px, size_px)``: :func:`body_on_grid` of each slice, stacked as a batch (the
    ``foreground`` of :func:`oncoscope.explain.guided.guided_maps`)."""
    return np.stack([body_on_grid(pixels, size_px) for pixels in slices])


def _above_floor(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    image = np.asarray(pixels)
    if image.ndim not in (2, 3):
        raise ValueError(f"need an (H, W) or (H, W, C) slice, got shape {image.shape}")
    above = image > 0 if image.ndim == 2 else (image > 0).any(axis=2)
    return np.asarray(above, dtype=bool)


def _hull(above: npt.NDArray[np.bool_], min_piece_px: int) -> npt.NDArray[np.bool_]:
    pieces = remove_small_objects(above, max_size=max(min_piece_px - 1, 0))
    if not pieces.any():
        return np.ones(above.shape, dtype=bool)
    return np.asarray(convex_hull_image(pieces), dtype=bool)
