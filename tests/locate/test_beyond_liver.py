"""Candidates that reach into the liver are kept whole up to ``beyond_liver_mm`` outside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncoscope.locate.candidates import liver_candidate_mask, slice_candidates


def _edge() -> tuple[np.ndarray, np.ndarray]:
    """A liver filling columns 0-49 and a hot band over columns 40-69 of rows 10-19, plus a hot
    square (rows 30-35, columns 52-57) that lies outside the liver and touches nothing."""
    liver = np.zeros((40, 80), bool)
    liver[:, :50] = True
    hot = np.zeros_like(liver)
    hot[10:20, 40:70] = True
    hot[30:36, 52:58] = True
    return hot, liver


@pytest.mark.parametrize(("beyond_mm", "last_col"), [(0.0, 49), (4.0, 51), (10.0, 54), (100.0, 69)])
def test_a_piece_reaching_into_the_liver_is_kept_up_to_the_distance(
    beyond_mm: float, last_col: int
) -> None:
    hot, liver = _edge()
    kept = liver_candidate_mask(hot, liver, beyond_mm, (1.5, 2.0))
    # column c lies (c - 49) x 2 mm from the nearest liver pixel (columns are 2 mm wide)
    expected = np.zeros_like(hot)
    expected[10:20, 40 : last_col + 1] = True
    np.testing.assert_array_equal(kept, expected)


def test_a_piece_outside_the_liver_is_never_a_candidate() -> None:
    hot, liver = _edge()
    for beyond_mm in (0.0, 10.0, 100.0):
        assert not liver_candidate_mask(hot, liver, beyond_mm, (1.0, 1.0))[30:36, 52:58].any()


def test_slice_candidates_measure_the_kept_piece() -> None:
    hot, liver = _edge()
    heat = hot * 0.9
    _, cut = slice_candidates(heat, liver, 0.99, threshold=0.5, min_prob=0.5, pixel_mm=(1.0, 1.0))
    _, whole = slice_candidates(
        heat, liver, 0.99, threshold=0.5, min_prob=0.5, pixel_mm=(1.0, 1.0), beyond_liver_mm=50.0
    )
    assert [c.area_px for c in cut] == [10 * 10]
    assert [c.area_px for c in whole] == [10 * 30]
    assert whole[0].diameter_mm == pytest.approx(np.hypot(10, 30))


def test_the_command_line_default_is_the_library_default() -> None:
    import typer

    from oncoscope.cli import app
    from oncoscope.locate.run import LocateOptions

    command = typer.main.get_command(app).commands["locate"]  # type: ignore[attr-defined]
    default = next(p.default for p in command.params if p.name == "beyond_liver_mm")
    assert default == LocateOptions().beyond_liver_mm


def test_a_negative_distance_is_refused_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oncoscope.cli import app

    result = CliRunner().invoke(
        app,
        ["locate", str(tmp_path / "none.ckpt"), str(tmp_path / "v.nii.gz"), "--threshold", "0.5",
         "--beyond-liver-mm", "-1", "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 2 and "--beyond-liver-mm" in result.output


def test_the_library_refuses_a_distance_that_is_not_a_finite_number_of_mm(
    tmp_path: Path,
) -> None:
    from oncoscope.errors import InvalidOptionError
    from oncoscope.locate.run import LocateOptions, locate

    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidOptionError, match="--beyond-liver-mm"):
            locate(tmp_path / "none.ckpt", [], tmp_path / "o", LocateOptions(beyond_liver_mm=bad))


def test_a_distance_given_with_a_liver_mask_is_refused_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oncoscope.cli import app

    result = CliRunner().invoke(
        app,
        ["locate", str(tmp_path / "none.ckpt"), str(tmp_path / "v.nii.gz"), "--threshold", "0.5",
         "--liver-mask", str(tmp_path / "s.nii.gz"), "--beyond-liver-mm", "5",
         "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--liver-mask is exact" in lines[0]


def test_candidates_stop_at_the_edge_of_a_given_liver_mask(
    hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    """Two 24 mm lesions; the given liver stops at x = 161.5 mm, through the second one: its
    map goes on beyond, the candidates do not (the default distance is for the EM ROI only)."""
    import nibabel as nib

    from oncoscope.locate.run import LocateOptions, locate
    from tests.locate.test_joined import _pair

    volume, segmentation = _pair(tmp_path / "in", seam_hu=23.6, seam_is_lesion=False)
    image = nib.load(segmentation)
    labels = np.asarray(image.dataobj).copy()  # (x, y, z), 2.375 mm columns
    labels[68:] = 0
    cut = tmp_path / "in" / "liver-cut.nii.gz"
    nib.save(nib.Nifti1Image(labels, image.affine), cut)
    options = LocateOptions(threshold=0.5, method="cam", liver_mask=cut)
    assert options.beyond_liver_mm > 0
    report = locate(hypodense_checkpoint, [volume], tmp_path / "out", options)
    assert report.failures == []
    found = np.asarray(nib.load(tmp_path / "out" / "volume-1" / "candidates.nii.gz").dataobj) > 0
    assert found.any() and not (found & (labels == 0)).any()
    assert found[67].any()  # the candidate reaches the mask's edge
