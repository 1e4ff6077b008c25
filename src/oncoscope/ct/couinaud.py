"""Couinaud segment of every liver voxel and of every lesion, by the plane-based method.

The liver is divided as Couinaud (*Le foie: études anatomiques et chirurgicales*, 1957) and
Bismuth (*Surgical anatomy and anatomical surgery of the liver*, World J Surg 1982;6:3-9)
describe it, in patient (RAS) millimetres:

* three **vertical half-planes** hinged on the IVC axis (the vertical line through the IVC at
  the hepatic-vein confluence, landmark ``ivc_dome``), each through one hepatic vein: the right
  hepatic vein separates the right posterior section (VI, VII) from the right anterior section
  (V, VIII); the middle hepatic vein (Cantlie's line) separates the right liver from segment IV;
  the left hepatic vein separates segment IV from the left lateral section (II, III). Around
  the IVC axis, from the patient's right over the front to the left, a voxel lies in the sector
  VI/VII, V/VIII, IV or II/III; the cut between VI/VII and II/III is the ray straight behind the
  IVC.
* one **transverse plane** through the portal bifurcation (``portal_bifurcation``): above it
  VII, VIII, IVa, II; below it VI, V, IVb, III.
* the **caudate lobe (I)**, decided first. It lies behind the porta hepatis (the portal
  bifurcation) and in front of the IVC, below the hepatic-vein confluence (Couinaud 1957;
  Bismuth 1982; the radiological description of Soyer et al., AJR 1991;156:1271-3, "between
  the IVC posteriorly and the portal bifurcation anteriorly"). oncoscope takes it as the
  vertical cylinder whose axial cross-section is the disc with the IVC axis and the portal
  bifurcation as the two ends of a diameter (the points that see the IVC and the bifurcation
  under a right angle or more), between the transverse planes of the portal bifurcation and
  of the IVC dome. This is a geometric stand-in for the fissure of the ligamentum venosum,
  which CT segmentations rarely label.

A lesion (a 3-D connected tumour component, :mod:`oncoscope.ct.lesions`) gets the segment that
most of its voxels lie in, with the share of its voxels in every segment it touches.

Landmarks come from a JSON file (the phantom's ``landmarks_mm`` vocabulary), from vessel labels
in the segmentation (:func:`landmarks_from_vessels`), or, with neither, from the liver's
bounding box (:func:`approximate_landmarks`; the output then says ``"method": "approximate"``).

Written by hand: no maintained Python library implements the plane-based Couinaud division.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from oncoscope.ct.lesions import bounding_box, find_lesions, label_lesions
from oncoscope.ct.slices import LIVER_LABEL, TUMOUR_LABEL
from oncoscope.errors import InvalidLandmarksError, InvalidOptionError, InvalidVolumeError
from oncoscope.io.atomic import atomic_path
from oncoscope.io.volumes import (
    Volume,
    check_same_grid,
    read_label_mask,
    read_volume,
    to_ras_ijk,
)

Point = tuple[float, float, float]
Method = Literal["landmarks", "vessels", "approximate"]

#: Landmarks the planes are built from (RAS mm), as the phantoms write them.
LANDMARK_NAMES = (
    "ivc_dome",
    "right_hepatic_vein_end",
    "middle_hepatic_vein_end",
    "left_hepatic_vein_end",
    "portal_bifurcation",
)
#: Segment names and the integer codes of the segment label map.
SEGMENT_CODES: dict[str, int] = {
    "I": 1,
    "II": 2,
    "III": 3,
    "IVa": 4,
    "V": 5,
    "VI": 6,
    "VII": 7,
    "VIII": 8,
    "IVb": 9,
}
SEGMENT_NAMES: dict[int, str] = {code: name for name, code in SEGMENT_CODES.items()}
#: Names a vessel label may have in ``--vessel-labels``.
VESSEL_KEYS = (
    "ivc",
    "portal_vein",
    "hepatic_veins",
    "right_hepatic_vein",
    "middle_hepatic_vein",
    "left_hepatic_vein",
)
_HEPATIC = ("right_hepatic_vein", "middle_hepatic_vein", "left_hepatic_vein")
# Sectors around the IVC axis from the patient's right to left: (superior, inferior) segment.
_SECTORS = (("VII", "VI"), ("VIII", "V"), ("IVa", "IVb"), ("II", "III"))

#: Approximate landmarks as fractions of the liver's bounding box: (u, v, w) with u from the
#: patient's right edge (0) to the left edge (1), v from the posterior (0) to the anterior
#: edge (1), w from the inferior (0) to the superior edge (1). They place the vessels where
#: they usually lie in an adult liver: the IVC in the posterior groove just right of the
#: middle, the portal bifurcation in front of it at mid-height, the right hepatic vein running
#: to the right flank, the middle one forward to the gallbladder fossa, the left one forward
#: and left.
APPROXIMATE_FRACTIONS: dict[str, Point] = {
    "ivc_dome": (0.50, 0.25, 0.80),
    "right_hepatic_vein_end": (0.10, 0.50, 0.70),
    "middle_hepatic_vein_end": (0.45, 0.90, 0.70),
    "left_hepatic_vein_end": (0.85, 0.80, 0.70),
    "portal_bifurcation": (0.55, 0.40, 0.40),
}


@dataclass(frozen=True)
class Landmarks:
    """The points the Couinaud planes are built from.

    Attributes:
        points_mm: each name of :data:`LANDMARK_NAMES` to a RAS point in mm.
        method: ``landmarks`` (a JSON file), ``vessels`` (vessel labels) or ``approximate``
            (the liver's bounding box).
        source: where they came from (a file, the vessel labels, or a description).
    """

    points_mm: dict[str, Point]
    method: Method
    source: str


@dataclass(frozen=True)
class LesionSegment:
    """The Couinaud segment of one lesion.

    Attributes:
        lesion_id: its number, as :func:`oncoscope.ct.lesions.find_lesions` numbers lesions.
        centroid_mm: its centre of mass, RAS mm.
        volume_ml: its volume in ml.
        max_diameter_mm: its largest in-plane (Feret) diameter in mm.
        segment: the segment holding most of its voxels ("I" ... "VIII", "IVa", "IVb").
        fractions: share of its voxels in each segment it touches, largest first (sums to 1).
    """

    lesion_id: int
    centroid_mm: Point
    volume_ml: float
    max_diameter_mm: float
    segment: str
    fractions: dict[str, float]


@dataclass(frozen=True)
class CouinaudResult:
    """Segments of a liver and its lesions.

    Attributes:
        segments: ``(D, H, W)`` uint8 segment codes (:data:`SEGMENT_CODES`), 0 outside the liver.
        landmarks: the landmarks the planes were built from.
        lesions: one entry per lesion.
        segment_volumes_ml: liver volume (tumour included) of each segment, ml.
        volume: the CT volume (canonical layout).
        tumour: ``(D, H, W)`` tumour mask.
    """

    segments: npt.NDArray[np.uint8]
    landmarks: Landmarks
    lesions: list[LesionSegment]
    segment_volumes_ml: dict[str, float]
    volume: Volume
    tumour: npt.NDArray[np.bool_]

    def to_json(self, segmentation: str | Path) -> dict[str, Any]:
        """The record written to ``couinaud.json``."""
        method = self.landmarks.method
        return {
            "volume": str(self.volume.source),
            "segmentation": str(segmentation),
            "method": method,
            "approximate": method == "approximate",
            "note": (
                "landmarks estimated from the liver's bounding box (no landmarks file, no "
                "vessel labels): segments are APPROXIMATE"
                if method == "approximate"
                else f"planes through landmarks from {self.landmarks.source}"
            ),
            "landmarks_mm": {k: list(v) for k, v in self.landmarks.points_mm.items()},
            "landmarks_source": self.landmarks.source,
            "coordinates": "RAS+ patient mm (x to the patient's left is negative)",
            "segment_codes": {str(code): name for code, name in SEGMENT_NAMES.items()},
            "segment_volumes_ml": self.segment_volumes_ml,
            "lesions": [
                {
                    "id": lesion.lesion_id,
                    "centroid_mm": list(lesion.centroid_mm),
                    "volume_ml": lesion.volume_ml,
                    "max_diameter_mm": lesion.max_diameter_mm,
                    "segment": lesion.segment,
                    "fractions": lesion.fractions,
                }
                for lesion in self.lesions
            ],
        }


def read_landmarks(path: str | Path) -> dict[str, Point]:
    """Read landmarks from JSON: ``{"landmarks_mm": {name: [x, y, z]}}`` or ``{name: [x, y, z]}``.

    A phantom's ``phantom-N.json`` is read as it is. Names beyond :data:`LANDMARK_NAMES` are
    ignored.

    Args:
        path: the JSON file; points in RAS patient mm.

    Returns:
        Each name of :data:`LANDMARK_NAMES` to its point.

    Raises:
        InvalidLandmarksError: unreadable JSON, a missing landmark, or a point that is not three
            finite numbers.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidLandmarksError(f"cannot read landmarks JSON ({error})", path) from None
    if isinstance(record, dict) and isinstance(record.get("landmarks_mm"), dict):
        record = record["landmarks_mm"]
    if not isinstance(record, dict):
        raise InvalidLandmarksError("expected a JSON object of landmark name -> [x, y, z]", path)
    missing = [name for name in LANDMARK_NAMES if name not in record]
    if missing:
        raise InvalidLandmarksError(
            f"missing landmark(s) {', '.join(missing)}; expected {', '.join(LANDMARK_NAMES)}",
            path,
        )
    points: dict[str, Point] = {}
    for name in LANDMARK_NAMES:
        value = record[name]
        if (
            not isinstance(value, list | tuple)
            or len(value) != 3
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
        ):
            raise InvalidLandmarksError(
                f"landmark {name} is {value!r}; expected [x, y, z] in mm", path
            )
        points[name] = (float(value[0]), float(value[1]), float(value[2]))
    return points


def check_landmarks_inside(
    points_mm: Mapping[str, Point], volume: Volume, source: str | Path | None = None
) -> None:
    """Check that every landmark lies inside the volume's field of view.

    Raises:
        InvalidLandmarksError: naming each landmark outside the volume, with its voxel index.
    """
    inverse = np.linalg.inv(volume.affine)
    outside = []
    for name, point in points_mm.items():
        index = inverse @ np.array([*point, 1.0])
        if any(not -0.5 <= index[i] <= size - 0.5 for i, size in enumerate(volume.shape)):
            dhw = ", ".join(f"{v:.1f}" for v in index[:3])
            outside.append(f"{name} {list(point)} mm (voxel d, h, w = {dhw})")
    if outside:
        raise InvalidLandmarksError(
            f"landmark(s) outside the volume of shape {volume.shape}: {'; '.join(outside)}",
            source,
        )


def parse_vessel_labels(text: str) -> dict[str, int]:
    """Parse ``ivc=3,hepatic_veins=4,portal_vein=5`` into a mapping of vessel to label value.

    Needs ``ivc``, ``portal_vein`` and either ``hepatic_veins`` (all hepatic veins in one
    label) or ``right_hepatic_vein``, ``middle_hepatic_vein`` and ``left_hepatic_vein``.

    Raises:
        InvalidOptionError: malformed text, an unknown vessel name, a value outside 3..255
            (1 and 2 are liver and tumour), or a missing vessel.

    Example:
        >>> parse_vessel_labels("ivc=3, hepatic_veins=4, portal_vein=5")
        {'ivc': 3, 'hepatic_veins': 4, 'portal_vein': 5}
    """
    labels: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in VESSEL_KEYS:
            raise InvalidOptionError(
                f"--vessel-labels: unknown vessel '{name}'; use {', '.join(VESSEL_KEYS)}"
            )
        if not value.strip().isdigit() or not 3 <= int(value) <= 255:
            raise InvalidOptionError(
                f"--vessel-labels: {name}={value.strip()} is not a label value in 3..255 "
                "(1 is liver, 2 tumour)"
            )
        labels[name] = int(value)
    has_veins = "hepatic_veins" in labels or all(k in labels for k in _HEPATIC)
    if "ivc" not in labels or "portal_vein" not in labels or not has_veins:
        raise InvalidOptionError(
            "--vessel-labels needs ivc, portal_vein and hepatic_veins (or right_, middle_ and "
            f"left_hepatic_vein); got {text!r}"
        )
    return labels


def world_points(
    mask: npt.NDArray[np.bool_], affine: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """RAS mm of every True voxel of a ``(D, H, W)`` mask, as an ``(N, 3)`` array."""
    index = np.argwhere(mask).astype(np.float64)
    return index @ affine[:3, :3].T + affine[:3, 3]


def landmarks_from_vessels(
    labels: npt.NDArray[np.integer[Any]],
    affine: npt.NDArray[np.float64],
    vessel_labels: Mapping[str, int],
) -> dict[str, Point]:
    """Landmarks from vessel labels in a segmentation.

    * ``ivc_dome``: the IVC axis is the mean (x, y) of the IVC voxels on the liver's slices;
      its height is that of the hepatic-vein voxels closest to that axis (median height of the
      nearest 5 %), where the veins join the IVC.
    * ``*_hepatic_vein_end``: with one label per vein, the voxel of each vein farthest from the
      IVC axis; with one label for all hepatic veins, the voxels are first split into three
      veins by k-means (scikit-learn) on their angle around the IVC axis, then ordered from the
      patient's right to left.
    * ``portal_bifurcation``: the branch point of the portal vein's skeleton (scikit-image)
      where the vein is thickest (largest distance to its wall), the main bifurcation; without
      a branch point, the thickest skeleton point.

    Args:
        labels: ``(D, H, W)`` segmentation holding liver (1), tumour (2) and the vessel labels.
        affine: its ``(d, h, w, 1)`` to RAS mm map.
        vessel_labels: vessel name to label value (see :func:`parse_vessel_labels`).

    Returns:
        Each name of :data:`LANDMARK_NAMES` to a RAS point in mm.

    Raises:
        InvalidVolumeError: a vessel label that is absent from the segmentation or too small to
            place a landmark.
    """
    from skimage.morphology import skeletonize
    from sklearn.cluster import KMeans

    def voxels(name: str) -> npt.NDArray[np.bool_]:
        found: npt.NDArray[np.bool_] = labels == vessel_labels[name]
        if not found.any():
            raise InvalidVolumeError(
                f"vessel label {name}={vessel_labels[name]} is not in the segmentation"
            )
        return found

    liver_slices = np.flatnonzero(((labels == LIVER_LABEL) | (labels == TUMOUR_LABEL)).any((1, 2)))
    ivc = voxels("ivc")
    if liver_slices.size:
        in_liver_range = np.zeros(labels.shape[0], dtype=bool)
        in_liver_range[liver_slices[0] : liver_slices[-1] + 1] = True
        if (ivc & in_liver_range[:, None, None]).any():
            ivc = ivc & in_liver_range[:, None, None]
    axis_xy = world_points(ivc, affine)[:, :2].mean(axis=0)

    if "hepatic_veins" in vessel_labels:
        veins = world_points(voxels("hepatic_veins"), affine)
        if len(veins) < 3:
            raise InvalidVolumeError("fewer than 3 hepatic-vein voxels: cannot split the veins")
        angles = sector_angles_deg(veins[:, :2], axis_xy)
        kmeans = KMeans(n_clusters=3, n_init=10, random_state=0).fit(angles[:, None])
        order = np.argsort(kmeans.cluster_centers_[:, 0])  # right, middle, left
        groups = [veins[kmeans.labels_ == cluster] for cluster in order]
    else:
        groups = [world_points(voxels(name), affine) for name in _HEPATIC]
    all_veins = np.concatenate(groups)
    axial = np.linalg.norm(all_veins[:, :2] - axis_xy, axis=1)
    nearest = axial <= np.quantile(axial, 0.05)
    points: dict[str, Point] = {
        "ivc_dome": _point((*axis_xy, float(np.median(all_veins[nearest, 2]))))
    }
    for name, group in zip(_HEPATIC, groups, strict=True):
        far = int(np.argmax(np.linalg.norm(group[:, :2] - axis_xy, axis=1)))
        points[f"{name}_end"] = _point(group[far])

    portal = voxels("portal_vein")
    box = bounding_box(portal)
    assert box is not None  # voxels() checked it is not empty
    crop = np.pad(portal[box], 1)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    radius = ndimage.distance_transform_edt(crop, sampling=spacing)
    skeleton = skeletonize(crop).astype(bool)
    if not skeleton.any():
        skeleton = crop
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3, 3), np.uint8))
    branches = skeleton & (neighbours >= 4)  # itself and at least three neighbours
    candidates = branches if branches.any() else skeleton
    flat = np.where(candidates, radius, -1.0)
    best = np.array(np.unravel_index(int(np.argmax(flat)), flat.shape), dtype=np.float64)
    best += np.array([b.start for b in box]) - 1.0
    points["portal_bifurcation"] = _point(affine[:3, :3] @ best + affine[:3, 3])
    return {name: points[name] for name in LANDMARK_NAMES}


def approximate_landmarks(
    liver: npt.NDArray[np.bool_], affine: npt.NDArray[np.float64]
) -> dict[str, Point]:
    """Landmarks placed at :data:`APPROXIMATE_FRACTIONS` of the liver's RAS bounding box.

    An approximation for a segmentation without vessels: it assumes a liver of usual shape and
    position, so segments near the planes may be wrong.

    Raises:
        InvalidVolumeError: no liver voxels.
    """
    if not liver.any():
        raise InvalidVolumeError("segmentation holds no liver (label 1 or 2)")
    box = bounding_box(liver)
    assert box is not None
    corners = np.array([[s.start, s.stop - 1] for s in box], dtype=np.float64)  # (3 axes, low/high)
    grid = np.stack(np.meshgrid(*corners, indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    low, high = world.min(axis=0), world.max(axis=0)
    points: dict[str, Point] = {}
    for name, (u, v, w) in APPROXIMATE_FRACTIONS.items():
        x = high[0] - u * (high[0] - low[0])  # right edge is the largest x
        y = low[1] + v * (high[1] - low[1])
        z = low[2] + w * (high[2] - low[2])
        points[name] = _point((x, y, z))
    return points


def sector_angles_deg(
    xy_mm: npt.NDArray[np.float64], axis_xy_mm: npt.NDArray[np.float64] | Point
) -> npt.NDArray[np.float64]:
    """Angle of axial points around the IVC axis, degrees in ``(-90, 270]``.

    0 is the patient's right (+x), 90 anterior (+y), 180 the patient's left; straight behind
    the axis is the cut (270), so angles grow from right over the front to the left.

    Example:
        >>> import numpy as np
        >>> sector_angles_deg(np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1], [1, -1]]), (0, 0))
        array([  0.,  90., 180., 270., -45.])
    """
    offset = np.asarray(xy_mm, dtype=np.float64) - np.asarray(axis_xy_mm, dtype=np.float64)[:2]
    angles = np.degrees(np.arctan2(offset[:, 1], offset[:, 0]))
    angles[angles <= -90.0] += 360.0
    return angles


def segment_points(
    points_mm: npt.NDArray[np.float64], landmarks: Mapping[str, Point]
) -> npt.NDArray[np.uint8]:
    """Couinaud segment code (:data:`SEGMENT_CODES`) of each RAS point, by the module's planes.

    Args:
        points_mm: ``(N, 3)`` RAS points in mm.
        landmarks: each name of :data:`LANDMARK_NAMES` to a RAS point in mm.

    Returns:
        ``(N,)`` uint8 codes.

    Raises:
        InvalidLandmarksError: hepatic veins not ordered right, middle, left around the IVC, or
            an IVC dome not above the portal bifurcation.
    """
    dome = np.asarray(landmarks["ivc_dome"])
    portal = np.asarray(landmarks["portal_bifurcation"])
    veins = np.array([landmarks[f"{name}_end"] for name in _HEPATIC])
    vein_angles = sector_angles_deg(veins[:, :2], dome)
    if not vein_angles[0] < vein_angles[1] < vein_angles[2]:
        shown = ", ".join(f"{a:.0f}" for a in vein_angles)
        raise InvalidLandmarksError(
            "the right, middle and left hepatic veins must lie in that order around the IVC, "
            f"from the patient's right over the front to the left; their angles are {shown} "
            "degrees (0 right, 90 anterior, 180 left)"
        )
    if dome[2] <= portal[2]:
        raise InvalidLandmarksError(
            f"ivc_dome (z = {dome[2]:.1f} mm) must lie above portal_bifurcation "
            f"(z = {portal[2]:.1f} mm)"
        )
    points_mm = np.asarray(points_mm, dtype=np.float64)
    sector = np.searchsorted(vein_angles, sector_angles_deg(points_mm[:, :2], dome), "right")
    superior = points_mm[:, 2] > portal[2]
    table = np.array(
        [[SEGMENT_CODES[inferior], SEGMENT_CODES[upper]] for upper, inferior in _SECTORS],
        dtype=np.uint8,
    )
    codes: npt.NDArray[np.uint8] = table[sector, superior.astype(np.intp)]
    to_dome = points_mm[:, :2] - dome[:2]
    to_portal = points_mm[:, :2] - portal[:2]
    caudate = (
        ((to_dome * to_portal).sum(axis=1) <= 0.0)
        & (points_mm[:, 2] >= portal[2])
        & (points_mm[:, 2] <= dome[2])
    )
    codes[caudate] = SEGMENT_CODES["I"]
    return codes


def segment_liver(
    liver: npt.NDArray[np.bool_],
    affine: npt.NDArray[np.float64],
    landmarks: Mapping[str, Point],
) -> npt.NDArray[np.uint8]:
    """Label every liver voxel with its Couinaud segment code, one slice at a time.

    Args:
        liver: ``(D, H, W)`` liver mask (tumour included).
        affine: ``(d, h, w, 1)`` to RAS mm map.
        landmarks: as for :func:`segment_points`.

    Returns:
        ``(D, H, W)`` uint8 codes (:data:`SEGMENT_CODES`), 0 outside the liver.
    """
    segments = np.zeros(liver.shape, dtype=np.uint8)
    for k in np.flatnonzero(liver.any(axis=(1, 2))):
        rows, cols = np.nonzero(liver[k])
        index = np.stack([np.full(rows.shape, k), rows, cols], axis=1).astype(np.float64)
        segments[k, rows, cols] = segment_points(
            index @ affine[:3, :3].T + affine[:3, 3], landmarks
        )
    return segments


def assign_lesions(
    segments: npt.NDArray[np.uint8],
    tumour: npt.NDArray[np.bool_],
    affine: npt.NDArray[np.float64],
    spacing_mm: tuple[float, float, float],
) -> list[LesionSegment]:
    """Segment of each lesion by majority vote of its voxels, with the overlap fractions.

    Args:
        segments: ``(D, H, W)`` segment codes from :func:`segment_liver`.
        tumour: ``(D, H, W)`` tumour mask.
        affine: ``(d, h, w, 1)`` to RAS mm map.
        spacing_mm: voxel size ``(slice, row, col)`` in mm.

    Returns:
        One :class:`LesionSegment` per lesion, in the order of ``find_lesions``.
    """
    lesions = find_lesions(tumour, spacing_mm)
    box = bounding_box(tumour)
    if box is None:
        return []
    ids = label_lesions(tumour[box]).ravel()
    codes = segments[box].ravel().astype(np.int64)
    width = len(SEGMENT_NAMES) + 1
    counts = np.bincount(ids * width + codes, minlength=(len(lesions) + 1) * width)
    counts = counts.reshape(-1, width)
    result = []
    for lesion in lesions:
        row = counts[lesion.lesion_id, 1:]
        total = int(row.sum())
        fractions = {
            SEGMENT_NAMES[code]: round(float(row[code - 1]) / total, 4)
            for code in sorted(SEGMENT_NAMES, key=lambda c: (-row[c - 1], c))
            if row[code - 1] > 0
        }
        centroid = affine[:3, :3] @ np.asarray(lesion.centroid_dhw) + affine[:3, 3]
        result.append(
            LesionSegment(
                lesion_id=lesion.lesion_id,
                centroid_mm=_point(centroid),
                volume_ml=round(lesion.volume_ml, 4),
                max_diameter_mm=round(lesion.diameter_mm, 2),
                segment=next(iter(fractions)) if fractions else "none",
                fractions=fractions,
            )
        )
    return result


def choose_landmarks(
    liver: npt.NDArray[np.bool_],
    grid: Volume,
    *,
    landmarks_path: str | Path | None = None,
    labels: npt.NDArray[Any] | None = None,
    vessel_labels: Mapping[str, int] | None = None,
) -> Landmarks:
    """The Couinaud landmarks: from a JSON file, else the vessel labels, else approximate.

    Args:
        liver: ``(D, H, W)`` bool liver mask on ``grid``.
        grid: the volume (or its segmentation) whose voxel grid ``liver`` and ``labels`` lie on;
            its ``source`` is named in errors and in the vessel landmarks' description.
        landmarks_path: a landmarks JSON (:func:`read_landmarks`); used first.
        labels: ``(D, H, W)`` label values of the segmentation holding ``vessel_labels``.
        vessel_labels: vessel name to label value (:func:`parse_vessel_labels`).

    Returns:
        The :class:`Landmarks`; without a file or vessel labels (and ``labels``), the
        approximate ones (:func:`approximate_landmarks`).

    Raises:
        InvalidLandmarksError: a bad landmarks file, or landmarks outside ``grid``.
        InvalidVolumeError: a vessel label missing from ``labels`` (naming ``grid.source``).
    """
    if landmarks_path is not None:
        landmarks = Landmarks(read_landmarks(landmarks_path), "landmarks", str(landmarks_path))
    elif vessel_labels and labels is not None:
        shown = ",".join(f"{k}={v}" for k, v in vessel_labels.items())
        try:
            points = landmarks_from_vessels(labels, grid.affine, vessel_labels)
        except InvalidVolumeError as error:
            raise InvalidVolumeError(error.message, grid.source) from None
        landmarks = Landmarks(points, "vessels", f"vessel labels {shown} of {grid.source}")
    else:
        landmarks = Landmarks(
            approximate_landmarks(liver, grid.affine),
            "approximate",
            "fractions of the liver's bounding box",
        )
    check_landmarks_inside(landmarks.points_mm, grid, landmarks_path)
    return landmarks


def couinaud(
    volume_path: str | Path,
    segmentation_path: str | Path,
    *,
    landmarks_path: str | Path | None = None,
    vessel_labels: Mapping[str, int] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> CouinaudResult:
    """Couinaud segments of a liver and its lesions from a CT volume and its segmentation.

    Args:
        volume_path: the CT volume (any format of :func:`oncoscope.io.volumes.read_volume`).
        segmentation_path: its LiTS-style segmentation (0 background, 1 liver, 2 tumour, and
            vessel labels named in ``vessel_labels``), on the volume's grid.
        landmarks_path: a landmarks JSON (see :func:`read_landmarks`); excludes
            ``vessel_labels``.
        vessel_labels: vessel name to label value (see :func:`parse_vessel_labels`).
        spacing_mm: voxel size ``(D, H, W)`` in mm for files whose own is zero, negative or
            NaN (see :func:`oncoscope.io.volumes.read_volume`).

    Returns:
        The :class:`CouinaudResult`. Without landmarks or vessel labels the landmarks are
        approximate (:func:`approximate_landmarks`).

    Raises:
        InvalidOptionError: both a landmarks file and vessel labels.
        InvalidLandmarksError: bad landmarks, or landmarks outside the volume.
        InvalidVolumeError: a segmentation off the volume's grid, without liver, or holding
            labels that are neither liver, tumour nor a named vessel.
    """
    if landmarks_path is not None and vessel_labels:
        raise InvalidOptionError("give landmarks (a JSON file) or vessel labels, not both")
    volume = read_volume(volume_path, spacing_mm=spacing_mm)
    mask = read_label_mask(segmentation_path, spacing_mm=spacing_mm)
    check_same_grid(volume, mask)
    labels = np.asarray(mask.array)
    vessel_values = set((vessel_labels or {}).values())
    unknown = sorted(
        set(np.unique(labels).tolist()) - {0, LIVER_LABEL, TUMOUR_LABEL, *vessel_values}
    )
    if unknown:
        raise InvalidVolumeError(
            f"labels {unknown[:10]} are neither liver (1) nor tumour (2); name vessel labels, "
            "e.g. --vessel-labels ivc=3,hepatic_veins=4,portal_vein=5",
            mask.source,
        )
    tumour = labels == TUMOUR_LABEL
    intrahepatic = {v for k, v in (vessel_labels or {}).items() if k != "ivc"}
    liver = (labels == LIVER_LABEL) | tumour | np.isin(labels, sorted(intrahepatic))
    if not liver.any():
        raise InvalidVolumeError("segmentation holds no liver (label 1 or 2)", mask.source)
    landmarks = choose_landmarks(
        liver, mask, landmarks_path=landmarks_path, labels=labels, vessel_labels=vessel_labels
    )
    try:
        segments = segment_liver(liver, mask.affine, landmarks.points_mm)
    except InvalidLandmarksError as error:
        raise InvalidLandmarksError(error.message, landmarks_path) from None
    voxel_ml = float(np.prod(mask.spacing_mm)) / 1000.0
    counts = np.bincount(segments.ravel(), minlength=len(SEGMENT_NAMES) + 1)
    segment_volumes = {
        SEGMENT_NAMES[c]: round(float(counts[c]) * voxel_ml, 3)
        for c in sorted(SEGMENT_NAMES, key=lambda c: _ORDER.index(SEGMENT_NAMES[c]))
    }
    return CouinaudResult(
        segments=segments,
        landmarks=landmarks,
        lesions=assign_lesions(segments, tumour, mask.affine, mask.spacing_mm),
        segment_volumes_ml=segment_volumes,
        volume=volume,
        tumour=tumour,
    )


def save_couinaud(
    result: CouinaudResult, segmentation_path: str | Path, out_dir: str | Path
) -> dict[str, Path]:
    """Write ``couinaud.json``, the segment map ``segments.nii.gz`` and ``couinaud.png``.

    Each file is written under a temporary name and renamed when complete.

    Args:
        result: from :func:`couinaud`.
        segmentation_path: the segmentation it came from (recorded in the JSON).
        out_dir: the output folder (created if missing).

    Returns:
        ``{"json": ..., "segments": ..., "figure": ...}`` paths.
    """
    import nibabel as nib

    from oncoscope.ct.couinaud_figure import save_couinaud_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "couinaud.json",
        "segments": out_dir / "segments.nii.gz",
        "figure": out_dir / "couinaud.png",
    }
    image = nib.Nifti1Image(*to_ras_ijk(result.segments, result.volume.affine))
    image.header.set_xyzt_units("mm")
    with atomic_path(paths["segments"]) as temporary:
        nib.save(image, temporary)
    save_couinaud_figure(result, paths["figure"])
    with atomic_path(paths["json"]) as temporary:
        temporary.write_text(json.dumps(result.to_json(segmentation_path), indent=2))
    return paths


#: Segments in anatomical reading order.
_ORDER = ("I", "II", "III", "IVa", "IVb", "V", "VI", "VII", "VIII")


def _point(values: Any) -> Point:
    x, y, z = (float(v) for v in values)
    return (round(x, 3), round(y, 3), round(z, 3))
