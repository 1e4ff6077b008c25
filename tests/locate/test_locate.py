"""``oncoscope locate`` on phantoms with known lesions, read by a hand-made slice classifier."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.ct.chain import SliceChain
from oncoscope.ct.couinaud import couinaud
from oncoscope.ct.phantom import Phantom, write_lits_pair
from oncoscope.ct.slice_dataset import Case, PrepareOptions, prepare_case
from oncoscope.ct.window import PRESETS
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.io.volumes import read_label_mask, read_volume
from oncoscope.locate.model_input import CTModelInput, ct_model_input, model_pixels
from oncoscope.locate.run import LocateOptions, locate
from oncoscope.models.spec import ModelSpec
from oncoscope.train.checkpoint import write_checkpoint
from tests.io.test_volumes import _dicom_series
from tests.locate.conftest import SIZE_PX, hypodense_model_spec

runner = CliRunner()


def _diagonal_mm(phantom: Phantom) -> tuple[float, float]:
    """The voxel diagonal (3-D) and the pixel diagonal (in-plane), in mm."""
    d, h, w = phantom.spacing_mm
    return float(np.sqrt(d * d + h * h + w * w)), float(np.sqrt(h * h + w * w))


@pytest.fixture(scope="module")
def pair(dark_phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dark phantom as volume-1 / segmentation-1 (+ phantom-1.json), stored LPS."""
    return write_lits_pair(dark_phantom, tmp_path_factory.mktemp("lits"), 1, orientation="LPS")


@pytest.fixture(scope="module")
def located(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """locate with the true liver and the phantom's landmarks, threshold 0.5."""
    volume, segmentation = pair
    out = tmp_path_factory.mktemp("located")
    options = LocateOptions(
        threshold=0.5,
        method="cam",
        liver_mask=segmentation,
        landmarks=volume.parent / "phantom-1.json",
        truth=segmentation,
    )
    report = locate(hypodense_checkpoint, [volume], out, options)
    assert report.failures == []
    return out


def test_locate_finds_each_lesion_at_its_place_size_and_segment(
    located: Path, pair: tuple[Path, Path], dark_phantom: Phantom
) -> None:
    volume, segmentation = pair
    table = pd.read_csv(located / "candidates.csv")
    assert len(table) == len(dark_phantom.lesions)  # nothing else in the liver is that dark
    diagonal, in_plane = _diagonal_mm(dark_phantom)
    # the truth: the lesions as drawn, and their segments by `ct couinaud` on the true masks
    segments = couinaud(volume, segmentation, landmarks_path=volume.parent / "phantom-1.json")
    for drawn in dark_phantom.lesions:
        distance = np.linalg.norm(
            table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
            - np.asarray(drawn.centre_mm),
            axis=1,
        )
        found = table.iloc[int(distance.argmin())]
        assert distance.min() <= diagonal
        assert abs(found["diameter_mm"] - drawn.diameter_mm) <= in_plane
        truth = min(
            segments.lesions,
            key=lambda t: np.linalg.norm(np.asarray(t.centroid_mm) - drawn.centre_mm),
        )
        assert found["segment"] == truth.segment
        assert found["segment_method"] == "landmarks"
        assert found["small"] == (found["diameter_mm"] <= 20.0)
    record = json.loads((located / "locate.json").read_text())
    assert record["threshold"] == 0.5 and record["threshold_source"] == "--threshold"
    detection = record["detection"]["froc"][0]
    assert detection["sensitivity"]["value"] == 1.0
    assert detection["false_positives_per_volume"]["value"] == 0.0


def test_a_given_liver_records_no_distance_beyond_it(located: Path) -> None:
    settings = json.loads((located / "volume-1" / "status.json").read_text())["settings"]
    assert settings["beyond_liver_mm"] is None


def test_the_label_map_lies_on_the_input_grid_with_its_affine(
    located: Path, pair: tuple[Path, Path], dark_phantom: Phantom
) -> None:
    volume, _ = pair
    stored = nib.load(volume)
    labels = nib.load(located / "volume-1" / "candidates.nii.gz")
    np.testing.assert_allclose(labels.affine, stored.affine, atol=1e-4)
    assert labels.shape == stored.shape
    data = np.asarray(labels.dataobj)
    for drawn in dark_phantom.lesions:
        index = np.rint(np.linalg.inv(stored.affine) @ [*drawn.centre_mm, 1.0])[:3].astype(int)
        assert data[tuple(index)] > 0
    assert len(np.unique(data)) == len(dark_phantom.lesions) + 1
    overlays = sorted((located / "volume-1" / "overlays").glob("slice-*.png"))
    assert overlays and Image.open(overlays[0]).mode == "RGB"


def test_the_em_liver_roi_finds_the_lesions_too(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, dark_phantom: Phantom, tmp_path: Path
) -> None:
    volume, _ = pair
    report = locate(
        hypodense_checkpoint, [volume], tmp_path, LocateOptions(threshold=0.5, method="cam")
    )
    assert report.failures == []
    table = pd.read_csv(tmp_path / "candidates.csv")
    centres = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    diagonal, _ = _diagonal_mm(dark_phantom)
    for drawn in dark_phantom.lesions:
        assert np.linalg.norm(centres - drawn.centre_mm, axis=1).min() <= diagonal
    assert set(table["segment_method"]) == {"approximate"}
    summary = json.loads((tmp_path / "locate.json").read_text())["inputs"]["volume-1"]
    assert summary["couinaud"]["approximate"] is True
    assert "EM" in summary["liver"]
    settings = json.loads((tmp_path / "volume-1" / "status.json").read_text())["settings"]
    assert settings["beyond_liver_mm"] == LocateOptions().beyond_liver_mm > 0


@pytest.mark.parametrize("codes", ["RAS", "SLP"])
def test_a_flipped_or_permuted_volume_gives_the_same_candidates_in_patient_mm(
    codes: str,
    located: Path,
    dark_phantom: Phantom,
    hypodense_checkpoint: Path,
    tmp_path: Path,
) -> None:
    volume, segmentation = write_lits_pair(dark_phantom, tmp_path / "data", 1, orientation=codes)
    options = LocateOptions(threshold=0.5, method="cam", liver_mask=segmentation)
    report = locate(hypodense_checkpoint, [volume], tmp_path / "out", options)
    assert report.failures == []
    columns = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "diameter_mm", "volume_ml"]
    reference = pd.read_csv(located / "candidates.csv")[columns].sort_values(columns)
    moved = pd.read_csv(tmp_path / "out" / "candidates.csv")[columns].sort_values(columns)
    np.testing.assert_allclose(moved.to_numpy(), reference.to_numpy(), atol=1e-2)
    labels = nib.load(tmp_path / "out" / "volume-1" / "candidates.nii.gz")
    np.testing.assert_allclose(labels.affine, nib.load(volume).affine, atol=1e-4)
    assert nib.aff2axcodes(labels.affine) == tuple(codes)


def test_slices_are_the_pixels_of_ct_prepare_pngs(dark_phantom: Phantom, tmp_path: Path) -> None:
    volume_path, mask = write_lits_pair(dark_phantom, tmp_path / "lits", 1)
    volume = read_volume(volume_path)
    for size_px in (None, 96):
        options = PrepareOptions(
            windows=(PRESETS["liver"],), size_px=size_px, healthy_per_patient=2
        )
        out = tmp_path / f"prepared-{size_px}"
        result = prepare_case(Case("1", volume_path, mask), out, options)
        spec = ModelSpec(
            "m", ("tumour",), 1, size_px or SIZE_PX, (0.5,), (0.25,), ct_windows=(PRESETS["liver"],)
        )
        model_input = CTModelInput(spec, (PRESETS["liver"],), SliceChain(), 0)
        for row in result.rows[:4]:
            written = np.asarray(Image.open(out / row["path"]))
            made = model_pixels(volume.array[row["slice_index"]], model_input)
            np.testing.assert_array_equal(made, written)


def test_slice_pngs_and_a_manifest_are_located_with_their_spacing(
    dark_phantom: Phantom, hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume_path, mask = write_lits_pair(dark_phantom, tmp_path / "lits", 1)
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=2)
    result = prepare_case(Case("1", volume_path, mask), tmp_path / "prep", options)
    rows = [dict(r, split="test") for r in result.rows]
    widest = max(rows, key=lambda r: r["max_section_mm"])
    rows = [widest, rows[0], rows[-1]]  # a lesion's widest section and two others
    pd.DataFrame(rows).to_csv(tmp_path / "prep" / "manifest.csv", index=False)
    report = locate(
        hypodense_checkpoint,
        [],
        tmp_path / "out",
        LocateOptions(threshold=0.5, method="cam"),
        data=tmp_path / "prep" / "manifest.csv",
        split="test",
    )
    assert report.failures == []
    table = pd.read_csv(tmp_path / "out" / "candidates.csv")
    assert set(table["kind"]) == {"slice"}
    key = f"patient-1/{Path(widest['path']).stem}"
    on_widest = table[table["input"] == key]
    # the widest cross-section of a lesion is found with its diameter (within a pixel diagonal)
    assert len(on_widest) >= 1
    pixel = float(np.hypot(widest["row_mm"], widest["col_mm"]))
    assert abs(on_widest["diameter_mm"].max() - widest["max_section_mm"]) <= pixel
    assert (tmp_path / "out" / key / "overlay.png").is_file()


def test_slices_the_model_calls_healthy_get_no_candidates(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    model, spec = hypodense_model_spec(tumour_bias=-100.0)  # never calls a slice tumour
    checkpoint = write_checkpoint(model, spec, tmp_path / "healthy.ckpt")
    volume, segmentation = pair
    options = LocateOptions(threshold=0.5, method="cam", liver_mask=segmentation)
    report = locate(checkpoint, [volume], tmp_path / "out", options)
    assert report.failures == [] and report.rows == []
    slices = pd.read_csv(tmp_path / "out" / "volume-1" / "slices.csv")
    assert (slices["tumour_prob"] < 0.5).all() and (slices["candidates"] == 0).all()


def test_without_a_threshold_locate_refuses_saying_how_to_get_one(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, _ = pair
    result = runner.invoke(
        app, ["locate", str(hypodense_checkpoint), str(volume), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(hypodense_checkpoint) in lines[0]
    assert "evaluate" in lines[0] and "--localization" in lines[0] and "--threshold" in lines[0]
    assert not (tmp_path / "o" / "candidates.csv").exists()


@pytest.mark.parametrize("threshold", ["0", "1", "1.5", "-0.2"])
def test_a_threshold_outside_zero_one_is_refused(
    threshold: str, pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, _ = pair
    result = runner.invoke(
        app,
        ["locate", str(hypodense_checkpoint), str(volume), "--out", str(tmp_path / "o"),
         "--threshold", threshold],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "outside (0, 1)" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_checkpoint_that_is_not_a_ct_slice_classifier_is_refused(tmp_path: Path) -> None:
    model, spec = hypodense_model_spec()
    no_window = {**spec, "preprocessing": {"mpp": 0.5}}
    with pytest.raises(OncoscopeError, match="no CT window"):
        ct_model_input(ModelSpec.from_dict(no_window), tmp_path / "a.ckpt")
    three = {**spec, "in_chans": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(OncoscopeError, match="3-channel"):
        ct_model_input(ModelSpec.from_dict(three), tmp_path / "a.ckpt")
    with pytest.raises(OncoscopeError, match="no 'tumour'"):
        other = {**spec, "classes": ["benign", "malignant"]}
        ct_model_input(ModelSpec.from_dict(other), tmp_path / "a.ckpt")
    checkpoint = write_checkpoint(model, no_window, tmp_path / "histology.ckpt")
    result = runner.invoke(
        app,
        ["locate", str(checkpoint), str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "o"),
         "--threshold", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {checkpoint}: not a CT slice classifier")


def test_bad_inputs_are_reported_in_one_line_each_and_the_others_finish(
    pair: tuple[Path, Path],
    dark_phantom: Phantom,
    hypodense_checkpoint: Path,
    tmp_path: Path,
) -> None:
    volume, _ = pair
    # a volume in which no liver is found: air and fat only
    empty = tmp_path / "volume-9.nii.gz"
    hu = np.full((40, 40, 10), -1000, np.int16)
    hu[5:35, 5:35] = -100
    nib.save(nib.Nifti1Image(hu, np.diag([2.0, 2.0, 4.0, 1.0])), empty)
    # a DICOM folder holding two series
    mixed = tmp_path / "mixed"
    _dicom_series(mixed, [0.0, 2.5, 5.0], generate_uid())
    _dicom_series(mixed, [0.0, 5.0], generate_uid())
    args = ["locate", str(hypodense_checkpoint), str(volume), str(empty), str(mixed)]
    result = runner.invoke(
        app, [*args, "--out", str(tmp_path / "o"), "--threshold", "0.5", "--method", "cam"]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2
    assert any(str(empty) in e and "no liver found" in e for e in errors)
    assert any(str(mixed) in e and "series" in e for e in errors)
    table = pd.read_csv(tmp_path / "o" / "candidates.csv")
    assert set(table["input"]) == {"volume-1"}
    record = json.loads((tmp_path / "o" / "locate.json").read_text())
    assert len(record["failures"]) == 2


def test_truth_on_another_grid_is_refused_naming_it(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = pair
    other = tmp_path / "segmentation-1.nii.gz"
    image = nib.load(segmentation)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :-2], image.affine), other)
    result = runner.invoke(
        app,
        ["locate", str(hypodense_checkpoint), str(volume), "--out", str(tmp_path / "o"),
         "--threshold", "0.5", "--truth", str(other)],
    )  # fmt: skip
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(other) in errors[0] and "shape" in errors[0]


def test_a_rerun_keeps_inputs_done_with_the_same_settings_and_redoes_others(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = pair
    options = LocateOptions(threshold=0.5, method="cam", liver_mask=segmentation)
    first = locate(hypodense_checkpoint, [volume], tmp_path, options)
    again = locate(hypodense_checkpoint, [volume], tmp_path, options)
    assert again.summaries["volume-1"]["skipped"] is True
    assert len(again.rows) == len(first.rows)
    changed = LocateOptions(
        threshold=0.6, method="cam", liver_mask=segmentation, on_mismatch="error"
    )
    refused = locate(hypodense_checkpoint, [volume], tmp_path, changed)
    assert len(refused.failures) == 1 and "threshold 0.5 -> 0.6" in refused.failures[0][1]
    redone = locate(
        hypodense_checkpoint,
        [volume],
        tmp_path,
        LocateOptions(threshold=0.6, method="cam", liver_mask=segmentation),
    )
    assert redone.failures == [] and redone.summaries["volume-1"]["skipped"] is False
    status = json.loads((tmp_path / "volume-1" / "status.json").read_text())
    assert status["settings"]["threshold"] == 0.6


def test_one_liver_mask_for_several_volumes_is_refused(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    volume, segmentation = pair
    with pytest.raises(InvalidOptionError, match="one per volume"):
        locate(
            hypodense_checkpoint,
            [volume, volume],
            tmp_path,
            LocateOptions(threshold=0.5, liver_mask=segmentation),
        )


def test_a_dicom_series_gives_the_candidates_of_its_nifti_twin(
    located: Path,
    pair: tuple[Path, Path],
    dark_phantom: Phantom,
    hypodense_checkpoint: Path,
    tmp_path: Path,
) -> None:
    from tests.io.test_dicom_archives import _write_series

    _write_series(dark_phantom, tmp_path / "series-1")
    _, segmentation = pair
    options = LocateOptions(threshold=0.5, method="cam", liver_mask=segmentation)
    report = locate(hypodense_checkpoint, [tmp_path / "series-1"], tmp_path / "out", options)
    assert report.failures == []
    columns = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "diameter_mm", "volume_ml"]
    reference = pd.read_csv(located / "candidates.csv")[columns].sort_values(columns)
    dicom = pd.read_csv(tmp_path / "out" / "candidates.csv")
    assert set(dicom["input"]) == {"series-1"}
    np.testing.assert_allclose(
        dicom[columns].sort_values(columns).to_numpy(), reference.to_numpy(), atol=1e-2
    )
    labels = nib.load(tmp_path / "out" / "series-1" / "candidates.nii.gz")
    assert nib.aff2axcodes(labels.affine) == ("R", "A", "S")  # a DICOM input: RAS order


def test_volume_slices_go_through_the_checkpoints_chain_as_ct_prepare_wrote_them(
    dark_phantom: Phantom, tmp_path: Path
) -> None:
    """A checkpoint trained on ``ct prepare --denoise median:3 --roi mask`` slices: locate feeds
    the model a new volume's slices through the same chain, pixel for pixel those PNGs."""
    volume_path, mask = write_lits_pair(dark_phantom, tmp_path / "lits", 1)
    volume, labels = read_volume(volume_path), read_label_mask(mask)
    chain = SliceChain(median_size_px=3, roi="mask")
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=2, chain=chain)
    result = prepare_case(Case("1", volume_path, mask), tmp_path / "prepared", options)
    spec = ModelSpec.from_dict(
        {
            **hypodense_model_spec()[1],
            "preprocessing": {"window": "liver", "ct_chain": chain.record()},
        }
    )
    model_input = ct_model_input(spec, tmp_path / "a.ckpt")
    assert model_input.chain == chain
    spacing = volume.spacing_mm
    for row in result.rows[:4]:
        k = int(row["slice_index"])
        liver = np.asarray(labels.array[k]) >= 1
        made = model_pixels(volume.array[k], model_input, liver, (spacing[1], spacing[2]))
        written = np.asarray(Image.open(tmp_path / "prepared" / row["path"]))
        np.testing.assert_array_equal(made, written)
        assert (made[~liver] == 0).all()  # masked to the window's low end, as trained


def test_the_guided_map_locates_each_lesion_near_its_centre(
    pair: tuple[Path, Path], hypodense_checkpoint: Path, dark_phantom: Phantom, tmp_path: Path
) -> None:
    """``--method guided`` through locate: a candidate within one lesion radius (plus a voxel
    diagonal) of every drawn lesion. The hand-made model is flat around its inputs (zero
    gradient), so its guided map is its class map above the median, box-filtered: coarser than
    ``cam``, so only the centres are checked."""
    volume, segmentation = pair
    options = LocateOptions(threshold=0.5, method="guided", liver_mask=segmentation)
    report = locate(hypodense_checkpoint, [volume], tmp_path, options)
    assert report.failures == []
    record = json.loads((tmp_path / "locate.json").read_text())
    assert record["method"] == "guided"
    table = pd.read_csv(tmp_path / "candidates.csv")
    centres = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    diagonal, _ = _diagonal_mm(dark_phantom)
    for drawn in dark_phantom.lesions:
        distance = np.linalg.norm(centres - np.asarray(drawn.centre_mm), axis=1)
        assert distance.min() <= drawn.diameter_mm / 2 + diagonal


def test_one_lits_folder_serves_every_option_for_its_volume(
    located: Path, pair: tuple[Path, Path], hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    """The folder holding volume-1, segmentation-1 and phantom-1.json, given to --liver-mask,
    --truth and --landmarks: each option finds its own file there (not the JSON for a mask,
    not the volume for its truth), so the candidates are those of the files named one by one."""
    volume, _ = pair
    folder = volume.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "phantom-1.json",
        "segmentation-1.nii.gz",
        "volume-1.nii.gz",
    ]
    options = LocateOptions(
        threshold=0.5, method="cam", liver_mask=folder, landmarks=folder, truth=folder
    )
    report = locate(hypodense_checkpoint, [volume], tmp_path, options)
    assert report.failures == []
    assert (tmp_path / "candidates.csv").read_text() == (located / "candidates.csv").read_text()
    record = json.loads((tmp_path / "locate.json").read_text())
    assert record["detection"]["froc"][0]["sensitivity"]["value"] == 1.0


def test_explain_and_locate_make_the_same_guided_map_kept_inside_the_body(
    dark_phantom: Phantom, hypodense_checkpoint: Path, tmp_path: Path
) -> None:
    """The threshold ``evaluate`` picks on ``explain``'s maps is applied by ``locate`` to its
    own: the two must make the same guided map of the same slice, and both keep it out of the
    air around the patient. A 7 x 7 px patch of lesion-dark pixels in the air (smaller than a
    body piece) lights the class map there; it must not reach the map."""
    from oncoscope.explain.cam import explain_batch
    from oncoscope.explain.run import iter_maps
    from oncoscope.locate.model_input import tumour_maps
    from oncoscope.train.checkpoint import load_model

    model, spec = load_model(hypodense_checkpoint)
    model_input = CTModelInput(spec, (PRESETS["liver"],), SliceChain(), 1)
    lesion_slices = np.nonzero(dark_phantom.labels.reshape(len(dark_phantom.labels), -1).max(1))[0]
    pixels, paths = [], []
    for index in lesion_slices[:3]:
        image = model_pixels(dark_phantom.hu[index], model_input)
        assert (image[:20, :20] == 0).all()  # a corner of air (the phantom is an ellipse)
        image[6:13, 6:13] = 77  # u = 0.3: in the hypodense plateau
        pixels.append(image)
        paths.append(str(tmp_path / f"slice-{index}.png"))
        Image.fromarray(image).save(paths[-1])
    patch = (slice(6, 13), slice(6, 13))
    tensors = torch.stack([spec.eval_transform()(torch.from_numpy(p)[None]) for p in pixels])
    unbounded = explain_batch(model, tensors, "guided", targets=[1, 1, 1]).maps
    assert all(m[patch].max() > 0.05 for m in unbounded)  # without the body, the patch shows
    targets = ["tumour"] * len(paths)
    explained = [m for _, m in iter_maps(model, spec, paths, method="guided", targets=targets)]
    located = tumour_maps(model, model_input, pixels, method="guided")
    for by_explain, by_locate in zip(explained, located, strict=True):
        np.testing.assert_allclose(by_explain.heat, by_locate.heat, atol=1e-6)
        assert by_locate.heat[patch].max() == 0.0
        assert by_locate.heat.max() == pytest.approx(1.0)
