"""``ct prepare --denoise/--roi``: the seed-001 chain on every written slice, its record, its
ROI Dice, empty ROIs, and the refusal of a manifest made with another chain than a checkpoint's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

import oncoscope.ct.liver_roi as liver_roi_module
from oncoscope.cli import app
from oncoscope.ct.chain import SliceChain, apply_chain, check_manifest_chain, parse_denoise
from oncoscope.ct.liver_roi import liver_roi_em
from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import PRESETS
from oncoscope.errors import InvalidOptionError, ManifestError
from oncoscope.models.spec import ModelSpec
from tests.conftest import canonical_ras, radiological

LIVER = PRESETS["liver"]  # [-100, 200] HU


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str, "group": str, "chain": str})


def _hand_slice(lits_dir: Path, pid: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(HU slice, liver label) in the radiological view, read with nibabel."""
    ct, _ = canonical_ras(lits_dir / f"volume-{pid}.nii.gz")
    seg, _ = canonical_ras(lits_dir / f"segmentation-{pid}.nii.gz")
    hu = radiological(ct[:, :, k]).astype(np.float32)
    return hu, radiological(seg[:, :, k]) >= 1


def _window_png(hu: np.ndarray) -> np.ndarray:
    """The liver window in float32, as 8 bits (the same arithmetic order as any windowing)."""
    unit = np.clip((hu - np.float32(-100.0)) / np.float32(300.0), 0.0, 1.0)
    rounded: np.ndarray = np.round(unit * 255.0).astype(np.uint8)
    return rounded


def _hand_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def masked(lits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chain-mask")
    chain = SliceChain(median_size_px=3, roi="mask")
    options = PrepareOptions(windows=(LIVER,), healthy_per_patient=2, chain=chain)
    report = prepare_dataset(lits_dir, out, options)
    assert report.failures == [] and report.manifest is not None
    return out


def test_the_mask_chain_writes_the_hand_computed_pixels(masked, lits_dir):
    manifest = _read(masked / "manifest.csv")
    changed = 0
    for _, row in manifest.iterrows():
        hu, liver = _hand_slice(lits_dir, row["patient_id"], int(row["slice_index"]))
        denoised = ndimage.median_filter(hu, size=3, mode="reflect")
        expected = _window_png(np.where(liver, denoised, np.float32(-100.0)))
        written = np.asarray(Image.open(masked / row["path"]))
        np.testing.assert_array_equal(written, expected)
        assert (written[~liver] == 0).all()  # outside the liver: black
        changed += int((written != _window_png(hu)).any())
    assert changed == len(manifest)  # the chain changed every slice


def test_the_chain_is_recorded_in_the_manifest_and_prepare_json(masked):
    manifest = _read(masked / "manifest.csv")
    record = {"denoise": "median:3", "roi": "mask", "outside_roi": "window low end"}
    assert {json.loads(v) == record for v in manifest["chain"]} == {True}
    assert manifest["roi_dice"].isna().all()  # only the EM ROI is scored
    assert not manifest["roi_empty"].any()
    written = json.loads((masked / "prepare.json").read_text())
    assert written["chain"] == record
    assert written["options"]["chain"]["median_size_px"] == 3
    assert written["roi_dice"] is None and written["empty_roi"] == []


def test_the_em_chain_scores_its_roi_against_the_liver_label(lits_dir, tmp_path):
    options = PrepareOptions(
        windows=(LIVER,), healthy_per_patient=1, chain=SliceChain(median_size_px=3, roi="em")
    )
    prepare_dataset(lits_dir, tmp_path, options)
    manifest = _read(tmp_path / "manifest.csv")
    for _, row in manifest.sample(5, random_state=0).iterrows():
        hu, liver = _hand_slice(lits_dir, row["patient_id"], int(row["slice_index"]))
        denoised = ndimage.median_filter(hu, size=3, mode="reflect")
        roi = liver_roi_em(denoised, (row["row_mm"], row["col_mm"]), seed=0)
        assert roi.any()
        expected = _window_png(np.where(roi, denoised, np.float32(-100.0)))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / row["path"])), expected)
        assert row["roi_dice"] == pytest.approx(_hand_dice(roi, liver), abs=1e-4)
    record = json.loads((tmp_path / "prepare.json").read_text())
    scores = manifest["roi_dice"].to_numpy()
    summary = record["roi_dice"]
    assert summary["slices"] == len(manifest)
    assert summary["min"] == pytest.approx(scores.min(), abs=1e-4)
    assert summary["median"] == pytest.approx(np.median(scores), abs=1e-3)
    assert summary["mean"] == pytest.approx(scores.mean(), abs=1e-3)
    assert summary["below_0.5"] == int((scores < 0.5).sum())
    assert json.loads(manifest["chain"].iloc[0])["em"] == {
        "components": 4,
        "opening_mm": 7.0,
        "seed": 0,
    }


def _empty_for_first(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """The EM ROI comes out empty on the first ``count`` slices it is asked for."""
    real, calls = liver_roi_em, [0]

    def fake(hu, pixel_mm=(1.0, 1.0), **kw):
        calls[0] += 1
        roi = real(hu, pixel_mm, **kw)
        return np.zeros_like(roi) if calls[0] <= count else roi

    monkeypatch.setattr(liver_roi_module, "liver_roi_em", fake)


@pytest.mark.parametrize("action", ["keep", "drop"])
def test_empty_roi_slices_are_kept_unmasked_or_dropped(action, lits_dir, tmp_path, monkeypatch):
    _empty_for_first(monkeypatch, 2)
    cli = CliRunner().invoke(
        app,
        [
            "ct", "prepare", str(lits_dir), "--out", str(tmp_path), "--healthy-per-patient", "1",
            "--denoise", "median", "--roi", "em", "--on-empty-roi", action,
        ],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    record = json.loads((tmp_path / "prepare.json").read_text())
    events = record["empty_roi"]
    assert len(events) == 2 and {e["patient_id"] for e in events} == {"0"}
    manifest = _read(tmp_path / "manifest.csv")
    written = set(manifest.loc[manifest["patient_id"] == "0", "slice_index"])
    for event in events:
        k = event["slice_index"]
        assert f"slice {k}: liver ROI is empty on this slice" in cli.output
        if action == "drop":
            assert event["action"] == "dropped" and k not in written
            assert not (tmp_path / f"slices/patient-0/slice-{k:04d}.png").exists()
        else:
            assert event["action"] == "kept unmasked" and k in written
            row = manifest[(manifest["patient_id"] == "0") & (manifest["slice_index"] == k)]
            assert bool(row["roi_empty"].iloc[0]) and row["roi_dice"].iloc[0] == 0.0
            hu, _ = _hand_slice(lits_dir, "0", k)
            unmasked = _window_png(ndimage.median_filter(hu, size=3, mode="reflect"))
            png = Image.open(tmp_path / row["path"].iloc[0])
            np.testing.assert_array_equal(np.asarray(png), unmasked)
    assert record["roi_dice"]["slices"] == len(manifest) + (2 if action == "drop" else 0)
    assert record["roi_dice"]["below_0.5"] >= 2
    assert "EM liver ROI vs liver label, Dice over" in cli.output


def test_roi_mask_without_a_liver_label_is_a_one_line_error(lits_dir, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(lits_dir, folder)
    seg_path = folder / "segmentation-2.nii.gz"
    seg = nib.load(seg_path)
    labels = np.asanyarray(seg.dataobj).copy()
    labels[labels == 1] = 0  # tumour annotated, liver not
    nib.save(nib.Nifti1Image(labels, seg.affine, seg.header), seg_path)
    base = ["ct", "prepare", str(folder), "--healthy-per-patient", "1"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--roi", "mask"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "segmentation-2" in line]
    assert len(lines) == 1 and "--roi mask needs the liver label (1)" in lines[0]
    manifest = _read(tmp_path / "o" / "manifest.csv")
    assert "2" not in set(manifest["patient_id"]) and len(set(manifest["patient_id"])) == 4
    # without a chain needing it, that segmentation is fine
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--denoise", "median"])
    assert result.exit_code == 0, result.output


def test_bad_chain_options_are_one_line_errors(lits_dir, tmp_path):
    for flags, message in (
        (["--roi", "liver"], "--roi 'liver' is not one of none, em, mask"),
        (["--denoise", "median:4"], "odd"),
        (["--denoise", "gauss"], "not none, median or median:SIZE"),
        (["--on-empty-roi", "skip"], "keep or drop"),
    ):
        result = CliRunner().invoke(
            app, ["ct", "prepare", str(lits_dir), "--out", str(tmp_path / "x"), *flags]
        )
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "x" / "manifest.csv").exists()
    assert parse_denoise("median") == 3 and parse_denoise("none") is None
    for chain in (SliceChain(), SliceChain(5, "mask"), SliceChain(3, "em", 3, 5.0, seed=2)):
        assert SliceChain.from_record(chain.record()) == chain
    with pytest.raises(InvalidOptionError, match="liver label"):
        apply_chain(np.zeros((8, 8)), SliceChain(roi="mask"), fill_hu=-100.0)


def test_a_rerun_with_another_chain_keeps_no_old_slice(lits_dir, tmp_path):
    out = tmp_path / "out"
    first = PrepareOptions(windows=(LIVER,), healthy_per_patient=1)
    prepare_dataset(lits_dir, out, first)
    stale = out / "slices" / "patient-9"  # as if patient 9 had been prepared before and now fails
    shutil.copytree(out / "slices" / "patient-0", stale)
    chained = PrepareOptions(
        windows=(LIVER,), healthy_per_patient=1, chain=SliceChain(median_size_px=3, roi="mask")
    )
    report = prepare_dataset(lits_dir, out, chained)
    assert not stale.exists()
    assert len(report.notes) == 1 and "median:3" in report.notes[0]
    assert "removed" in report.notes[0] and "none" in report.notes[0]
    assert json.loads((out / "prepare.json").read_text())["notes"] == report.notes
    # the same chain again: nothing removed, nothing said
    again = prepare_dataset(lits_dir, out, chained)
    assert again.notes == []


def test_mixed_chains_in_one_manifest_are_refused_at_training(masked, tmp_path):
    from oncoscope.train.data import load_training_data

    manifest = _read(masked / "manifest.csv")
    manifest["path"] = [str(masked / p) for p in manifest["path"]]
    manifest.loc[manifest.index[:3], "chain"] = ""
    manifest.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ManifestError, match="different chains"):
        load_training_data(tmp_path / "mixed.csv", 32)


def test_a_checkpoint_trained_with_the_chain_refuses_a_manifest_without_it(lits_dir, tmp_path):
    from oncoscope.train.checkpoint import read_checkpoint

    runner = CliRunner()
    data = tmp_path / "data"
    prepared = runner.invoke(
        app,
        [
            "ct", "prepare", str(lits_dir), "--out", str(data), "--healthy-per-patient", "2",
            "--size", "32", "--denoise", "median:3", "--roi", "mask",
        ],
    )  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    trained = runner.invoke(
        app,
        [
            "train", "--data", str(data / "manifest.csv"), "--model", "simple_cnn",
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--precision", "fp32",
            "--out", str(tmp_path / "run"),
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    spec = read_checkpoint(checkpoint)["spec"]
    assert spec["preprocessing"]["ct_chain"] == {
        "denoise": "median:3",
        "roi": "mask",
        "outside_roi": "window low end",
    }
    check_manifest_chain(ModelSpec.from_dict(spec), data / "manifest.csv")  # its own data passes
    plain = data / "plain.csv"  # the same slices, recorded without a chain
    frame = pd.read_csv(data / "manifest.csv")
    frame.drop(columns=["chain"]).to_csv(plain, index=False)
    for command in (
        ["evaluate", str(checkpoint), "--data", str(plain), "--out", str(tmp_path / "ev")],
        ["explain", str(checkpoint), "--data", str(plain), "--out", str(tmp_path / "ex")],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "plain.csv" in lines[0]
        assert "chain none" in lines[0] and "chain denoise median:3, roi mask" in lines[0]
        assert not (tmp_path / "ev" / "metrics.json").exists()
