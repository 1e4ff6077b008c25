"""Localisation scores of maps against ground-truth lesion masks.

- Pointing game (Zhang et al., ECCV 2016): a hit when the map's maximum (first in raster order
  on ties) lies in a true lesion, or within ``tolerance_px`` of one. Its random baseline is the
  chance that a uniformly random point does: the (tolerance-dilated) lesion area over the image
  area, or over the liver area for a point drawn in the liver.
- PxAP (Choe et al., CVPR 2020): precision and recall of all pixels over thresholds
  ``k / n_bins``, ``AP = sum_k (R_k - R_k+1) P_k``. Computed from per-threshold pixel counts so
  any number of images fits in memory; equal to scikit-learn's ``average_precision_score`` on the
  flattened pixels when map values lie on the threshold grid.
- Dice and IoU of the thresholded map, per image.
- Lesion hit: a true lesion section (the pixels of one lesion id on one slice) is hit when the
  thresholded map covers at least one of its pixels. Size bins by the lesion's largest diameter:
  ``<10 mm``, ``10-20 mm`` (both ends included), ``>20 mm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from skimage.morphology import dilation, disk

from oncoscope.explain.localize import N_BINS, bin_index

#: Lesion size bins: (name, smallest mm, largest mm), ends as documented above.
SIZE_BINS = ("<10 mm", "10-20 mm", ">20 mm")

Mask = npt.NDArray[np.bool_]
Heat = npt.NDArray[np.floating[Any]]


def _grown(truth: Mask, tolerance_px: int) -> Mask:
    truth = np.asarray(truth, bool)
    if tolerance_px <= 0:
        return truth
    grown: Mask = dilation(truth, disk(tolerance_px)).astype(bool)
    return grown


def pointing_hit(heat: Heat, truth: Mask, tolerance_px: int = 0) -> bool:
    """True when the map's maximum lies in ``truth`` (or within ``tolerance_px`` pixels of it).

    Example:
        >>> h = np.zeros((5, 5)); h[1, 1] = 1.0; t = np.zeros((5, 5), bool); t[1:3, 1:3] = True
        >>> pointing_hit(h, t), pointing_hit(h, ~t), pointing_hit(h, np.roll(t, 2), 2)
        (True, False, True)
    """
    row, col = np.unravel_index(int(np.argmax(heat)), np.shape(heat))
    return bool(_grown(truth, tolerance_px)[row, col])


def random_point_rate(truth: Mask, roi: Mask | None = None, tolerance_px: int = 0) -> float:
    """Chance that a uniformly random point of the image (or of ``roi``) hits ``truth``.

    Example:
        >>> t = np.zeros((4, 4), bool); t[0, :2] = True
        >>> roi = np.zeros((4, 4), bool); roi[:2] = True
        >>> random_point_rate(t), random_point_rate(t, roi)
        (0.125, 0.25)
    """
    grown = _grown(truth, tolerance_px)
    if roi is None:
        return float(grown.mean())
    roi = np.asarray(roi, bool)
    return float((grown & roi).sum() / max(int(roi.sum()), 1))


def pixel_counts(heat: Heat, truth: Mask, n_bins: int = N_BINS) -> npt.NDArray[np.int64]:
    """``(2, n_bins)`` counts of lesion (row 0) and other (row 1) pixels per threshold step."""
    index = bin_index(heat, n_bins)
    truth = np.asarray(truth, bool)
    return np.stack(
        [
            np.bincount(index[truth], minlength=n_bins),
            np.bincount(index[~truth], minlength=n_bins),
        ]
    ).astype(np.int64)


def _at_or_above(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per threshold step ``k``: pixels with step ``>= k`` (reverse cumulative sum)."""
    above: npt.NDArray[np.int64] = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1]
    return above


def precision_recall(
    counts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Precision and recall at each threshold step from :func:`pixel_counts` (summed or not)."""
    true_pos, false_pos = _at_or_above(counts)
    predicted = true_pos + false_pos
    precision = np.where(predicted > 0, true_pos / np.maximum(predicted, 1), 1.0)
    recall = true_pos / max(int(counts[0].sum()), 1)
    return precision, recall


def pxap(counts: npt.NDArray[np.int64]) -> float:
    """Pixel average precision from :func:`pixel_counts` summed over images.

    Example:
        >>> heat = np.array([[0.9, 0.5], [0.5, 0.1]]); truth = np.array([[1, 0], [1, 0]], bool)
        >>> round(pxap(pixel_counts(heat, truth, 10)), 4)  # 1/2 * 1 + 1/2 * 2/3
        0.8333
    """
    precision, recall = precision_recall(counts)
    drops = recall - np.append(recall[1:], 0.0)
    return float((drops * precision).sum())


def dice_iou_curves(
    counts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Dice and IoU of the mask ``map >= k / n_bins`` at every step, from one image's counts."""
    true_pos, false_pos = _at_or_above(counts)
    truth = int(counts[0].sum())
    predicted = true_pos + false_pos
    dice = 2 * true_pos / np.maximum(predicted + truth, 1)
    iou = true_pos / np.maximum(predicted + truth - true_pos, 1)
    return dice, iou


def dice_iou(predicted: Mask, truth: Mask) -> tuple[float, float]:
    """Dice and IoU of two masks (1.0 and 1.0 when both are empty).

    Example:
        >>> a = np.zeros((4, 4), bool); a[:2, :2] = True; b = np.zeros((4, 4), bool); b[:2] = True
        >>> dice_iou(a, b)
        (0.6666666666666666, 0.5)
    """
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    overlap, total = int((predicted & truth).sum()), int(predicted.sum() + truth.sum())
    if total == 0:
        return 1.0, 1.0
    return 2 * overlap / total, overlap / (total - overlap)


def lesion_hits(predicted: Mask, lesion_ids: npt.NDArray[np.integer[Any]]) -> dict[int, bool]:
    """For each lesion id present, whether the predicted mask covers at least one of its pixels.

    Example:
        >>> ids = np.array([[1, 1, 0], [0, 0, 2]]); pred = np.array([[0, 1, 0], [0, 0, 0]], bool)
        >>> lesion_hits(pred, ids)
        {1: True, 2: False}
    """
    ids = np.asarray(lesion_ids)
    present = [int(i) for i in np.unique(ids) if i != 0]
    return {i: bool(np.asarray(predicted, bool)[ids == i].any()) for i in present}


def size_bin(diameter_mm: float) -> str:
    """The size bin of a lesion diameter in mm.

    Example:
        >>> [size_bin(d) for d in (9.9, 10.0, 20.0, 20.1)]
        ['<10 mm', '10-20 mm', '10-20 mm', '>20 mm']
    """
    if diameter_mm < 10.0:
        return SIZE_BINS[0]
    return SIZE_BINS[1] if diameter_mm <= 20.0 else SIZE_BINS[2]
