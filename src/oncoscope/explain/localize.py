"""From a map to a lesion mask and boxes (seed 000: lesions found from image-level labels)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from skimage.measure import label, regionprops

#: Thresholds are steps of ``1 / N_BINS`` of the ``0..1`` map.
N_BINS = 1000
_EPS = 1e-6  # float32 maps: 0.29 is stored as 0.28999999


def bin_index(heat: npt.NDArray[np.floating[Any]], n_bins: int = N_BINS) -> npt.NDArray[np.intp]:
    """Threshold step of each map value: ``floor(v * n_bins)``, so ``v >= k / n_bins`` iff ``>= k``.

    Example:
        >>> bin_index(np.array([0.0, 0.29, 0.5, 1.0], np.float32), 10).tolist()
        [0, 2, 5, 9]
    """
    index = np.floor((np.asarray(heat, np.float64) + _EPS) * n_bins).astype(np.intp)
    return np.clip(index, 0, n_bins - 1)


def lesion_mask(heat: npt.NDArray[np.floating[Any]], threshold: float) -> npt.NDArray[np.bool_]:
    """Pixels whose map value is at least ``threshold`` (``0..1``), as a boolean ``(H, W)`` mask."""
    return np.asarray(heat, np.float64) >= threshold - _EPS


def lesion_boxes(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int, int, int]]:
    """One box per connected component (8-connectivity) of a mask, ``(row0, col0, row1, col1)``.

    Ends are exclusive (scikit-image's ``regionprops`` ``bbox``); sorted by area, largest first.

    Example:
        >>> m = np.zeros((6, 6), bool); m[1:3, 1:4] = True; m[5, 5] = True
        >>> lesion_boxes(m)
        [(1, 1, 3, 4), (5, 5, 6, 6)]
    """
    regions = regionprops(label(np.asarray(mask, bool), connectivity=2))
    ordered = sorted(regions, key=lambda r: -int(r.area))
    return [tuple(int(v) for v in r.bbox) for r in ordered]  # type: ignore[misc]
