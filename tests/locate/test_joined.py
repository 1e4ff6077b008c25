"""Lesions split among candidates and candidates joining lesions: ``locate --truth`` counts both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from oncoscope.ct.slices import LIVER_LABEL, TUMOUR_LABEL
from oncoscope.locate.run import LocateOptions, locate
from tests.locate.conftest import SIZE_PX

#: HU of the lesions and the liver; the hand-made model's map (``conftest``) is 1 at -20 HU,
#: about 0.6 at 23.6 HU (on its ramp from 20 to 29 HU: above the 0.5 threshold) and 0 at 60 HU.
LESION_HU, LIVER_HU = -20, 60
SPACING_MM = (4.0, 2.375, 2.375)
CENTRES_MM = (np.array([150.0, 190.0, 24.0]), np.array([174.0, 190.0, 24.0]))  # x, y, z


def _pair(folder: Path, *, seam_hu: float, seam_is_lesion: bool) -> tuple[Path, Path]:
    """A noiseless RAS volume with two 24 mm spherical lesions 24 mm apart, so that they touch,
    with a 4 mm seam of ``seam_hu`` where they meet, and its segmentation (the seam labelled
    tumour: one true lesion; else liver: two true lesions two voxels apart)."""
    shape = (12, SIZE_PX, SIZE_PX)  # (z, y, x), written as (x, y, z)
    z, y, x = (axis * step for axis, step in zip(np.indices(shape), SPACING_MM, strict=True))
    near = [np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) for c in CENTRES_MM]
    lesion = (near[0] <= 12.0) | (near[1] <= 12.0)
    seam = lesion & (np.abs(x - 162.0) < 2.0)
    hu = np.full(shape, LIVER_HU, np.float32)
    hu[lesion] = LESION_HU
    hu[seam] = seam_hu
    labels = np.zeros(shape, np.uint8)
    labels[:, 40:150, 30:150] = LIVER_LABEL
    labels[lesion if seam_is_lesion else lesion & ~seam] = TUMOUR_LABEL
    affine = np.diag([SPACING_MM[2], SPACING_MM[1], SPACING_MM[0], 1.0])
    folder.mkdir(parents=True)
    volume, segmentation = folder / "volume-1.nii.gz", folder / "segmentation-1.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)).astype(np.int16), affine), volume)
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), affine), segmentation)
    return volume, segmentation


def _locate(checkpoint: Path, volume: Path, segmentation: Path, out: Path) -> dict[str, Any]:
    options = LocateOptions(
        threshold=0.5, method="cam", liver_mask=segmentation, truth=segmentation
    )
    report = locate(checkpoint, [volume], out, options)
    assert report.failures == [] and report.detection is not None
    return report.detection


def test_one_candidate_over_two_touching_lesions_is_counted_as_joining_them(
    hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = _pair(tmp_path / "in", seam_hu=23.6, seam_is_lesion=False)
    detection = _locate(hypodense_checkpoint, volume, segmentation, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "candidates.csv")
    assert len(table) == 1  # the dim seam is above the threshold: one candidate over both
    centre = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()[0]
    assert np.linalg.norm(centre - (CENTRES_MM[0] + CENTRES_MM[1]) / 2) <= np.linalg.norm(
        SPACING_MM
    )
    assert detection["lesions"] == 2
    assert (detection["candidates_joined"], detection["lesions_split"]) == (1, 0)
    assert detection["froc"][0]["sensitivity"]["value"] == 1.0


def test_two_candidates_on_one_lesion_are_counted_as_splitting_it(
    hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = _pair(tmp_path / "in", seam_hu=LIVER_HU, seam_is_lesion=True)
    detection = _locate(hypodense_checkpoint, volume, segmentation, tmp_path / "out")
    assert len(pd.read_csv(tmp_path / "out" / "candidates.csv")) == 2  # the seam reads as liver
    assert detection["lesions"] == 1
    assert (detection["candidates_joined"], detection["lesions_split"]) == (0, 1)


def test_a_volume_scored_before_the_counts_existed_is_redone(
    hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = _pair(tmp_path / "in", seam_hu=23.6, seam_is_lesion=False)
    _locate(hypodense_checkpoint, volume, segmentation, tmp_path / "out")
    status_path = tmp_path / "out" / "volume-1" / "status.json"
    status = json.loads(status_path.read_text())
    del status["settings"]["detection_format"]  # as an older oncoscope wrote it
    status_path.write_text(json.dumps(status))
    stored = tmp_path / "out" / "volume-1" / "detection.json"
    old = json.loads(stored.read_text())
    stored.write_text(json.dumps({k: old[k] for k in ("lesions", "false_scores")}))
    again = _locate(hypodense_checkpoint, volume, segmentation, tmp_path / "out")
    assert again["candidates_joined"] == 1
    assert "candidates_per_lesion" in json.loads(stored.read_text())


def test_a_rerun_with_the_same_settings_keeps_the_counts(
    hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = _pair(tmp_path / "in", seam_hu=23.6, seam_is_lesion=False)
    first = _locate(hypodense_checkpoint, volume, segmentation, tmp_path / "out")
    options = LocateOptions(
        threshold=0.5, method="cam", liver_mask=segmentation, truth=segmentation
    )
    report = locate(hypodense_checkpoint, [volume], tmp_path / "out", options)
    assert report.summaries["volume-1"]["skipped"] is True
    assert report.detection is not None
    assert report.detection["candidates_joined"] == first["candidates_joined"] == 1
