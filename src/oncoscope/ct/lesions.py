"""Lesions as connected components of a tumour mask, measured in millimetres.

A lesion is a 3-D connected component (26-connectivity) of the tumour label. Its size is its
largest in-plane diameter: over every transverse slice it crosses, the maximum Feret (caliper)
diameter of its cross-section, measured on the union of the pixel squares with the real row and
column spacing. This is the "largest axial diameter" that the small-HCC criterion (<= 20 mm, or
<= 30 mm) refers to. Sizes never come from pixel counts.

Written by hand because scikit-image's ``feret_diameter_max`` measures on a marching-squares
contour that cuts pixel corners (a 3 x 4 pixel block measures 4.47 pixels, not 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull


@dataclass(frozen=True)
class Lesion:
    """One 3-D tumour component.

    Attributes:
        lesion_id: its number (from 1), as :func:`label_lesions` numbers the components.
        slice_indices: the slices ``d`` it occupies, ascending.
        section_diameters_mm: its in-plane Feret diameter on each of those slices, in mm.
        diameter_mm: largest in-plane Feret diameter over its slices, in mm.
        volume_ml: its volume in millilitres (voxel count x voxel volume).
        centroid_dhw: its centre of mass as a ``(d, h, w)`` voxel index.
    """

    lesion_id: int
    slice_indices: tuple[int, ...]
    section_diameters_mm: tuple[float, ...]
    diameter_mm: float
    volume_ml: float
    centroid_dhw: tuple[float, float, float]

    def is_small(self, small_mm: float) -> bool:
        """True when the largest in-plane diameter is at most ``small_mm``."""
        return self.diameter_mm <= small_mm


def feret_diameter_mm(mask: npt.NDArray[np.bool_], row_mm: float, col_mm: float) -> float:
    """Largest caliper diameter of the pixels of a 2-D mask, in mm.

    Each pixel is a ``row_mm x col_mm`` rectangle; the diameter is the largest distance between
    two corners of those rectangles (equal to the largest caliper width of their union).

    Args:
        mask: ``(H, W)`` boolean mask; may hold several pieces.
        row_mm: pixel height in mm.
        col_mm: pixel width in mm.

    Returns:
        The diameter in mm; 0.0 for an empty mask.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((10, 10), bool); m[2:5, 3:7] = True   # 3 rows x 4 columns
        >>> round(feret_diameter_mm(m, 1.0, 1.0), 3)  # the diagonal of a 3 x 4 rectangle
        5.0
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    boundary = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(boundary)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(np.float64)
    points = np.unique(corners, axis=0) * np.array([row_mm, col_mm])
    if len(points) > 8:
        points = points[ConvexHull(points).vertices]
    differences = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((differences**2).sum(axis=-1)).max())


def label_lesions(tumour: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    """Number the 3-D connected components (26-connectivity) of a tumour mask.

    Args:
        tumour: ``(D, H, W)`` boolean tumour mask.

    Returns:
        int32 array of the same shape: 0 outside lesions, 1..n inside, numbered in scan order.
    """
    labels, _ = ndimage.label(np.asarray(tumour, dtype=bool), structure=np.ones((3, 3, 3), bool))
    return np.asarray(labels, dtype=np.int32)


def bounding_box(mask: npt.NDArray[np.bool_]) -> tuple[slice, slice, slice] | None:
    """The smallest ``(d, h, w)`` box of slices holding every True voxel; None when empty.

    Example:
        >>> m = np.zeros((4, 5, 6), bool); m[1, 2:4, 3] = True
        >>> bounding_box(m)
        (slice(1, 2, None), slice(2, 4, None), slice(3, 4, None))
    """
    if not mask.any():
        return None
    d, h, w = (
        slice(int(np.flatnonzero(hit)[0]), int(np.flatnonzero(hit)[-1]) + 1)
        for hit in (mask.any(axis=(1, 2)), mask.any(axis=(0, 2)), mask.any(axis=(0, 1)))
    )
    return d, h, w


def find_lesions(
    tumour: npt.NDArray[np.bool_], spacing_mm: tuple[float, float, float]
) -> list[Lesion]:
    """Find and measure the lesions (3-D connected components) of a tumour mask.

    Only the bounding box of the tumour voxels is labelled, so a large volume with small
    lesions costs little memory.

    Args:
        tumour: ``(D, H, W)`` boolean tumour mask (canonical layout, see ``oncoscope.io.volumes``).
        spacing_mm: voxel size ``(slice, row, col)`` in mm.

    Returns:
        The lesions, with ids as :func:`label_lesions` numbers them.
    """
    tumour = np.asarray(tumour, dtype=bool)
    box = bounding_box(tumour)
    if box is None:
        return []
    offset = np.array([b.start for b in box], dtype=np.float64)
    labels = label_lesions(tumour[box])
    slice_mm, row_mm, col_mm = spacing_mm
    voxel_ml = slice_mm * row_mm * col_mm / 1000.0
    lesions: list[Lesion] = []
    for lesion_id, extent in enumerate(ndimage.find_objects(labels), start=1):
        if extent is None:
            continue
        crop = labels[extent] == lesion_id
        occupied = [k for k in range(crop.shape[0]) if crop[k].any()]
        sections = tuple(feret_diameter_mm(crop[k], row_mm, col_mm) for k in occupied)
        corner = offset + [e.start for e in extent]
        centre = np.asarray(ndimage.center_of_mass(crop)) + corner
        lesions.append(
            Lesion(
                lesion_id=lesion_id,
                slice_indices=tuple(int(corner[0]) + k for k in occupied),
                section_diameters_mm=sections,
                diameter_mm=max(sections),
                volume_ml=float(crop.sum()) * voxel_ml,
                centroid_dhw=(float(centre[0]), float(centre[1]), float(centre[2])),
            )
        )
    return lesions
