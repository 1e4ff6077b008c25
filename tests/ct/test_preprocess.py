from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.ct.window import PRESETS
from oncoscope.errors import InvalidVolumeError

runner = CliRunner()


def _regridded(lits_dir, tmp_path, name, *, shape=None, shift_mm=0.0):
    """The phantom's segmentation on another grid: resampled to ``shape`` or shifted."""
    image = nib.load(lits_dir / "segmentation-1.nii.gz")
    labels = np.asanyarray(image.dataobj)
    affine = image.affine.copy()
    if shape is not None:
        step = labels.shape[0] // shape[0], labels.shape[1] // shape[1], 1
        labels = labels[:: step[0], :: step[1], :]
        affine[:3, :3] = affine[:3, :3] @ np.diag(step)
    affine[:3, 3] += shift_mm
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels), affine), path)
    return path


# Issue 17, item 10: a reference mask on another grid is not another slice of the same anatomy.
@pytest.mark.parametrize(
    ("name", "shape", "shift_mm", "problem"),
    [("half.nii.gz", (64, 64), 0.0, "shape"), ("shifted.nii.gz", None, 50.0, "affine")],
)
def test_ct_preprocess_refuses_a_mask_on_another_grid(
    lits_dir, tmp_path, name, shape, shift_mm, problem
):
    mask = _regridded(lits_dir, tmp_path, name, shape=shape, shift_mm=shift_mm)
    volume = lits_dir / "volume-1.nii.gz"
    out = tmp_path / "out"
    args = ["ct", "preprocess", str(volume), "--slice", "12", "--mask", str(mask)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"error: {mask}: mask {problem}" in result.output
    assert not out.exists()  # refused before anything is written
    from oncoscope.ct.preprocess import load_slice_with_reference

    with pytest.raises(InvalidVolumeError, match=rf"{name}: mask {problem}"):
        load_slice_with_reference(volume, 12, PRESETS["liver"], mask)


def test_a_mask_on_the_volume_grid_gives_the_slice_liver(lits_dir):
    from oncoscope.ct.preprocess import load_slice_with_reference

    *_, reference = load_slice_with_reference(
        lits_dir / "volume-1.nii.gz", 12, PRESETS["liver"], lits_dir / "segmentation-1.nii.gz"
    )
    seg = nib.as_closest_canonical(nib.load(lits_dir / "segmentation-1.nii.gz"))
    expected = (np.asanyarray(seg.dataobj)[:, :, 12] >= 1).T[::-1, ::-1]
    np.testing.assert_array_equal(reference, expected)
