"""CT as archives deliver it: compressed transfer syntaxes, enhanced multi-frame, gantry tilt.

The truth for every series is the phantom it was written from (HU on a known RAS grid); the
compressed pixel data is made here with pydicom's encoders and imagecodecs, and decoded by the
reader through pydicom's pixel-data handlers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from oncoscope.ct.phantom import Phantom, make_phantom
from oncoscope.errors import CorruptFileError, InvalidVolumeError, UnsupportedFormatError
from oncoscope.io.volumes import read_volume

INTERCEPT = -1024.0
NEAR = 2  # JPEG-LS near-lossless: every stored value within +-NEAR of the original
PSNR_DB = 50.0  # lossy JPEG 2000 target: RMS error about (2**12 - 1) / 10**(50 / 20) = 13 HU


@pytest.fixture(scope="module")
def ct() -> Phantom:
    """8 slices, 48 x 40 pixels, 5 mm slices, unequal row/column spacing: catches swaps."""
    return make_phantom((12.0,), shape=(8, 48, 40), seed=4)


def _lps_geometry(phantom: Phantom, d: int) -> tuple[list[float], list[float]]:
    """ImagePositionPatient and ImageOrientationPatient of phantom slice ``d`` (RAS -> LPS)."""
    x, y, z, _ = phantom.affine @ np.array([d, 0, 0, 1.0])
    # canonical rows run anterior->posterior (+y LPS), columns right->left (+x LPS)
    return [-x, -y, z], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _template(phantom: Phantom, *, signed: bool) -> Dataset:
    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    _, height, width = phantom.hu.shape
    ds.Rows, ds.Columns = height, width
    ds.PixelSpacing = [phantom.spacing_mm[1], phantom.spacing_mm[2]]  # row, column spacing
    ds.SliceThickness = phantom.spacing_mm[0]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0 if signed else INTERCEPT
    ds.PixelRepresentation = 1 if signed else 0
    ds.BitsStored, ds.HighBit = (16, 15) if signed else (12, 11)
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _encode(ds: Dataset, stored: np.ndarray, syntax: str) -> None:
    """Put ``stored`` (rows, cols) into ``ds`` as PixelData in transfer syntax ``syntax``."""
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if syntax == ExplicitVRLittleEndian:
        return
    if syntax in (JPEG2000Lossless, RLELossless):
        ds.compress(syntax)
        return
    if syntax == JPEG2000:
        ds.compress(syntax, j2k_psnr=[PSNR_DB])
        return
    bits = int(ds.BitsStored)
    unsigned = stored.astype(np.uint16)  # unsigned pixel representation: same values
    if syntax == JPEGLSLossless:
        frame = imagecodecs.jpegls_encode(unsigned)
    elif syntax == JPEGLSNearLossless:
        frame = imagecodecs.jpegls_encode(unsigned, level=NEAR)
    elif syntax == JPEGLosslessSV1:
        frame = imagecodecs.ljpeg_encode(unsigned, bitspersample=bits)
    elif syntax == JPEGExtended12Bit:
        frame = imagecodecs.jpeg8_encode(unsigned, level=95, bitspersample=bits)
    elif syntax == HTJ2KLossless:
        frame = imagecodecs.htj2k_encode(unsigned, level=0)
    else:
        raise AssertionError(syntax)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(syntax)


def _write_series(
    phantom: Phantom, folder: Path, syntax: str = ExplicitVRLittleEndian, *, signed: bool = False
) -> list[Path]:
    """The phantom as a single-frame CT series, files named out of slice order."""
    template = _template(phantom, signed=signed)
    folder.mkdir(parents=True)
    depth = phantom.hu.shape[0]
    files = []
    for d in range(depth):
        ds = copy.deepcopy(template)
        ds.ImagePositionPatient, ds.ImageOrientationPatient = _lps_geometry(phantom, d)
        stored = phantom.hu[d].astype(np.int32) - int(ds.RescaleIntercept)
        _encode(ds, stored.astype(np.int16 if signed else np.uint16), syntax)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = depth - d
        path = folder / f"IM{(d * 3) % depth:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _assert_is_phantom(volume, phantom: Phantom, *, atol_hu: float = 0.0) -> None:
    assert volume.shape == phantom.hu.shape
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-4)
    error = np.abs(volume.array.astype(np.float64) - phantom.hu)
    assert error.max() <= atol_hu, f"max HU error {error.max()}"


LOSSLESS = [
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLosslessSV1,
    RLELossless,
    HTJ2KLossless,
]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda uid: uid.name)
def test_a_losslessly_compressed_series_reads_to_the_hu_of_its_uncompressed_twin(
    tmp_path, ct, syntax
):
    _write_series(ct, tmp_path / "plain")
    _write_series(ct, tmp_path / "packed", syntax)
    assert pydicom.dcmread(next((tmp_path / "packed").iterdir())).file_meta.TransferSyntaxUID == (
        syntax
    )
    plain, packed = read_volume(tmp_path / "plain"), read_volume(tmp_path / "packed")
    _assert_is_phantom(plain, ct)
    _assert_is_phantom(packed, ct)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=lambda uid: uid.name)
def test_a_compressed_series_with_signed_pixels_keeps_its_negative_hu(tmp_path, ct, syntax):
    # Stored values are the HU themselves (intercept 0), air at -1024: the sign must survive.
    _write_series(ct, tmp_path / "signed", syntax, signed=True)
    _assert_is_phantom(read_volume(tmp_path / "signed"), ct)


def test_a_jpeg_ls_near_lossless_series_stays_within_its_near_bound(tmp_path, ct):
    _write_series(ct, tmp_path / "jls", JPEGLSNearLossless)
    volume = read_volume(tmp_path / "jls")
    # the JPEG-LS standard bounds every sample's error by NEAR (slope 1: NEAR HU)
    _assert_is_phantom(volume, ct, atol_hu=NEAR)
    assert not np.array_equal(volume.array, ct.hu)  # it is really lossy


def test_a_lossy_jpeg_2000_series_reads_to_its_codestream_hu_and_near_the_original(tmp_path, ct):
    files = _write_series(ct, tmp_path / "j2k", JPEG2000)
    volume = read_volume(tmp_path / "j2k")
    # exact against an independent decoder of the same codestreams (imagecodecs' OpenJPEG)
    for path in files:
        ds = pydicom.dcmread(path)
        (frame,) = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
        stored = imagecodecs.jpeg2k_decode(frame).astype(np.float64)
        d = round((float(ds.ImagePositionPatient[2]) - (-17.5)) / 5.0)
        np.testing.assert_array_equal(volume.array[d], stored + INTERCEPT)
    # and near the original: RMS error within 10% of the encoder's PSNR target (12-bit peak)
    _assert_is_phantom(volume, ct, atol_hu=np.inf)
    rms_hu = float(np.sqrt(np.mean((volume.array - ct.hu) ** 2)))
    assert 0.0 < rms_hu <= 1.1 * (2**12 - 1) / 10 ** (PSNR_DB / 20)


def _read_with_simpleitk(files: list[Path]) -> np.ndarray:
    """HU of single-frame files by SimpleITK's GDCM (an independent decoder), (file, row, col)."""
    import SimpleITK as sitk

    return np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(f)))[0] for f in files])


def test_a_12_bit_lossy_jpeg_extended_series_reads_to_its_codestream_hu(tmp_path, ct):
    # The lossy JPEG of older CT archives; pydicom's GDCM and Pillow plugins refuse 12 bits.
    files = _write_series(ct, tmp_path / "jpeg12", JPEGExtended12Bit)
    volume = read_volume(tmp_path / "jpeg12")
    by_slice = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    np.testing.assert_array_equal(volume.array, _read_with_simpleitk(by_slice))
    _assert_is_phantom(volume, ct, atol_hu=np.inf)
    assert 0.0 < np.abs(volume.array - ct.hu).mean() < 5.0  # quality 95: a few HU


def test_pydicoms_12_bit_jpeg_extended_file_reads_like_gdcm_reads_it():
    path = get_testdata_file("JPGExtended.dcm", download=False)
    expected = _read_with_simpleitk([Path(path)])
    assert expected.max() > 255  # really 12-bit samples
    np.testing.assert_array_equal(read_volume(path).array[0], expected[0])


@pytest.mark.parametrize(
    ("name", "twin"),
    [
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
    ],
)
def test_pydicoms_compressed_test_files_read_like_their_uncompressed_twin(name, twin):
    packed = read_volume(get_testdata_file(name, download=False))
    plain = read_volume(get_testdata_file(twin, download=False))
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_allclose(packed.affine, plain.affine)


# Undecodable compressed pixel data: one line naming the file and its transfer syntax.
def test_an_undecodable_compressed_series_names_the_file_and_the_transfer_syntax(tmp_path, ct):
    files = _write_series(ct, tmp_path / "broken", JPEG2000Lossless)
    ds = pydicom.dcmread(files[3])
    (frame,) = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:40] + bytes(len(frame) - 40)])  # header kept, data zeroed
    ds.save_as(files[3])
    with pytest.raises(CorruptFileError) as caught:
        read_volume(tmp_path / "broken")
    message = str(caught.value)
    assert message.startswith(f"{files[3]}: ")
    assert "JPEG 2000 Image Compression (Lossless Only)" in message
    assert "\n" not in message


def test_a_transfer_syntax_without_a_decoder_names_the_file_and_the_syntax(tmp_path, ct):
    files = _write_series(ct, tmp_path / "mpeg", JPEG2000Lossless)
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    ds.save_as(files[0])
    with pytest.raises(UnsupportedFormatError) as caught:
        read_volume(tmp_path / "mpeg")
    message = str(caught.value)
    assert message.startswith(f"{files[0]}: ")
    assert "MPEG2" in message and "1.2.840.10008.1.2.4.100" in message
    assert "\n" not in message


def test_ct_prepare_reports_an_undecodable_patient_and_writes_the_others(tmp_path, ct):
    import pandas as pd
    from typer.testing import CliRunner

    from oncoscope.cli import app
    from oncoscope.ct.phantom import write_lits_pair

    inputs = tmp_path / "in"
    for pid in (0, 1):
        write_lits_pair(ct, tmp_path / "nifti", pid)
        _write_series(ct, inputs / f"volume-{pid}", JPEG2000Lossless)
        (tmp_path / "nifti" / f"segmentation-{pid}.nii.gz").rename(
            inputs / f"segmentation-{pid}.nii.gz"
        )
    broken = sorted((inputs / "volume-1").iterdir())[2]
    ds = pydicom.dcmread(broken)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    ds.save_as(broken)
    result = CliRunner().invoke(
        app, ["ct", "prepare", str(inputs), "--out", str(tmp_path / "out"), "--split", "1:0:0"]
    )
    assert result.exit_code == 2, result.output
    assert f"error: {broken}: " in result.output
    line = next(li for li in result.output.splitlines() if str(broken) in li)
    assert "JPEG 2000 Image Compression (Lossless Only)" in line
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"patient_id": str})
    assert set(manifest["patient_id"]) == {"0"}


# Enhanced multi-frame CT: one file, per-frame functional groups.
def _write_enhanced(
    phantom: Phantom,
    path: Path,
    syntax: str = ExplicitVRLittleEndian,
    *,
    per_frame_intercepts: list[float] | None = None,
) -> None:
    """The phantom as one Enhanced CT Image file, frames stored in a scrambled slice order."""
    depth, height, width = phantom.hu.shape
    order = [(d * 3) % depth for d in range(depth)]  # frame f holds slice order[f]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = height, width, depth
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    measures = Dataset()
    measures.PixelSpacing = [phantom.spacing_mm[1], phantom.spacing_mm[2]]
    measures.SliceThickness = phantom.spacing_mm[0]
    plane = Dataset()
    plane.ImageOrientationPatient = _lps_geometry(phantom, 0)[1]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane]
    if per_frame_intercepts is None:
        rescale = Dataset()
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = INTERCEPT, 1, "HU"
        shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, per_frame = [], []
    for f, d in enumerate(order):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = _lps_geometry(phantom, d)[0]
        item.PlanePositionSequence = [position]
        intercept = INTERCEPT
        if per_frame_intercepts is not None:
            intercept = per_frame_intercepts[f]
            rescale = Dataset()
            rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = intercept, 1, "HU"
            item.PixelValueTransformationSequence = [rescale]
        per_frame.append(item)
        frames.append((phantom.hu[d].astype(np.int32) - int(intercept)).astype(np.uint16))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    ds["PixelData"].VR = "OW"
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEG2000Lossless])
def test_an_enhanced_multiframe_ct_reads_with_its_spacing_orientation_and_hu(tmp_path, ct, syntax):
    _write_enhanced(ct, tmp_path / "enhanced.dcm", syntax)
    _assert_is_phantom(read_volume(tmp_path / "enhanced.dcm"), ct)
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "enhanced.dcm").rename(folder / "enhanced.dcm")
    _assert_is_phantom(read_volume(folder), ct)


def test_an_enhanced_multiframe_ct_applies_each_frames_own_rescale(tmp_path, ct):
    intercepts = [-1024.0, -1040.0, -1024.0, -1100.0, -1024.0, -1050.0, -1024.0, -1030.0]
    _write_enhanced(ct, tmp_path / "enhanced.dcm", per_frame_intercepts=intercepts)
    _assert_is_phantom(read_volume(tmp_path / "enhanced.dcm"), ct)


# Gantry tilt: slice positions that step off the slice normal are sheared, not a box.
def test_a_gantry_tilted_series_is_refused_naming_the_tilt_in_degrees(tmp_path, ct):
    template = _template(ct, signed=False)
    folder = tmp_path / "tilted"
    folder.mkdir()
    tilt = np.deg2rad(15.0)
    for d in range(ct.hu.shape[0]):
        ds = copy.deepcopy(template)
        # the image plane is tilted about x; the table moves the slices straight along z
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.ImagePositionPatient = [-50.0, -60.0, 5.0 * d]
        _encode(ds, (ct.hu[d].astype(np.int32) + 1024).astype(np.uint16), ExplicitVRLittleEndian)
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{d}.dcm", enforce_file_format=True)
    with pytest.raises(InvalidVolumeError) as caught:
        read_volume(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: ")
    assert "gantry tilt of 15.0 degrees" in message
    assert "\n" not in message


def test_an_oblique_series_stepping_along_its_normal_is_read_on_its_own_axes(tmp_path, ct):
    # Not a gantry tilt: the plane is oblique and the slices step along its normal.
    template = _template(ct, signed=False)
    folder = tmp_path / "oblique"
    folder.mkdir()
    angle = np.deg2rad(20.0)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, col)
    origin = np.array([-50.0, -60.0, 10.0])
    for d in range(ct.hu.shape[0]):
        ds = copy.deepcopy(template)
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = list(origin + normal * ct.spacing_mm[0] * d)
        _encode(ds, (ct.hu[d].astype(np.int32) + 1024).astype(np.uint16), ExplicitVRLittleEndian)
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{d}.dcm", enforce_file_format=True)
    volume = read_volume(folder)
    assert volume.spacing_mm == pytest.approx(ct.spacing_mm)
    # every voxel lands at its DICOM world position: pixel (r, c) of slice d is at
    # origin + c * column spacing * row + r * row spacing * col + d * step * normal (LPS)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    for d, r, c in [(0, 0, 0), (7, 47, 39), (3, 10, 30)]:
        world = origin + c * ct.spacing_mm[2] * row + r * ct.spacing_mm[1] * col
        world = (world + d * ct.spacing_mm[0] * normal) * lps_to_ras
        hits = np.argwhere(
            np.isclose(
                np.linalg.norm(
                    (volume.affine[:3, :3] @ np.indices(volume.shape).reshape(3, -1)).T
                    + volume.affine[:3, 3]
                    - world,
                    axis=1,
                ),
                0.0,
                atol=1e-3,
            )
        )
        assert len(hits) == 1
        index = np.unravel_index(hits[0][0], volume.shape)
        assert volume.array[index] == ct.hu[d, r, c]


def test_a_series_file_cut_short_in_its_header_is_refused_not_skipped(tmp_path, ct):
    # The topmost slice, cut before its Rows: skipping it would silently lose a slice.
    files = _write_series(ct, tmp_path / "cut", JPEG2000Lossless)
    top = files[-1]
    top.write_bytes(top.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=rf"^{top}: CT Image Storage header .* truncated"):
        read_volume(tmp_path / "cut")
    (tmp_path / "cut" / "notes.txt").write_text("not DICOM")
    top.unlink()  # a non-DICOM file is skipped; the 7 remaining slices read
    assert read_volume(tmp_path / "cut").shape[0] == ct.hu.shape[0] - 1
