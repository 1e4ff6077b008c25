"""Synthetic abdominal CT phantoms with small liver lesions, written as LiTS-style NIfTI pairs.

SYNTHETIC DATA. A phantom is a geometric model (ellipsoids and cylinders) with Hounsfield values
typical of a portal-venous abdominal CT: air, subcutaneous and visceral fat, abdominal wall
muscle, liver, hypodense lesions of chosen diameters in mm, spleen, kidneys, aorta, inferior vena
cava, hepatic and portal veins, and a vertebral body with a cortical rim, blurred slightly (partial
volume) and with Gaussian noise. It exists so that tests and the demo have data whose truth is
known; it is never patient data and must never be described as such.

Anatomy is laid out in world millimetres (RAS+: x to the patient's left is negative, y anterior,
z superior) relative to the field of view, so any volume shape gives the same body.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from oncoscope.ct.slices import LIVER_LABEL, TUMOUR_LABEL
from oncoscope.errors import InvalidOptionError
from oncoscope.io.atomic import atomic_path
from oncoscope.io.volumes import to_ras_ijk

SYNTHETIC_NOTE = "oncoscope synthetic phantom - not patient data"

#: Typical portal-venous HU of each tissue.
HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 55.0,
    "liver": 100.0,
    "lesion": 50.0,
    "spleen": 105.0,
    "kidney": 165.0,
    "vessel": 160.0,
    "aorta": 175.0,
    "bone_trabecular": 250.0,
    "bone_cortical": 700.0,
    "bowel": 30.0,
}


@dataclass(frozen=True)
class PhantomLesion:
    """A spherical lesion: centre in RAS world mm, diameter in mm, mean HU."""

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    hu: float


@dataclass
class Phantom:
    """A synthetic CT volume and its LiTS labels, in the canonical ``(D, H, W)`` layout.

    Attributes:
        hu: ``(D, H, W)`` int16 Hounsfield units.
        labels: ``(D, H, W)`` uint8, 0 background, 1 liver, 2 lesion.
        affine: ``(4, 4)`` map from ``(d, h, w, 1)`` to RAS+ world mm.
        lesions: the lesions placed, as drawn (before voxelisation).
        landmarks_mm: named points of the vessel tree (RAS mm), for Couinaud work.
    """

    hu: npt.NDArray[np.int16]
    labels: npt.NDArray[np.uint8]
    affine: npt.NDArray[np.float64]
    lesions: list[PhantomLesion] = field(default_factory=list)
    landmarks_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size ``(slice, row, col)`` in mm."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(n[0]), float(n[1]), float(n[2])


def make_phantom(
    lesion_diameters_mm: Sequence[float] = (10.0, 25.0),
    *,
    shape: tuple[int, int, int] = (48, 256, 256),
    fov_mm: float = 380.0,
    slice_mm: float = 5.0,
    noise_hu: float = 12.0,
    seed: int = 0,
) -> Phantom:
    """Generate one synthetic abdominal CT with spherical liver lesions.

    Args:
        lesion_diameters_mm: diameter of each lesion in mm (each must fit inside the liver).
        shape: ``(D, H, W)`` slices, rows, columns.
        fov_mm: in-plane field of view in mm; pixel spacing is ``fov_mm / W`` by ``fov_mm / H``.
        slice_mm: slice spacing in mm.
        noise_hu: standard deviation of the Gaussian noise in HU.
        seed: seed of lesion placement, body variation and noise.

    Returns:
        The :class:`Phantom`.

    Raises:
        InvalidOptionError: a shape too small or a lesion that does not fit in the liver.
    """
    depth, height, width = shape
    if min(height, width) < 32 or depth < 8:
        raise InvalidOptionError(f"phantom shape {shape} is too small; use at least (8, 32, 32)")
    rng = np.random.default_rng(seed)
    row_mm, col_mm = fov_mm / height, fov_mm / width
    z = ((np.arange(depth) - (depth - 1) / 2) * slice_mm)[:, None, None]
    y = (((height - 1) / 2 - np.arange(height)) * row_mm)[None, :, None]
    x = (((width - 1) / 2 - np.arange(width)) * col_mm)[None, None, :]
    z_half = depth * slice_mm / 2
    grow = 1.0 + rng.uniform(-0.06, 0.06)  # patients differ a little in size

    def ellipsoid(
        cx: float, cy: float, cz: float, ax: float, ay: float, az: float
    ) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + (
            (z - cz) / az
        ) ** 2 <= 1.0
        return inside

    def cylinder_z(cx: float, cy: float, r: float) -> npt.NDArray[np.bool_]:
        return np.broadcast_to((x - cx) ** 2 + (y - cy) ** 2 <= r**2, shape)

    s = fov_mm / 380.0 * grow
    body = np.broadcast_to(((x / (165 * s)) ** 2 + (y / (120 * s)) ** 2) <= 1.0, shape)
    cavity = np.broadcast_to(((x / (140 * s)) ** 2 + ((y + 5 * s) / (97 * s)) ** 2) <= 1.0, shape)
    wall = np.broadcast_to(((x / (150 * s)) ** 2 + ((y + 3 * s) / (105 * s)) ** 2) <= 1.0, shape)

    volume = np.full(shape, HU["air"], dtype=np.float32)
    volume[body] = HU["fat"]
    volume[wall & ~cavity] = HU["muscle"]
    volume[cavity] = HU["fat"] + 20.0
    bowel = ellipsoid(-20 * s, 30 * s, -0.55 * z_half, 70 * s, 45 * s, 0.5 * z_half) & cavity
    volume[bowel] = HU["bowel"]

    liver = (
        ellipsoid(55 * s, 5 * s, 0.05 * z_half, 85 * s, 72 * s, 0.62 * z_half)
        | ellipsoid(-25 * s, 35 * s, 0.2 * z_half, 55 * s, 32 * s, 0.4 * z_half)
    ) & cavity
    spleen = ellipsoid(-95 * s, -35 * s, 0.15 * z_half, 30 * s, 45 * s, 0.4 * z_half) & cavity
    kidneys = (
        ellipsoid(70 * s, -60 * s, -0.55 * z_half, 28 * s, 35 * s, 0.4 * z_half)
        | ellipsoid(-70 * s, -60 * s, -0.6 * z_half, 28 * s, 35 * s, 0.4 * z_half)
    ) & cavity
    volume[liver] = HU["liver"]
    volume[spleen & ~liver] = HU["spleen"]
    volume[kidneys & ~liver] = HU["kidney"]

    spine_y = -80 * s
    bone = cylinder_z(0, spine_y, 22 * s)
    volume[bone] = HU["bone_cortical"]
    volume[cylinder_z(0, spine_y, 19 * s)] = HU["bone_trabecular"]
    volume[cylinder_z(-18 * s, -48 * s, 12 * s)] = HU["aorta"]
    ivc = (24 * s, -35 * s)
    volume[cylinder_z(ivc[0], ivc[1], 11 * s)] = HU["vessel"]

    # Hepatic veins run from the IVC near the liver dome towards the periphery; the portal vein
    # enters at mid-height. Drawn inside the liver only; LiTS labels vessels in the liver as liver.
    dome = (ivc[0], ivc[1] + 10 * s, 0.45 * z_half)
    ends = {
        "right_hepatic_vein_end": (115 * s, 5 * s, 0.05 * z_half),
        "middle_hepatic_vein_end": (35 * s, 60 * s, 0.0),
        "left_hepatic_vein_end": (-45 * s, 45 * s, 0.25 * z_half),
    }
    veins = np.zeros(shape, dtype=bool)
    for end in ends.values():
        veins |= _segment(x, y, z, dome, end, 4.5 * s)
    portal = _segment(
        x, y, z, (10 * s, -15 * s, -0.1 * z_half), (95 * s, 0.0, -0.1 * z_half), 6 * s
    )
    portal |= _segment(
        x, y, z, (10 * s, -15 * s, -0.1 * z_half), (-30 * s, 30 * s, -0.05 * z_half), 5 * s
    )
    volume[(veins | portal) & liver] = HU["vessel"]

    labels = np.zeros(shape, dtype=np.uint8)
    labels[liver] = LIVER_LABEL

    spacing = np.array([slice_mm, row_mm, col_mm])
    lesions = _place_lesions(liver, lesion_diameters_mm, spacing, rng)
    affine = _affine(shape, spacing)
    placed: list[PhantomLesion] = []
    for centre_dhw, diameter in lesions:
        world = affine @ np.array([*centre_dhw, 1.0])
        cx, cy, cz = (float(v) for v in world[:3])
        sphere = ellipsoid(cx, cy, cz, diameter / 2, diameter / 2, diameter / 2) & liver
        lesion_hu = HU["lesion"] + float(rng.uniform(-12, 12))
        volume[sphere] = lesion_hu
        labels[sphere] = TUMOUR_LABEL
        placed.append(PhantomLesion((cx, cy, cz), float(diameter), lesion_hu))

    volume = ndimage.gaussian_filter(volume, sigma=(0.3, 0.7, 0.7))
    volume += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    hu = np.clip(np.round(volume), -1024, 3071).astype(np.int16)
    landmarks = {"ivc_dome": dome, **ends, "portal_bifurcation": (10 * s, -15 * s, -0.1 * z_half)}
    return Phantom(
        hu=hu,
        labels=labels,
        affine=affine,
        lesions=placed,
        landmarks_mm={k: (float(p[0]), float(p[1]), float(p[2])) for k, p in landmarks.items()},
    )


def write_lits_pair(
    phantom: Phantom, out_dir: str | Path, patient_id: int, *, orientation: str = "LPS"
) -> tuple[Path, Path]:
    """Write ``volume-N.nii.gz`` and ``segmentation-N.nii.gz`` plus ``phantom-N.json``.

    Args:
        phantom: the phantom.
        out_dir: the folder (created if missing).
        patient_id: ``N`` in the file names.
        orientation: axis codes of the stored array, as nibabel names them ("LPS", "RAS",
            "LPI", "SLP", ...); the world positions do not change, only how the array is stored.

    Returns:
        The volume and segmentation paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = nib.orientations.axcodes2ornt(tuple(orientation.upper()))
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), target
    )
    paths = []
    for stem, data in (("volume", phantom.hu), ("segmentation", phantom.labels)):
        ras_image = nib.Nifti1Image(*to_ras_ijk(data, phantom.affine))
        image = ras_image.as_reoriented(transform)
        image.header["descrip"] = SYNTHETIC_NOTE.encode()
        image.header.set_xyzt_units("mm")
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
        path = out_dir / f"{stem}-{patient_id}.nii.gz"
        with atomic_path(path) as temporary:
            nib.save(image, temporary)
        paths.append(path)
    record = {
        "note": SYNTHETIC_NOTE,
        "patient_id": patient_id,
        "orientation": orientation.upper(),
        "shape_dhw": list(phantom.hu.shape),
        "spacing_mm": list(phantom.spacing_mm),
        "lesions": [asdict(lesion) for lesion in phantom.lesions],
        "landmarks_mm": phantom.landmarks_mm,
    }
    (out_dir / f"phantom-{patient_id}.json").write_text(json.dumps(record, indent=2))
    return paths[0], paths[1]


def write_cohort(
    out_dir: str | Path,
    n_patients: int = 6,
    *,
    shape: tuple[int, int, int] = (48, 256, 256),
    lesion_diameters_mm: Sequence[float] = (8.0, 12.0, 15.0, 18.0, 25.0, 35.0),
    lesion_free: int = 0,
    seed: int = 0,
) -> list[tuple[Path, Path]]:
    """Write a small cohort of phantoms, LiTS naming, patient ids ``0..n_patients-1``.

    Each patient gets one to three lesions drawn from ``lesion_diameters_mm``, except the last
    ``lesion_free`` patients, who have none (their anatomy still varies with their seed); the
    lesions of the others do not depend on ``lesion_free``. The stored orientation cycles
    through LPS, RAS and LPI as real LiTS volumes vary. A README in the folder says the data
    are synthetic.

    Raises:
        InvalidOptionError: ``lesion_free`` outside ``0..n_patients``.
    """
    if not 0 <= lesion_free <= n_patients:
        raise InvalidOptionError(
            f"--lesion-free must be between 0 and the {n_patients} patients, got {lesion_free}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    orientations = ("LPS", "RAS", "LPI")
    pairs = []
    for patient in range(n_patients):
        count = int(rng.integers(1, 4))
        diameters = [float(d) for d in rng.choice(lesion_diameters_mm, size=count)]
        if patient >= n_patients - lesion_free:
            diameters = []
        phantom = make_phantom(diameters, shape=shape, seed=seed * 1000 + patient)
        pairs.append(
            write_lits_pair(phantom, out_dir, patient, orientation=orientations[patient % 3])
        )
    (out_dir / "README.txt").write_text(
        f"{SYNTHETIC_NOTE}.\nGenerated by oncoscope.ct.phantom.write_cohort(seed={seed}); "
        "LiTS naming: volume-N.nii.gz (HU) and segmentation-N.nii.gz (0 background, 1 liver, "
        "2 lesion); phantom-N.json lists the lesions as drawn.\n"
    )
    return pairs


def _segment(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    z: npt.NDArray[Any],
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    radius_mm: float,
) -> npt.NDArray[np.bool_]:
    """Voxels within ``radius_mm`` of the line segment from ``start`` to ``end`` (world mm)."""
    a = np.asarray(start)
    direction = np.asarray(end) - a
    length2 = float(direction @ direction)
    t = (
        (x - a[0]) * direction[0] + (y - a[1]) * direction[1] + (z - a[2]) * direction[2]
    ) / length2
    t = np.clip(t, 0.0, 1.0)
    dx = x - (a[0] + t * direction[0])
    dy = y - (a[1] + t * direction[1])
    dz = z - (a[2] + t * direction[2])
    result: npt.NDArray[np.bool_] = dx**2 + dy**2 + dz**2 <= radius_mm**2
    return result


def _place_lesions(
    liver: npt.NDArray[np.bool_],
    diameters_mm: Sequence[float],
    spacing: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> list[tuple[tuple[float, float, float], float]]:
    """Pick lesion centres (voxel indices) inside the liver, apart from each other and the edge."""
    depth_mm = ndimage.distance_transform_edt(liver, sampling=spacing)
    placed: list[tuple[tuple[float, float, float], float]] = []
    for diameter in sorted(diameters_mm, reverse=True):
        radius = diameter / 2
        room = depth_mm >= radius + 4.0
        candidates = np.argwhere(room)
        for centre, other in placed:
            gap = np.sqrt((((candidates - np.asarray(centre)) * spacing) ** 2).sum(axis=1))
            candidates = candidates[gap >= radius + other / 2 + 6.0]
        if len(candidates) == 0:
            raise InvalidOptionError(
                f"a {diameter:g} mm lesion does not fit in the phantom's liver beside the others"
            )
        choice = candidates[rng.integers(len(candidates))]
        placed.append(((float(choice[0]), float(choice[1]), float(choice[2])), float(diameter)))
    return placed


def _affine(
    shape: tuple[int, int, int], spacing: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Affine of the canonical ``(D, H, W)`` layout centred on the world origin."""
    depth, height, width = shape
    slice_mm, row_mm, col_mm = (float(v) for v in spacing)
    affine = np.zeros((4, 4))
    affine[0, 2] = -col_mm  # w: patient's right -> left, x decreases
    affine[1, 1] = -row_mm  # h: anterior -> posterior, y decreases
    affine[2, 0] = slice_mm  # d: inferior -> superior, z increases
    affine[:3, 3] = [
        (width - 1) / 2 * col_mm,
        (height - 1) / 2 * row_mm,
        -(depth - 1) / 2 * slice_mm,
    ]
    affine[3, 3] = 1.0
    return affine
