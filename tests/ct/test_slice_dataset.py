from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import PRESETS, parse_windows
from oncoscope.errors import OncoscopeError
from tests.conftest import canonical_ras, radiological

REQUIRED = [
    "path",
    "patient_id",
    "slice_index",
    "label",
    "split",
    "lesion_count",
    "max_lesion_mm",
    "liver_fraction",
]


@pytest.fixture(scope="module")
def prepared(lits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("prepared")
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=4, seed=7)
    report = prepare_dataset(lits_dir, out, options, workers=2)
    assert report.failures == []
    return out, pd.read_csv(out / "manifest.csv", dtype={"patient_id": str, "group": str})


def test_manifest_has_the_contract_columns_and_values(prepared):
    _, manifest = prepared
    assert list(manifest.columns[: len(REQUIRED)]) == REQUIRED
    assert "group" in manifest.columns and (manifest["group"] == manifest["patient_id"]).all()
    assert set(manifest["label"]) == {"tumour", "healthy"}
    assert set(manifest["split"]) == {"train", "val", "test"}


def test_labels_agree_exactly_with_the_masks(prepared, lits_dir):
    _, manifest = prepared
    for pid, rows in manifest.groupby("patient_id"):
        seg, _ = canonical_ras(lits_dir / f"segmentation-{pid}.nii.gz")
        tumour_slices = {k for k in range(seg.shape[2]) if (seg[:, :, k] == 2).any()}
        liver_slices = {k for k in range(seg.shape[2]) if (seg[:, :, k] >= 1).any()}
        written_tumour = set(rows.loc[rows["label"] == "tumour", "slice_index"])
        assert written_tumour == tumour_slices  # every tumour slice, nothing else
        healthy = set(rows.loc[rows["label"] == "healthy", "slice_index"])
        assert healthy <= liver_slices - tumour_slices and len(healthy) == 4
        for _, row in rows.iterrows():
            k = int(row["slice_index"])
            assert row["liver_fraction"] == pytest.approx((seg[:, :, k] >= 1).mean(), abs=1e-6)
            assert (row["lesion_count"] > 0) == (k in tumour_slices)


def test_pngs_are_the_windowed_slices_in_radiological_view(prepared, lits_dir):
    out, manifest = prepared
    for _, row in manifest.sample(6, random_state=0).iterrows():
        ct, _ = canonical_ras(lits_dir / f"volume-{row['patient_id']}.nii.gz")
        hu = radiological(ct[:, :, int(row["slice_index"])]).astype(np.float64)
        expected = np.round(np.clip((hu + 100.0) / 300.0, 0, 1) * 255).astype(np.uint8)
        written = np.asarray(Image.open(out / row["path"]))
        assert written.dtype == np.uint8 and written.ndim == 2
        assert np.abs(written.astype(int) - expected).max() <= 1


def test_no_patient_is_in_two_splits(prepared):
    _, manifest = prepared
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert manifest["patient_id"].nunique() == 5


def test_lesion_sizes_come_from_the_mask_in_mm(prepared):
    out, manifest = prepared
    lesions = pd.read_csv(out / "lesions.csv", dtype={"patient_id": str})
    # patient 1 has a 12 mm and a 30 mm lesion, drawn as spheres on ~3 mm pixels
    sizes = sorted(lesions.loc[lesions["patient_id"] == "1", "diameter_mm"])
    assert sizes[0] == pytest.approx(12, abs=4.3) and sizes[1] == pytest.approx(30, abs=4.3)
    tumour = manifest[manifest["label"] == "tumour"]
    largest = lesions.groupby("patient_id")["diameter_mm"].max()
    for pid, rows in tumour.groupby("patient_id"):
        assert rows["max_lesion_mm"].max() == pytest.approx(largest[pid], abs=1e-3)


def test_only_small_and_rgb_multi_window(lits_dir, tmp_path, prepared):
    _, full = prepared
    options = PrepareOptions(
        windows=parse_windows("multi"),
        only_small=True,
        small_mm=20.0,
        healthy_per_patient=0,
        seed=7,
        size_px=64,
    )
    prepare_dataset(lits_dir, tmp_path, options)
    manifest = pd.read_csv(tmp_path / "manifest.csv", dtype={"patient_id": str})
    assert (manifest["label"] == "tumour").all()
    assert (manifest["max_lesion_mm"] <= 20.0).all() and manifest["all_small"].all()
    expected = full[(full["label"] == "tumour") & (full["max_lesion_mm"] <= 20.0)]
    assert len(manifest) == len(expected)
    image = np.asarray(Image.open(tmp_path / manifest["path"].iloc[0]))
    assert image.shape == (64, 64, 3)
    assert manifest["row_mm"].iloc[0] == pytest.approx(380.0 / 64)


def test_same_patient_stored_flipped_or_permuted_gives_the_same_dataset(tmp_path, phantom):
    from oncoscope.ct.phantom import write_lits_pair

    results = []
    for codes in ("LPS", "PIR", "RAI"):
        folder = tmp_path / codes
        write_lits_pair(phantom, folder, 0, orientation=codes)
        options = PrepareOptions(windows=(PRESETS["liver"],), ratio=(1.0, 0.0, 0.0))
        prepare_dataset(folder, folder / "out", options)
        manifest = pd.read_csv(folder / "out" / "manifest.csv")
        pixels = [np.asarray(Image.open(folder / "out" / p)) for p in manifest["path"]]
        results.append((manifest.drop(columns=["source"]), pixels))
    for manifest, pixels in results[1:]:
        pd.testing.assert_frame_equal(manifest, results[0][0])
        for a, b in zip(pixels, results[0][1], strict=True):
            np.testing.assert_array_equal(a, b)


def _bad_folder(lits_dir: Path, folder: Path) -> None:
    for pid in (0, 1, 2):
        for stem in ("volume", "segmentation"):
            shutil.copy(lits_dir / f"{stem}-{pid}.nii.gz", folder / f"{stem}-{pid}.nii.gz")
    # 3: volume without a mask
    shutil.copy(lits_dir / "volume-3.nii.gz", folder / "volume-3.nii.gz")
    # 4: mask with a different shape
    shutil.copy(lits_dir / "volume-4.nii.gz", folder / "volume-4.nii.gz")
    seg = nib.load(lits_dir / "segmentation-4.nii.gz")
    nib.save(
        nib.Nifti1Image(np.asanyarray(seg.dataobj)[1:], seg.affine),
        folder / "segmentation-4.nii.gz",
    )
    # 5: non-integer labels
    shutil.copy(lits_dir / "volume-0.nii.gz", folder / "volume-5.nii.gz")
    labels = np.asanyarray(seg.dataobj).astype(np.float32) * 0.7
    nib.save(nib.Nifti1Image(labels, seg.affine), folder / "segmentation-5.nii.gz")
    # 6: corrupt (truncated) volume
    raw = gzip.decompress((lits_dir / "volume-1.nii.gz").read_bytes())
    (folder / "volume-6.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    shutil.copy(lits_dir / "segmentation-1.nii.gz", folder / "segmentation-6.nii.gz")
    # 7: a mask without a volume
    shutil.copy(lits_dir / "segmentation-2.nii.gz", folder / "segmentation-7.nii.gz")


def test_bad_volumes_are_reported_and_good_ones_still_written(lits_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _bad_folder(lits_dir, inputs)
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=2)
    report = prepare_dataset(inputs, tmp_path / "out", options)
    failed = {Path(path).name: message for path, message in report.failures}
    assert set(failed) == {
        "volume-3.nii.gz",
        "segmentation-4.nii.gz",
        "segmentation-5.nii.gz",
        "volume-6.nii.gz",
        "segmentation-7.nii.gz",
    }
    assert "no segmentation-3" in failed["volume-3.nii.gz"]
    assert "shape" in failed["segmentation-4.nii.gz"]
    assert "non-integer" in failed["segmentation-5.nii.gz"]
    assert "cannot read" in failed["volume-6.nii.gz"]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"patient_id": str})
    assert sorted(manifest["patient_id"].unique()) == ["0", "1", "2"]
    assert not list((tmp_path / "out" / "slices").glob(".partial*"))
    with pytest.raises(OncoscopeError):
        prepare_dataset(inputs, tmp_path / "strict", options, strict=True)
    assert not (tmp_path / "strict" / "manifest.csv").exists()


def test_a_folder_without_volumes_is_an_error(tmp_path):
    with pytest.raises(OncoscopeError, match="no volume-N"):
        prepare_dataset(tmp_path, tmp_path / "out", PrepareOptions(windows=(PRESETS["liver"],)))


def _write_dicom_series(phantom, folder: Path) -> None:
    """Store a phantom as a DICOM CT series (LPS world, rescale intercept -1024)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True)
    series = generate_uid()
    depth, height, width = phantom.hu.shape
    for d in range(depth):
        ds = template.copy()
        x, y, z, _ = phantom.affine @ np.array([d, 0, 0, 1.0])
        ds.ImagePositionPatient = [-x, -y, z]  # RAS -> LPS
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # rows: posterior, columns: left
        ds.PixelSpacing = [phantom.spacing_mm[1], phantom.spacing_mm[2]]
        ds.SliceThickness = phantom.spacing_mm[0]
        ds.Rows, ds.Columns = height, width
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (phantom.hu[d].astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = depth - d
        ds.save_as(folder / f"IM{(d * 7) % depth:04d}.dcm")


def test_a_dicom_series_volume_pairs_with_a_nifti_mask(tmp_path):
    from oncoscope.ct.phantom import make_phantom, write_lits_pair

    phantom = make_phantom((12.0,), shape=(12, 64, 64), seed=4)
    write_lits_pair(phantom, tmp_path / "nifti", 0)
    inputs = tmp_path / "in"
    _write_dicom_series(phantom, inputs / "volume-0")
    shutil.copy(tmp_path / "nifti" / "segmentation-0.nii.gz", inputs / "segmentation-0.nii.gz")
    options = PrepareOptions(windows=(PRESETS["liver"],), ratio=(1.0, 0.0, 0.0))
    from_dicom = prepare_dataset(inputs, tmp_path / "dicom-out", options)
    assert from_dicom.failures == []
    from_nifti = prepare_dataset(tmp_path / "nifti", tmp_path / "nifti-out", options)
    assert [r["slice_index"] for r in from_dicom.rows] == [
        r["slice_index"] for r in from_nifti.rows
    ]
    for a, b in zip(from_dicom.rows, from_nifti.rows, strict=True):
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "dicom-out" / a["path"])),
            np.asarray(Image.open(tmp_path / "nifti-out" / b["path"])),
        )


# Issue 17, item 14: an RGB or complex volume is one bad patient, not the end of the batch.
def test_rgb_and_complex_volumes_are_reported_and_the_other_patients_written(lits_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for pid in (0, 1, 2):
        for stem in ("volume", "segmentation"):
            shutil.copy(lits_dir / f"{stem}-{pid}.nii.gz", inputs / f"{stem}-{pid}.nii.gz")
    ct = nib.load(lits_dir / "volume-3.nii.gz")
    hu = np.asanyarray(ct.dataobj)
    rgb = np.zeros(hu.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, ct.affine), inputs / "volume-3.nii.gz")
    nib.save(nib.Nifti1Image(hu.astype(np.complex64), ct.affine), inputs / "volume-4.nii.gz")
    for pid in (3, 4):
        shutil.copy(lits_dir / "segmentation-3.nii.gz", inputs / f"segmentation-{pid}.nii.gz")
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=2)
    report = prepare_dataset(inputs, tmp_path / "out", options, workers=2)
    failed = {Path(path).name: message for path, message in report.failures}
    assert set(failed) == {"volume-3.nii.gz", "volume-4.nii.gz"}
    assert "RGB" in failed["volume-3.nii.gz"] and "complex" in failed["volume-4.nii.gz"]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"patient_id": str})
    assert sorted(manifest["patient_id"].unique()) == ["0", "1", "2"]
    written = sorted(p.name for p in (tmp_path / "out" / "slices").iterdir())
    assert written == ["patient-0", "patient-1", "patient-2"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == written


# Issue 17, item 9: a volume without a voxel size is refused unless the user gives it.
def test_ct_prepare_refuses_zero_pixdim_unless_spacing_mm_is_given(phantom, tmp_path):
    from typer.testing import CliRunner

    from oncoscope.cli import app
    from oncoscope.ct.phantom import write_lits_pair

    inputs = tmp_path / "in"
    write_lits_pair(phantom, inputs, 0)
    for stem in ("volume-0", "segmentation-0"):
        image = nib.load(inputs / f"{stem}.nii.gz")
        stripped = nib.Nifti1Image(np.asanyarray(image.dataobj), None)
        stripped.header["pixdim"][1:4] = 0.0
        stripped.header.set_qform(None, code=0)
        stripped.header.set_sform(None, code=0)
        nib.save(stripped, inputs / f"{stem}.nii.gz")
    runner = CliRunner()
    base = ["ct", "prepare", str(inputs), "--split", "1:0:0"]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert f"error: {inputs / 'volume-0.nii.gz'}: voxel spacing" in refused.output
    assert "--spacing-mm" in refused.output
    assert not (tmp_path / "refused" / "manifest.csv").exists()
    spacing = ",".join(str(s) for s in phantom.spacing_mm)
    given = runner.invoke(app, [*base, "--out", str(tmp_path / "given"), "--spacing-mm", spacing])
    assert given.exit_code == 0, given.output
    manifest = pd.read_csv(tmp_path / "given" / "manifest.csv")
    assert manifest["slice_mm"].iloc[0] == pytest.approx(phantom.spacing_mm[0])
    assert manifest["row_mm"].iloc[0] == pytest.approx(phantom.spacing_mm[1])
    assert manifest["col_mm"].iloc[0] == pytest.approx(phantom.spacing_mm[2])


# Issue 17, item 13 (CT part): a full disk is one line naming the file, nothing half-written,
# and the batch stops with the patients not done listed.
def test_a_full_disk_stops_ct_prepare_cleanly_naming_the_file(lits_dir, tmp_path, monkeypatch):
    import errno

    from PIL import Image as PILImage
    from typer.testing import CliRunner

    from oncoscope.cli import app

    out = tmp_path / "out"
    real_save = PILImage.Image.save
    budget = {"files": 0}

    def save_until_full(self, fp, *args, **kwargs):
        if "patient-2" in str(fp):  # the disk fills up during patient 2, mid-file
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        budget["files"] += 1
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", save_until_full)
    result = CliRunner().invoke(app, ["ct", "prepare", str(lits_dir), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    errors = [line.strip() for line in result.output.splitlines() if "error:" in line]
    full = [line for line in errors if "No space" in line and "not done" not in line]
    assert len(full) == 1 and full[0].startswith(f"error: {out / 'slices' / 'patient-2'}/slice-")
    not_done = sorted(line for line in errors if "not done" in line)
    assert [Path(line.split(": ")[1]).name for line in not_done] == [
        "volume-3.nii.gz",
        "volume-4.nii.gz",
    ]
    assert budget["files"] > 0
    # nothing half-written: no partial folders or files, patients 0 and 1 complete
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".partial")]
    assert leftovers == []
    assert sorted(p.name for p in (out / "slices").iterdir()) == ["patient-0", "patient-1"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["patient-0", "patient-1"]
    for folder in (out / "slices").iterdir():
        for png in folder.iterdir():
            PILImage.open(png).verify()


def test_a_full_disk_in_another_command_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno

    import nibabel
    from typer.testing import CliRunner

    from oncoscope.cli import app

    def full(image, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(nibabel, "save", full)
    out = tmp_path / "ph"
    args = ["ct", "phantom", "--patients", "1", "--slices", "8", "--size", "32", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/")
    assert lines[0].endswith(": No space left on device")
    assert not [p for p in out.rglob("*") if p.is_file()]
