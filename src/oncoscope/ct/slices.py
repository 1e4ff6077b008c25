"""Image-level labels for transverse slices, from a LiTS-style label mask.

LiTS masks hold 0 (background), 1 (liver) and 2 (tumour). A slice is ``tumour`` when it holds at
least one tumour voxel, and ``healthy`` when it holds liver and no tumour; slices without liver
or tumour get no label. Lesion sizes are those of the 3-D lesions the slice cuts (see
:mod:`oncoscope.ct.lesions`), so a slice through the tip of a 50 mm lesion is not "small".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from oncoscope.ct.lesions import Lesion, find_lesions

LIVER_LABEL = 1
TUMOUR_LABEL = 2
TUMOUR = "tumour"
HEALTHY = "healthy"


@dataclass(frozen=True)
class SliceLabel:
    """The image-level label of one transverse slice.

    Attributes:
        slice_index: index ``d`` along the canonical inferior-to-superior axis.
        label: ``"tumour"`` or ``"healthy"``.
        lesion_count: number of 3-D lesions the slice cuts.
        max_lesion_mm: largest in-plane diameter (mm) among those lesions; 0 when none.
        max_section_mm: largest diameter (mm) of a lesion's cross-section on this slice.
        all_small: every lesion the slice cuts is at most ``small_mm`` (True when none).
        liver_fraction: fraction of the slice's pixels that are liver or tumour (0..1).
    """

    slice_index: int
    label: str
    lesion_count: int
    max_lesion_mm: float
    max_section_mm: float
    all_small: bool
    liver_fraction: float


def label_slices(
    mask: npt.NDArray[np.integer],
    spacing_mm: tuple[float, float, float],
    *,
    small_mm: float = 20.0,
) -> tuple[list[SliceLabel], list[Lesion]]:
    """Label every slice that holds liver or tumour.

    Args:
        mask: ``(D, H, W)`` LiTS labels in the canonical layout.
        spacing_mm: voxel size ``(slice, row, col)`` in mm.
        small_mm: a lesion is small when its largest in-plane diameter is at most this (mm).

    Returns:
        ``(labels, lesions)``: one :class:`SliceLabel` per slice with liver or tumour, in slice
        order, and the patient's lesions.
    """
    tumour = mask == TUMOUR_LABEL
    lesions = find_lesions(tumour, spacing_mm)
    cut_by: dict[int, list[tuple[Lesion, float]]] = {}
    for lesion in lesions:
        for index, section_mm in zip(
            lesion.slice_indices, lesion.section_diameters_mm, strict=True
        ):
            cut_by.setdefault(index, []).append((lesion, section_mm))
    organ_pixels = (mask >= LIVER_LABEL).reshape(mask.shape[0], -1).sum(axis=1)
    pixels_per_slice = mask.shape[1] * mask.shape[2]
    labels: list[SliceLabel] = []
    for organ_slice in np.flatnonzero(organ_pixels):
        cuts = cut_by.get(int(organ_slice), [])
        labels.append(
            SliceLabel(
                slice_index=int(organ_slice),
                label=TUMOUR if cuts else HEALTHY,
                lesion_count=len(cuts),
                max_lesion_mm=max((lesion.diameter_mm for lesion, _ in cuts), default=0.0),
                max_section_mm=max((section for _, section in cuts), default=0.0),
                all_small=all(lesion.is_small(small_mm) for lesion, _ in cuts),
                liver_fraction=float(organ_pixels[organ_slice]) / pixels_per_slice,
            )
        )
    return labels, lesions


def select_slices(
    labels: list[SliceLabel], *, healthy_per_patient: int, only_small: bool = False
) -> list[SliceLabel]:
    """Choose the slices of one patient to write.

    Every tumour slice is kept (with ``only_small``, only those whose lesions are all small).
    ``healthy_per_patient`` healthy slices are sampled evenly along the patient's healthy liver
    slices: the centres of that many equal runs of them, in slice order, so the liver's thin
    top and bottom are not over-represented.

    Args:
        labels: one patient's slice labels, from :func:`label_slices`.
        healthy_per_patient: how many healthy slices to keep (fewer if the patient has fewer).
        only_small: keep only tumour slices whose lesions are all small.

    Returns:
        The kept labels, in slice order.
    """
    tumour = [s for s in labels if s.label == TUMOUR and (s.all_small or not only_small)]
    healthy = [s for s in labels if s.label == HEALTHY]
    count = min(max(healthy_per_patient, 0), len(healthy))
    centres = [int((i + 0.5) * len(healthy) / count) for i in range(count)]
    chosen = [healthy[i] for i in centres]
    return sorted(tumour + chosen, key=lambda s: s.slice_index)
