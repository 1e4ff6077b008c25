"""Lesion candidates from tumour maps: per slice (2-D components), per volume (3-D components).

A slice's candidates are the connected components (8-connectivity) of its map at or above the
threshold that reach into the liver, on slices the model calls tumour (tumour probability at
least ``min_prob``: a map is scaled to ``0..1`` on every slice, so on a slice the model calls
healthy its brightest pixels are noise). A component is cut at the liver's edge, or, with
``beyond_liver_mm``, kept whole up to that distance outside it: an ROI found from the image
(the EM liver ROI) leaves out the liver's rim and a lesion at the edge with it, and the piece
of that lesion's map inside the ROI would be a fragment that misses it. A candidate's score is
the slice's tumour probability times the largest map value inside it. A volume's candidates
join slice candidates that touch across adjacent slices (26-connectivity, as
:mod:`oncoscope.ct.lesions` joins lesions): each has its largest in-plane (Feret) diameter in
mm, its volume in ml, its slice range, the largest score of its voxels, and its Couinaud
segment (:mod:`oncoscope.ct.couinaud`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.measure import label, regionprops

from oncoscope.ct.couinaud import Landmarks, assign_lesions, segment_liver
from oncoscope.ct.lesions import bounding_box, feret_diameter_mm, find_lesions, label_lesions
from oncoscope.explain.localize import lesion_mask


@dataclass(frozen=True)
class SliceCandidate:
    """One 2-D candidate.

    Attributes:
        number: its number on its slice (from 1, largest first).
        box: ``(row0, col0, row1, col1)`` pixel box, ends exclusive.
        centroid_rc: centre of mass ``(row, col)`` in pixels.
        diameter_mm: largest in-plane (Feret) diameter in mm (NaN without pixel spacing).
        area_px: pixel count.
        score: slice tumour probability times the largest map value inside it (``0..1``).
    """

    number: int
    box: tuple[int, int, int, int]
    centroid_rc: tuple[float, float]
    diameter_mm: float
    area_px: int
    score: float


def slice_candidates(
    heat: npt.NDArray[np.floating[Any]],
    liver: npt.NDArray[np.bool_],
    prob: float,
    *,
    threshold: float,
    min_prob: float,
    pixel_mm: tuple[float, float] | None,
    beyond_liver_mm: float = 0.0,
) -> tuple[npt.NDArray[np.bool_], list[SliceCandidate]]:
    """The candidates of one slice.

    Args:
        heat: ``(H, W)`` map in ``0..1``.
        liver: ``(H, W)`` liver mask on the same grid.
        prob: the slice's tumour probability.
        threshold: map threshold in ``(0, 1)``.
        min_prob: slices with a lower tumour probability have no candidates.
        pixel_mm: ``(row, col)`` pixel size in mm, or None (diameters are then NaN, and
            ``beyond_liver_mm`` counts pixels).
        beyond_liver_mm: a component of the thresholded map that reaches into the liver is
            kept up to this distance (mm) outside it; 0 cuts it at the liver's edge.

    Returns:
        ``(mask, candidates)``: the ``(H, W)`` candidate mask and one entry per component,
        largest first.
    """
    if prob < min_prob:
        return np.zeros(liver.shape, dtype=bool), []
    mask = liver_candidate_mask(
        lesion_mask(heat, threshold), liver, beyond_liver_mm, pixel_mm or (1.0, 1.0)
    )
    regions = sorted(regionprops(label(mask, connectivity=2)), key=lambda r: -int(r.area))
    found = []
    for number, region in enumerate(regions, start=1):
        rows, cols = region.coords[:, 0], region.coords[:, 1]
        piece = np.zeros(mask.shape, dtype=bool)
        piece[rows, cols] = True
        diameter = feret_diameter_mm(piece, *pixel_mm) if pixel_mm else float("nan")
        row0, col0, row1, col1 = (int(v) for v in region.bbox)
        found.append(
            SliceCandidate(
                number=number,
                box=(row0, col0, row1, col1),
                centroid_rc=(float(rows.mean()), float(cols.mean())),
                diameter_mm=diameter,
                area_px=int(region.area),
                score=float(prob) * float(np.max(heat[rows, cols])),
            )
        )
    return mask, found


@dataclass
class StackedCandidates:
    """The slice candidates of a volume, stacked.

    Attributes:
        mask: ``(D, H, W)`` candidate voxels.
        scores: ``(D, H, W)`` float32 score of each candidate voxel (slice tumour probability
            times map value), 0 elsewhere.
        heats: the ``(H, W)`` map of each slice with a candidate, at the volume's size.
        per_slice: the candidates of each slice that has any.
    """

    mask: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float32]
    heats: dict[int, npt.NDArray[np.float32]]
    per_slice: dict[int, list[SliceCandidate]]


def stack_slice_candidates(
    slice_indices: Sequence[int],
    heats: Sequence[npt.NDArray[np.floating[Any]]],
    probs: Sequence[float],
    liver: npt.NDArray[np.bool_],
    *,
    threshold: float,
    min_prob: float,
    pixel_mm: tuple[float, float],
    beyond_liver_mm: float = 0.0,
) -> StackedCandidates:
    """:func:`slice_candidates` on each given slice of a volume, stacked for
    :func:`volume_candidates`.

    Args:
        slice_indices: the slices that have a map (their index along ``D``).
        heats: one map in ``0..1`` per slice, at any size: a map at another size than the
            volume's ``(H, W)`` is resized to it (bilinear).
        probs: one tumour probability per slice.
        liver: ``(D, H, W)`` liver mask.
        threshold, min_prob, pixel_mm, beyond_liver_mm: as for :func:`slice_candidates`.

    Raises:
        ValueError: the three sequences differ in length.
    """
    from skimage.transform import resize

    _, height, width = liver.shape
    stacked = StackedCandidates(
        mask=np.zeros(liver.shape, dtype=bool),
        scores=np.zeros(liver.shape, dtype=np.float32),
        heats={},
        per_slice={},
    )
    for k, heat, prob in zip(slice_indices, heats, probs, strict=True):
        if heat.shape != (height, width):
            heat = np.clip(resize(heat, (height, width), order=1, preserve_range=True), 0.0, 1.0)
        heat = np.asarray(heat, dtype=np.float32)
        mask, candidates = slice_candidates(
            heat,
            liver[k],
            prob,
            threshold=threshold,
            min_prob=min_prob,
            pixel_mm=pixel_mm,
            beyond_liver_mm=beyond_liver_mm,
        )
        stacked.mask[k] = mask
        stacked.scores[k] = np.where(mask, prob * heat, 0.0)
        if candidates:
            stacked.heats[k], stacked.per_slice[k] = heat, candidates
    return stacked


def liver_candidate_mask(
    hot: npt.NDArray[np.bool_],
    liver: npt.NDArray[np.bool_],
    beyond_liver_mm: float,
    pixel_mm: tuple[float, float],
) -> npt.NDArray[np.bool_]:
    """The pixels of ``hot`` (a thresholded ``(H, W)`` map) inside ``liver``, and with
    ``beyond_liver_mm`` > 0 the rest of each 8-connected piece of ``hot`` that reaches into the
    liver, up to that distance (mm, at ``pixel_mm`` per ``(row, col)`` pixel) outside it."""
    liver = np.asarray(liver, bool)
    inside: npt.NDArray[np.bool_] = hot & liver
    if beyond_liver_mm <= 0 or not inside.any():
        return inside
    near = ndimage.distance_transform_edt(~liver, sampling=pixel_mm) <= beyond_liver_mm
    pieces = label(hot & near, connectivity=2)
    touching = np.unique(pieces[inside])
    kept: npt.NDArray[np.bool_] = np.isin(pieces, touching[touching > 0])
    return kept


@dataclass(frozen=True)
class VolumeCandidate:
    """One 3-D candidate.

    Attributes:
        candidate_id: its value in the candidate label map (from 1).
        first_slice: lowest slice index ``d`` (canonical layout, inferior to superior).
        last_slice: highest slice index.
        diameter_mm: largest in-plane (Feret) diameter over its slices, mm.
        volume_ml: volume in ml.
        centroid_dhw: centre of mass as a ``(d, h, w)`` voxel index (canonical layout).
        centroid_mm: centre of mass in RAS+ patient mm.
        score: largest score of its voxels (slice probability times map value).
        small: ``diameter_mm`` at most ``small_mm``.
        segment: Couinaud segment holding most of its voxels.
        segment_fractions: share of its voxels in each segment it touches.
    """

    candidate_id: int
    first_slice: int
    last_slice: int
    diameter_mm: float
    volume_ml: float
    centroid_dhw: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    score: float
    small: bool
    segment: str
    segment_fractions: dict[str, float]


def volume_candidates(
    mask: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.floating[Any]],
    liver: npt.NDArray[np.bool_],
    affine: npt.NDArray[np.float64],
    spacing_mm: tuple[float, float, float],
    landmarks: Landmarks,
    *,
    small_mm: float,
) -> tuple[npt.NDArray[np.uint16], list[VolumeCandidate]]:
    """Join slice candidates into 3-D candidates and place each in a Couinaud segment.

    Args:
        mask: ``(D, H, W)`` candidate voxels (the slice masks stacked), canonical layout.
        scores: ``(D, H, W)`` score of each voxel (slice probability times map value).
        liver: ``(D, H, W)`` liver mask.
        affine: ``(d, h, w, 1)`` to RAS mm map.
        spacing_mm: voxel size ``(slice, row, col)`` in mm.
        landmarks: the points of the Couinaud planes.
        small_mm: a candidate is small when its diameter is at most this (mm).

    Returns:
        ``(labels, candidates)``: ``(D, H, W)`` uint16 label map (0 none, else
        ``candidate_id``) and the candidates, numbered as :func:`find_lesions` numbers lesions.

    Raises:
        InvalidLandmarksError: landmarks that do not define the planes.
    """
    labels = np.zeros(mask.shape, dtype=np.uint16)
    box = bounding_box(mask)
    if box is None:
        return labels, []
    labels[box] = label_lesions(mask[box])
    lesions = find_lesions(mask, spacing_mm)
    segments = segment_liver(liver | mask, affine, landmarks.points_mm)
    placed = {p.lesion_id: p for p in assign_lesions(segments, mask, affine, spacing_mm)}
    best = np.zeros(len(lesions) + 1)
    np.maximum.at(best, labels[box].ravel(), np.asarray(scores[box], np.float64).ravel())
    found = []
    for lesion in lesions:
        place = placed[lesion.lesion_id]
        found.append(
            VolumeCandidate(
                candidate_id=lesion.lesion_id,
                first_slice=lesion.slice_indices[0],
                last_slice=lesion.slice_indices[-1],
                diameter_mm=lesion.diameter_mm,
                volume_ml=lesion.volume_ml,
                centroid_dhw=lesion.centroid_dhw,
                centroid_mm=place.centroid_mm,
                score=float(best[lesion.lesion_id]),
                small=lesion.is_small(small_mm),
                segment=place.segment,
                segment_fractions=dict(place.fractions),
            )
        )
    return labels, found


def world_mm(
    affine: npt.NDArray[np.float64], index: tuple[float, float, float]
) -> tuple[float, float, float]:
    """RAS mm of a ``(d, h, w)`` voxel index."""
    x, y, z = (float(v) for v in affine[:3, :3] @ np.asarray(index, np.float64) + affine[:3, 3])
    return (x, y, z)


def fractions_text(fractions: Mapping[str, float]) -> str:
    """``"VII 0.8; VIII 0.2"``: a segment share per segment, for a CSV cell."""
    return "; ".join(f"{name} {share:.2f}" for name, share in fractions.items())
