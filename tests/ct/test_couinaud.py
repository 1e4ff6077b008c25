"""Couinaud segments on a synthetic liver whose planes are known, and on phantoms."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.ct.couinaud import (
    LANDMARK_NAMES,
    couinaud,
    parse_vessel_labels,
    read_landmarks,
    save_couinaud,
)
from oncoscope.ct.phantom import make_phantom, write_lits_pair
from oncoscope.errors import InvalidLandmarksError, InvalidOptionError, InvalidVolumeError
from oncoscope.io.volumes import to_ras_ijk

runner = CliRunner()

# A box liver on a 2 mm grid whose voxel centres sit at odd mm (never on the planes x = 0).
SHAPE = (40, 50, 60)  # D, H, W
AFFINE = np.array(
    [
        [0.0, 0.0, -2.0, 59.0],  # x = 59 - 2 w: the patient's right is +x
        [0.0, -2.0, 0.0, 59.0],  # y = 59 - 2 h: anterior is +y
        [2.0, 0.0, 0.0, -39.0],  # z = -39 + 2 d: superior is +z
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# The IVC axis is the line x = y = 0; the right hepatic vein runs to the right (0 degrees), the
# middle one forward (90), the left one forward-left (135); the portal bifurcation is 20 mm in
# front of the IVC at z = 0, so the caudate is the disc of centre (0, 10), radius 10, z 0..30.
LANDMARKS = {
    "ivc_dome": [0.0, 0.0, 30.0],
    "right_hepatic_vein_end": [50.0, 0.0, 20.0],
    "middle_hepatic_vein_end": [0.0, 50.0, 20.0],
    "left_hepatic_vein_end": [-50.0, 50.0, 20.0],
    "portal_bifurcation": [0.0, 20.0, 0.0],
}
# Lesion centres (mm) and radius, with the segment each lies in by the planes above.
LESIONS = {
    "VIII": ((30.0, 20.0, 15.0), 7.0),  # 34 degrees: right anterior, above z = 0
    "VI": ((30.0, -25.0, -20.0), 7.0),  # -40 degrees: right posterior, below
    "III": ((-40.0, 10.0, -20.0), 7.0),  # 166 degrees: left lateral, below
    "IVa": ((-10.0, 40.0, 15.0), 7.0),  # 104 degrees: between middle and left veins, above
    "I": ((0.0, 10.0, 15.0), 6.0),  # inside the caudate disc, between z = 0 and 30
}
STRADDLER = ((3.0, 40.0, -15.0), 9.0)  # across the middle-vein plane x = 0, below z = 0


def world_grid() -> Any:
    """RAS mm of every voxel centre, ``(D, H, W, 3)``."""
    index = np.indices(SHAPE).reshape(3, -1).T.astype(float)
    return (index @ AFFINE[:3, :3].T + AFFINE[:3, 3]).reshape(*SHAPE, 3)


def ball(centre: tuple[float, float, float], radius: float) -> Any:
    return ((world_grid() - np.asarray(centre)) ** 2).sum(axis=-1) <= radius**2


def save(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(*to_ras_ijk(array, AFFINE)), path)
    return path


@pytest.fixture(scope="module")
def box_liver(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("couinaud")
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:-1, 1:-1, 1:-1] = 1
    for centre, radius in [*LESIONS.values(), STRADDLER]:
        labels[ball(centre, radius)] = 2
    hu = np.where(labels == 2, 40, np.where(labels == 1, 100, -100)).astype(np.int16)
    (folder / "landmarks.json").write_text(json.dumps(LANDMARKS))
    return {
        "volume": save(hu, folder / "volume.nii.gz"),
        "segmentation": save(labels, folder / "segmentation.nii.gz"),
        "landmarks": folder / "landmarks.json",
        "folder": folder,
    }


def lesion_at(lesions, centre: tuple[float, float, float]):
    return min(lesions, key=lambda les: math.dist(les.centroid_mm, centre))


def test_lesions_get_the_segment_of_the_known_planes(box_liver):
    result = couinaud(
        box_liver["volume"], box_liver["segmentation"], landmarks_path=box_liver["landmarks"]
    )
    assert result.landmarks.method == "landmarks"
    assert len(result.lesions) == len(LESIONS) + 1
    for segment, (centre, radius) in LESIONS.items():
        lesion = lesion_at(result.lesions, centre)
        assert math.dist(lesion.centroid_mm, centre) < 0.5
        assert lesion.segment == segment
        assert lesion.fractions == {segment: 1.0}
        voxels = int(ball(centre, radius).sum())
        assert lesion.volume_ml == pytest.approx(voxels * 8 / 1000, rel=1e-3)
        assert 2 * radius - 2 <= lesion.max_diameter_mm <= 2 * radius + 4  # pixel squares


def test_a_lesion_across_a_plane_reports_its_shares(box_liver):
    result = couinaud(
        box_liver["volume"], box_liver["segmentation"], landmarks_path=box_liver["landmarks"]
    )
    centre, radius = STRADDLER
    lesion = lesion_at(result.lesions, centre)
    points = world_grid()[ball(centre, radius)]
    right_share = float((points[:, 0] > 0).mean())  # the right of the middle-vein plane is V
    assert 0.5 < right_share < 0.8
    assert lesion.segment == "V"
    assert lesion.fractions["V"] == pytest.approx(right_share, abs=1e-3)
    assert lesion.fractions["IVb"] == pytest.approx(1 - right_share, abs=1e-3)
    assert list(lesion.fractions) == ["V", "IVb"]


def test_every_liver_voxel_gets_the_segment_of_its_region(box_liver):
    result = couinaud(
        box_liver["volume"], box_liver["segmentation"], landmarks_path=box_liver["landmarks"]
    )
    liver = np.zeros(SHAPE, bool)
    liver[1:-1, 1:-1, 1:-1] = True
    assert ((result.segments > 0) == liver).all()
    grid = world_grid()

    def segment_at(x: float, y: float, z: float) -> int:
        d, h, w = np.argwhere((np.abs(grid - (x, y, z)) < 1.01).all(axis=-1))[0]
        return int(result.segments[d, h, w])

    codes = {"I": 1, "II": 2, "III": 3, "IVa": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IVb": 9}
    expected = {
        (41.0, -21.0, 21.0): "VII",  # right of the right vein, behind, above
        (41.0, 5.0, -21.0): "V",  # just in front of the right vein plane, below
        (-41.0, 21.0, 21.0): "II",  # left of the left vein, above
        (-7.0, 41.0, -21.0): "IVb",
        (-41.0, -21.0, -21.0): "III",  # behind and left of the IVC: left lateral sector
        (1.0, 9.0, 35.0): "VIII",  # in the caudate disc but above the dome: not caudate
        (1.0, 9.0, -3.0): "V",  # in the caudate disc but below the portal bifurcation
    }
    for point, segment in expected.items():
        assert segment_at(*point) == codes[segment], (point, segment)
    volumes = result.segment_volumes_ml
    assert sum(volumes.values()) == pytest.approx(liver.sum() * 8 / 1000, rel=1e-6)


def test_outputs_json_segment_map_and_figure(box_liver, tmp_path):
    result = couinaud(
        box_liver["volume"], box_liver["segmentation"], landmarks_path=box_liver["landmarks"]
    )
    paths = save_couinaud(result, box_liver["segmentation"], tmp_path / "out")
    record = json.loads(paths["json"].read_text())
    assert record["method"] == "landmarks" and record["approximate"] is False
    assert record["landmarks_mm"] == LANDMARKS
    first = record["lesions"][0]
    assert set(first) == {
        "id",
        "centroid_mm",
        "volume_ml",
        "max_diameter_mm",
        "segment",
        "fractions",
    }
    assert {les["segment"] for les in record["lesions"]} == {*LESIONS, "V"}
    stored = nib.as_closest_canonical(nib.load(paths["segments"]))
    assert np.allclose(stored.affine, nib.load(box_liver["segmentation"]).affine)
    assert np.array_equal(np.asarray(stored.dataobj), to_ras_ijk(result.segments, AFFINE)[0])
    assert paths["figure"].stat().st_size > 10_000
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == [
        "couinaud.json",
        "couinaud.png",
        "segments.nii.gz",
    ]


def test_without_landmarks_the_output_says_approximate(box_liver, tmp_path):
    result = couinaud(box_liver["volume"], box_liver["segmentation"])
    assert result.landmarks.method == "approximate"
    record = result.to_json(box_liver["segmentation"])
    assert record["approximate"] is True and "APPROXIMATE" in record["note"]
    assert set(record["landmarks_mm"]) == set(LANDMARK_NAMES)
    assert all(lesion.segment != "none" for lesion in result.lesions)
    assert (result.segments > 0).sum() == (
        np.asarray(nib.load(box_liver["segmentation"]).dataobj) > 0
    ).sum()


def test_landmarks_derived_from_vessel_labels(box_liver, tmp_path):
    labels = np.asarray(
        nib.as_closest_canonical(nib.load(box_liver["segmentation"])).dataobj
    ).copy()
    labels = labels[::-1, ::-1, :].transpose(2, 1, 0)  # RAS (I, J, K) to (D, H, W)
    grid = world_grid()

    def tube(start, end, radius):
        a, b = np.asarray(start), np.asarray(end)
        t = np.clip(((grid - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        return np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1) <= radius

    tumour = labels == 2
    labels[tube((0, 0, -45), (0, 0, 45), 4.0) & ~tumour] = 3  # IVC
    for vein in ("right", "middle", "left"):
        end = LANDMARKS[f"{vein}_hepatic_vein_end"]
        labels[tube(LANDMARKS["ivc_dome"], end, 2.5) & ~tumour] = 4
    bifurcation = LANDMARKS["portal_bifurcation"]
    portal = tube((0, 20, -35), bifurcation, 4.0)
    portal |= tube(bifurcation, (40, 20, 0), 3.0) | tube(bifurcation, (-35, 35, 0), 3.0)
    labels[portal & ~tumour] = 5
    segmentation = save(labels, tmp_path / "segmentation-vessels.nii.gz")

    with pytest.raises(InvalidVolumeError, match=r"labels \[3, 4, 5\].*--vessel-labels"):
        couinaud(box_liver["volume"], segmentation)
    vessels = parse_vessel_labels("ivc=3,hepatic_veins=4,portal_vein=5")
    result = couinaud(box_liver["volume"], segmentation, vessel_labels=vessels)
    assert result.landmarks.method == "vessels"
    found = result.landmarks.points_mm
    assert math.dist(found["ivc_dome"][:2], (0, 0)) < 1.5
    assert abs(found["ivc_dome"][2] - 30) <= 6
    for vein in ("right", "middle", "left"):
        truth = np.asarray(LANDMARKS[f"{vein}_hepatic_vein_end"][:2])
        got = np.asarray(found[f"{vein}_hepatic_vein_end"][:2])
        angle = math.degrees(math.atan2(got[1], got[0]) - math.atan2(truth[1], truth[0]))
        assert abs(angle) < 8, (vein, got)
    assert math.dist(found["portal_bifurcation"], bifurcation) < 6
    segments = {lesion_at(result.lesions, c).segment for c, _ in LESIONS.values()}
    assert segments == set(LESIONS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"portal_bifurcation": [0.0, 20.0, 500.0]}, r"portal_bifurcation \[0.0, 20.0, 500.0\]"),
        ({"ivc_dome": [-400.0, 0.0, 30.0]}, "outside the volume.*ivc_dome"),
        ({"left_hepatic_vein_end": [40.0, -30.0, 20.0]}, "in that order around the IVC"),
        ({"ivc_dome": [0.0, 0.0, -10.0]}, "must lie above portal_bifurcation"),
    ],
)
def test_bad_landmarks_are_clear_errors(box_liver, tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"landmarks_mm": {**LANDMARKS, **change}}))
    with pytest.raises(InvalidLandmarksError, match=message) as caught:
        couinaud(box_liver["volume"], box_liver["segmentation"], landmarks_path=path)
    assert str(path) in str(caught.value)


def test_read_landmarks_names_what_is_missing(tmp_path):
    path = tmp_path / "few.json"
    path.write_text(json.dumps({"ivc_dome": [0, 0, 0]}))
    with pytest.raises(InvalidLandmarksError, match=r"missing landmark.*portal_bifurcation"):
        read_landmarks(path)
    path.write_text(json.dumps({**LANDMARKS, "ivc_dome": [0, "a", 0]}))
    with pytest.raises(InvalidLandmarksError, match="ivc_dome"):
        read_landmarks(path)


@pytest.mark.parametrize(
    "text", ["ivc=3,portal_vein=5", "ivc=3,hepatic_veins=1,portal_vein=5", "aorta=3", "ivc"]
)
def test_bad_vessel_labels_are_rejected(text):
    with pytest.raises(InvalidOptionError, match="--vessel-labels"):
        parse_vessel_labels(text)


def expected_side(centre, landmarks) -> tuple[str, float]:
    """Right or left liver of a point, and its distance to Cantlie's plane, by plain geometry."""
    ivc = np.asarray(landmarks["ivc_dome"][:2])
    middle = np.asarray(landmarks["middle_hepatic_vein_end"][:2]) - ivc
    offset = np.asarray(centre[:2]) - ivc
    cross = middle[0] * offset[1] - middle[1] * offset[0]  # > 0: counter-clockwise = left
    return ("left" if cross > 0 else "right"), abs(cross) / np.linalg.norm(middle)


SIDE = {"II": "left", "III": "left", "IVa": "left", "IVb": "left"}
LEVEL = {"II": "superior", "IVa": "superior", "VII": "superior", "VIII": "superior"}


def test_cli_on_a_phantom_with_its_landmarks(tmp_path):
    phantom = make_phantom((14.0, 12.0, 10.0), shape=(32, 128, 128), seed=5)
    volume, segmentation = write_lits_pair(phantom, tmp_path / "lits", 0, orientation="LPS")
    landmarks = tmp_path / "lits" / "phantom-0.json"
    out = tmp_path / "couinaud"
    result = runner.invoke(
        app,
        [
            "ct",
            "couinaud",
            str(volume),
            str(segmentation),
            "--out",
            str(out),
            "--landmarks",
            str(landmarks),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Couinaud segments (landmarks)" in result.output
    record = json.loads((out / "couinaud.json").read_text())
    assert record["method"] == "landmarks"
    assert len(record["lesions"]) == len(phantom.lesions)
    points = phantom.landmarks_mm
    portal_z = points["portal_bifurcation"][2]
    for drawn in phantom.lesions:
        found = min(record["lesions"], key=lambda r: math.dist(r["centroid_mm"], drawn.centre_mm))
        assert math.dist(found["centroid_mm"], drawn.centre_mm) < 3
        segment, radius = found["segment"], drawn.diameter_mm / 2
        if segment == "I":  # caudate: between the IVC and the portal bifurcation
            assert portal_z - radius <= drawn.centre_mm[2] <= points["ivc_dome"][2] + radius
            continue
        level = "superior" if drawn.centre_mm[2] > portal_z else "inferior"
        if abs(drawn.centre_mm[2] - portal_z) > radius:
            assert LEVEL.get(segment, "inferior") == level, (drawn, segment)
        side, distance = expected_side(drawn.centre_mm, points)
        if distance > radius:
            assert SIDE.get(segment, "right") == side, (drawn, segment)
    assert (out / "couinaud.png").exists() and (out / "segments.nii.gz").exists()


def test_cli_reports_a_landmark_outside_the_volume(box_liver, tmp_path):
    path = tmp_path / "far.json"
    path.write_text(json.dumps({**LANDMARKS, "right_hepatic_vein_end": [900.0, 0.0, 20.0]}))
    result = runner.invoke(
        app,
        [
            "ct",
            "couinaud",
            str(box_liver["volume"]),
            str(box_liver["segmentation"]),
            "--landmarks",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "right_hepatic_vein_end" in result.output and "outside the volume" in result.output
    assert not (tmp_path / "o" / "couinaud.json").exists()
