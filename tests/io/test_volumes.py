from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from oncoscope.errors import (
    CorruptFileError,
    InvalidVolumeError,
    MixedSeriesError,
    OncoscopeError,
    UnsupportedFormatError,
)
from oncoscope.io.volumes import check_same_grid, read_label_mask, read_volume
from tests.conftest import canonical_ras, radiological

# Every way of storing the same volume: flips and axis permutations.
ORIENTATIONS = ["RAS", "LPS", "LPI", "RPI", "SLP", "ASL", "PIR", "ILA"]


def _write_oriented(array_ras: np.ndarray, affine_ras: np.ndarray, codes: str, path: Path) -> Path:
    image = nib.Nifti1Image(array_ras, affine_ras)
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(tuple(codes))
    )
    nib.save(image.as_reoriented(transform), path)
    return path


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_a_marked_voxel_lands_at_its_world_position_in_the_canonical_layout(tmp_path, codes):
    # 10 x 12 x 14 RAS grid, 0.8 x 0.9 x 2.5 mm, one bright voxel at RAS index (7, 2, 11).
    array = np.zeros((10, 12, 14), np.int16)
    array[7, 2, 11] = 1000
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-4.0, -5.0, 10.0]
    world = affine @ np.array([7, 2, 11, 1.0])
    volume = read_volume(_write_oriented(array, affine, codes, tmp_path / f"{codes}.nii.gz"))

    assert volume.shape == (14, 12, 10)
    assert volume.spacing_mm == pytest.approx((2.5, 0.9, 0.8))
    d, h, w = np.argwhere(volume.array == 1000)[0]
    np.testing.assert_allclose(volume.affine @ np.array([d, h, w, 1.0]), world, atol=1e-6)
    # d runs inferior->superior (z up), h anterior->posterior (y down), w right->left (x down).
    assert (d, h, w) == (11, 12 - 1 - 2, 10 - 1 - 7)


def test_flipped_and_permuted_copies_of_a_phantom_read_identically(tmp_path, phantom):
    from oncoscope.ct.phantom import write_lits_pair

    arrays = []
    for codes in ORIENTATIONS:
        volume_path, _ = write_lits_pair(phantom, tmp_path / codes, 0, orientation=codes)
        assert nib.aff2axcodes(nib.load(volume_path).affine) == tuple(codes)
        arrays.append(read_volume(volume_path))
    for other in arrays[1:]:
        np.testing.assert_array_equal(other.array, arrays[0].array)
        np.testing.assert_allclose(other.affine, arrays[0].affine, atol=1e-6)
    np.testing.assert_array_equal(arrays[0].array, phantom.hu.astype(np.float32))


def test_radiological_layout_puts_the_liver_left_and_the_spine_down(lits_dir):
    volume = read_volume(lits_dir / "volume-0.nii.gz")
    mask = read_label_mask(lits_dir / "segmentation-0.nii.gz")
    _, _, cols = np.nonzero(mask.array >= 1)
    # the liver is on the patient's right, shown on the viewer's left
    assert cols.mean() < volume.shape[2] / 2
    bone_rows = np.nonzero(volume.array[volume.shape[0] // 2] > 500)[0]
    assert bone_rows.mean() > volume.shape[1] / 2  # spine is posterior: lower half of the image


def test_canonical_slices_match_an_independent_nibabel_reading(lits_dir):
    path = lits_dir / "volume-3.nii.gz"  # stored as SLP: permuted and flipped
    ras, _ = canonical_ras(path)
    volume = read_volume(path)
    for k in (0, 7, ras.shape[2] - 1):
        np.testing.assert_array_equal(volume.array[k], radiological(ras[:, :, k]))


def test_nifti_scaling_is_applied_to_give_hounsfield_units(tmp_path):
    stored = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 100
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    volume = read_volume(tmp_path / "scaled.nii")
    assert volume.array.max() == pytest.approx(2.0 * stored.max() - 1024.0)
    assert volume.array.min() == pytest.approx(-1024.0)
    assert volume.array.dtype == np.float32


def test_pydicom_ct_small_loads_with_correct_hounsfield_units():
    path = Path(get_testdata_file("CT_small.dcm"))
    dataset = pydicom.dcmread(path)
    expected = dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(
        dataset.RescaleIntercept
    )
    volume = read_volume(path)
    assert volume.shape == (1, 128, 128)
    # IOP (1,0,0 / 0,1,0): rows run anterior->posterior, columns right->left, as stored.
    np.testing.assert_allclose(volume.array[0], expected)
    assert volume.spacing_mm[1:] == pytest.approx([float(v) for v in dataset.PixelSpacing])
    # the world position of the first pixel is ImagePositionPatient, converted LPS -> RAS
    x, y, z = (float(v) for v in dataset.ImagePositionPatient)
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1.0], [-x, -y, z, 1.0], atol=1e-3)
    assert volume.array.min() < -800  # air is far below 0 HU; stored values are all >= 0


def _dicom_series(folder: Path, z_positions: list[float], series_uid: str) -> None:
    """Write CT_small copies at given z; pixel values encode z; names and numbers scrambled."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = rng.permutation(len(z_positions))
    for i, z in enumerate(z_positions):
        ds = template.copy()
        pixels = np.full((128, 128), int(z * 10) + 2000, dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [-158.135803, -179.035797, z]
        ds.InstanceNumber = int(rng.integers(1, 1000))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.SliceLocation = z
        ds.save_as(folder / f"{series_uid[-6:]}_{names[i]:03d}.dcm")


def test_dicom_series_is_sorted_by_position_not_by_name_or_instance_number(tmp_path):
    z_positions = [10.0, -5.0, 2.5, 7.5, 0.0, 5.0, -2.5]
    _dicom_series(tmp_path / "series", z_positions, generate_uid())
    volume = read_volume(tmp_path / "series")
    assert volume.shape[0] == len(z_positions)
    hu_per_slice = volume.array[:, 64, 64]
    expected = [int(z * 10) + 2000 - 1024 for z in sorted(z_positions)]  # intercept -1024
    np.testing.assert_allclose(hu_per_slice, expected)
    assert volume.spacing_mm[0] == pytest.approx(2.5)


def test_dicom_folder_with_two_series_is_refused_unless_one_is_chosen(tmp_path):
    first, second = generate_uid(), generate_uid()
    _dicom_series(tmp_path / "mixed", [0.0, 2.5, 5.0], first)
    _dicom_series(tmp_path / "mixed", [0.0, 5.0], second)
    with pytest.raises(MixedSeriesError) as caught:
        read_volume(tmp_path / "mixed")
    message = str(caught.value)
    assert str(tmp_path / "mixed") in message and first in message and second in message
    assert read_volume(tmp_path / "mixed", series_uid=second).shape[0] == 2


def test_corrupt_nifti_names_the_file(tmp_path, lits_dir):
    damaged = tmp_path / "volume-9.nii.gz"
    raw = gzip.decompress((lits_dir / "volume-0.nii.gz").read_bytes())
    damaged.write_bytes(gzip.compress(raw[: len(raw) // 3]))
    with pytest.raises(CorruptFileError, match=r"volume-9\.nii\.gz"):
        read_volume(damaged)
    garbage = tmp_path / "volume-8.nii"
    garbage.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(CorruptFileError, match=r"volume-8\.nii"):
        read_volume(garbage)


@pytest.mark.parametrize(
    ("name", "error"),
    [("missing.nii.gz", OncoscopeError), ("notes.txt", UnsupportedFormatError)],
)
def test_missing_and_unsupported_paths(tmp_path, name, error):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hello")
    with pytest.raises(error, match=name):
        read_volume(tmp_path / name)


def test_empty_volume_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 0), np.int16), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(InvalidVolumeError, match="empty"):
        read_volume(tmp_path / "empty.nii.gz")


def test_label_masks_must_hold_integer_labels_in_range(tmp_path):
    fractional = np.zeros((4, 4, 4), np.float32)
    fractional[1, 1, 1] = 0.5
    nib.save(nib.Nifti1Image(fractional, np.eye(4)), tmp_path / "frac.nii.gz")
    with pytest.raises(InvalidVolumeError, match="non-integer"):
        read_label_mask(tmp_path / "frac.nii.gz", max_label=2)
    too_big = np.zeros((4, 4, 4), np.uint8)
    too_big[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(too_big, np.eye(4)), tmp_path / "big.nii.gz")
    with pytest.raises(InvalidVolumeError, match=r"\[0, 3\]"):
        read_label_mask(tmp_path / "big.nii.gz", max_label=2)
    whole = np.zeros((4, 4, 4), np.float64)
    whole[2, 2, 2] = 2.0
    nib.save(nib.Nifti1Image(whole, np.eye(4)), tmp_path / "whole.nii.gz")
    assert read_label_mask(tmp_path / "whole.nii.gz", max_label=2).array.max() == 2


def test_mask_on_another_grid_is_refused_with_the_mask_named(tmp_path, lits_dir):
    volume = read_volume(lits_dir / "volume-0.nii.gz")
    shutil.copy(lits_dir / "segmentation-0.nii.gz", tmp_path / "segmentation-0.nii.gz")
    image = nib.load(tmp_path / "segmentation-0.nii.gz")
    shifted = image.affine.copy()
    shifted[:3, 3] += 3.0
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), shifted), tmp_path / "shifted.nii.gz")
    with pytest.raises(InvalidVolumeError, match=r"shifted.nii.gz.*affine"):
        check_same_grid(volume, read_label_mask(tmp_path / "shifted.nii.gz"))
    cropped = np.asanyarray(image.dataobj)[:-1]
    nib.save(nib.Nifti1Image(cropped, image.affine), tmp_path / "cropped.nii.gz")
    with pytest.raises(InvalidVolumeError, match=r"cropped.nii.gz.*shape"):
        check_same_grid(volume, read_label_mask(tmp_path / "cropped.nii.gz"))


# Issue 17, item 8: a series with a missing or doubled slice is not stacked as if even.
@pytest.mark.parametrize(
    ("z_positions", "message"),
    [
        ([0.0, 2.5, 5.0, 10.0, 12.5, 15.0], r"missing slice between z=5 and z=10 mm"),
        ([0.0, 2.5, 5.0, 5.0, 7.5, 10.0], r"two slices at z=5 mm"),
        ([0.0, 2.5, 5.0, 6.0, 8.5, 11.0], r"uneven slice spacing between z=5 and z=6 mm"),
    ],
)
def test_a_dicom_series_with_a_gap_or_a_duplicate_is_refused_naming_it(
    tmp_path, z_positions, message
):
    from oncoscope.errors import UnevenSlicesError

    _dicom_series(tmp_path / "series", z_positions, generate_uid())
    with pytest.raises(UnevenSlicesError, match=message) as caught:
        read_volume(tmp_path / "series")
    assert str(caught.value).startswith(f"{tmp_path / 'series'}: ")


def test_a_tilted_dicom_series_is_checked_along_its_slice_normal(tmp_path):
    # Slices stepping 2 mm along a normal tilted 30 degrees about x, one missing: z alone
    # would step unevenly only by chance; the positions along the normal give the gap.
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "tilted"
    folder.mkdir()
    angle = np.deg2rad(30.0)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row, col)
    series = generate_uid()
    for i, step in enumerate([0, 1, 2, 4, 5]):
        ds = template.copy()
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = list(normal * 2.0 * step + np.array([-50.0, -60.0, 10.0]))
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{i}.dcm")
    with pytest.raises(InvalidVolumeError, match=r"missing slice between z=.* \(4 mm apart, 2 mm"):
        read_volume(folder)


# Issue 17, item 9: a NIfTI without a usable voxel size is refused, not read as 1 mm.
@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan")])
def test_a_nifti_with_zero_negative_or_nan_pixdim_is_refused_unless_spacing_is_given(tmp_path, bad):
    from oncoscope.errors import MissingMetadataError

    image = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), None)
    image.header["pixdim"][1:4] = [0.7, 0.8, bad]  # i, j, k; k is the slice axis
    image.header.set_qform(None, code=0)
    image.header.set_sform(None, code=0)
    path = tmp_path / "nospacing.nii.gz"
    nib.save(image, path)
    with pytest.raises(MissingMetadataError, match=r"nospacing\.nii\.gz: .*--spacing-mm"):
        read_volume(path)
    with pytest.raises(MissingMetadataError, match="--spacing-mm"):
        read_label_mask(path)
    volume = read_volume(path, spacing_mm=(3.0, 0.8, 0.7))
    assert volume.spacing_mm == pytest.approx((3.0, 0.8, 0.7))
    assert volume.shape == (6, 5, 4)
    mask = read_label_mask(path, spacing_mm=(3.0, 0.8, 0.7))
    check_same_grid(volume, mask)


def test_a_spacing_override_does_not_replace_a_valid_spacing(tmp_path):
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([0.7, 0.8, 2.5, 1.0])), path)
    assert read_volume(path, spacing_mm=(9.0, 9.0, 9.0)).spacing_mm == pytest.approx(
        (2.5, 0.8, 0.7)
    )


# Issue 17, item 14: RGB and complex voxels are bad input, not a crash or a silent cast.
def test_rgb_and_complex_volumes_are_refused_with_the_file_named(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    complex_values = np.full((4, 5, 6), 100 + 50j, dtype=np.complex64)
    nib.save(nib.Nifti1Image(complex_values, np.eye(4)), tmp_path / "complex.nii.gz")
    for name, kind in (("rgb.nii.gz", "RGB"), ("complex.nii.gz", "complex64")):
        with pytest.raises(InvalidVolumeError, match=rf"{name}: voxel type {kind}"):
            read_volume(tmp_path / name)
        with pytest.raises(InvalidVolumeError, match=rf"{name}: .*{kind}"):
            read_label_mask(tmp_path / name)
