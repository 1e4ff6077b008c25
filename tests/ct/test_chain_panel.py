from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
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
    from oncoscope.ct.chain_panel import load_slice_with_reference

    with pytest.raises(InvalidVolumeError, match=rf"{name}: mask {problem}"):
        load_slice_with_reference(volume, 12, PRESETS["liver"], mask)


def test_a_mask_on_the_volume_grid_gives_the_slice_liver(lits_dir):
    from oncoscope.ct.chain_panel import load_slice_with_reference

    *_, reference = load_slice_with_reference(
        lits_dir / "volume-1.nii.gz", 12, PRESETS["liver"], lits_dir / "segmentation-1.nii.gz"
    )
    seg = nib.as_closest_canonical(nib.load(lits_dir / "segmentation-1.nii.gz"))
    expected = (np.asanyarray(seg.dataobj)[:, :, 12] >= 1).T[::-1, ::-1]
    np.testing.assert_array_equal(reference, expected)


# Issue 15, EM lesion segmentation: the seed's step figure over several slices.
def _phantom_pair(tmp_path, *, blank_slice=None, seed=4):
    from oncoscope.ct.phantom import make_phantom, write_lits_pair
    from tests.conftest import SMALL_SHAPE

    phantom = make_phantom((25.0,), shape=SMALL_SHAPE, seed=seed)
    if blank_slice is not None:
        phantom.hu[blank_slice] = -1000  # no body: the EM liver ROI finds nothing
    volume, segmentation = write_lits_pair(phantom, tmp_path / "pair", 0)
    return phantom, volume, segmentation


def test_ct_preprocess_slices_spread_over_the_liver_give_one_panel(tmp_path):
    phantom, volume, segmentation = _phantom_pair(tmp_path)
    out = tmp_path / "out"
    args = ["ct", "preprocess", str(volume), "--slices", "3", "--mask", str(segmentation)]
    result = runner.invoke(app, [*args, "--size", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "panel.json").read_text())
    chosen = [row["slice"] for row in record["slices"]]
    liver_slices = np.flatnonzero((phantom.labels >= 1).any(axis=(1, 2)))
    assert len(set(chosen)) == 3 and all(k in liver_slices for k in chosen)
    assert chosen[0] - liver_slices[0] < liver_slices[-1] - chosen[-1] + 3  # spread, not bunched
    assert chosen[-1] - chosen[0] >= (liver_slices[-1] - liver_slices[0]) / 2
    assert record["steps"][-1] == "segmented" and record["steps"][0] == "input"
    for k in chosen:
        assert (out / f"slice-{k:04d}" / "07_segmented.png").is_file()
    tall = Image.open(out / "panel.png").size[1]
    single = tmp_path / "one"
    args = ["ct", "preprocess", str(volume), "--slice", str(chosen[1]), "--size", "64"]
    assert runner.invoke(app, [*args, "--out", str(single)]).exit_code == 0
    assert tall > 2.5 * Image.open(single / "panel.png").size[1] * 0.9  # a row per slice


def test_ct_preprocess_segmentation_step_finds_the_lesion(tmp_path):
    from oncoscope.ct.chain_panel import ChainOptions, run_chain

    # seed 1: the lesion lies inside the liver (with seed 4 it cuts the liver's edge, and the
    # EM liver ROI, which fills holes but not notches, leaves it out)
    phantom, _, _ = _phantom_pair(tmp_path, seed=1)
    (lesion,) = phantom.lesions
    d, h, w = (
        int(v) for v in np.round(np.linalg.inv(phantom.affine) @ [*lesion.centre_mm, 1.0])[:3]
    )
    result = run_chain(
        phantom.hu[d], phantom.spacing_mm[1:], PRESETS["liver"], ChainOptions(size_px=None)
    )
    assert result.steps["segmented"][h, w] == 1.0
    truth = phantom.labels[d] == 2
    found = result.steps["segmented"] > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.85  # measured 0.96


def test_ct_preprocess_reports_an_empty_roi_per_slice(tmp_path):
    _, volume, _ = _phantom_pair(tmp_path, blank_slice=10)
    out = tmp_path / "out"
    args = ["ct", "preprocess", str(volume), "--slice", "10", "--slice", "12", "--size", "64"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "slice 10: liver ROI is empty" in result.output
    assert "slice 12: liver ROI is empty" not in result.output
    record = json.loads((out / "panel.json").read_text())
    assert [(r["slice"], r["roi_empty"]) for r in record["slices"]] == [(10, True), (12, False)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slice", "3", "--slices", "2"], "not both"),
        (["--slices", "2", "--image"], "--slices needs a volume"),
        (["--slice", "3", "--slice", "4", "--image"], "several slices need a volume"),
        (["--slice", "3", "--slice", "99"], "--slice 99 is outside"),
        (["--phase", "bright"], "--phase 'bright'"),
    ],
)
def test_ct_preprocess_bad_slice_options(tmp_path, extra, message):
    _, volume, _ = _phantom_pair(tmp_path)
    source = volume
    if "--image" in extra:
        extra = [e for e in extra if e != "--image"]
        source = tmp_path / "slice.png"
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(source)
    out = tmp_path / "out"
    result = runner.invoke(app, ["ct", "preprocess", str(source), *extra, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("error: ")
    assert not out.exists()
