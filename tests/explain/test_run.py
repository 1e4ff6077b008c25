"""Explaining files: outputs and explain.csv, bad images reported, threshold chosen on val."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.explain.localization_report import score_localization
from oncoscope.explain.overlay import FIGURE_MIN_SIDE_PX, overlay
from oncoscope.explain.run import EXPLAIN_COLUMNS, explain_images
from tests.explain.conftest import TinyGapNet, use_tiny_models, write_checkpoint

CLASSES = ["healthy", "tumour"]
KWARGS = {"conv": [1.0], "classifier": [[-1.0], [1.0]]}  # tumour = bright pixels


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_tiny_models(monkeypatch)
    model = TinyGapNet(**KWARGS)
    return write_checkpoint(tmp_path / "tiny.ckpt", model, "tiny_gap", KWARGS, CLASSES, 16)


def slice_png(path: Path, background: int, lesion: int) -> Path:
    """16x16 grey image: one black pixel (pins the map's minimum), lesion at rows 4-7, cols 4-7."""
    pixels = np.full((16, 16), background, np.uint8)
    pixels[4:8, 4:8] = lesion
    pixels[15, 15] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_explain_writes_maps_overlays_and_index_and_reports_bad_images(tmp_path, checkpoint):
    good = [
        slice_png(tmp_path / "in" / f"patient-{p}" / "slice-0001.png", 100, 250) for p in (1, 2)
    ]
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"not a png")
    report = explain_images(checkpoint, [good[0], bad, good[1]], tmp_path / "out", target="tumour")
    assert report.failures == [(str(bad), report.failures[0][1])]
    table = pd.read_csv(report.csv)
    assert list(table.columns) == list(EXPLAIN_COLUMNS) and len(table) == 2
    assert list(table["map_npy"]) == [
        "maps/patient-1/slice-0001.gradcam.npy",
        "maps/patient-2/slice-0001.gradcam.npy",
    ]
    heat = np.load(tmp_path / "out" / table["map_npy"][0])
    assert heat.dtype == np.float32 and heat.shape == (16, 16)
    assert heat[4:8, 4:8].min() == pytest.approx(1.0, abs=1e-5) and heat.min() >= 0.0
    # the overlay PNG is a figure: the 16x16 overlay enlarged 16 times (nearest) in its top-left
    # corner, then a colour bar and a caption (tests/explain/test_overlay.py)
    figure = np.asarray(Image.open(tmp_path / "out" / table["overlay_png"][0]).convert("RGB"))
    expected = overlay(np.asarray(Image.open(good[0]).convert("L")), heat)
    factor = FIGURE_MIN_SIDE_PX // 16
    enlarged = np.repeat(np.repeat(expected, factor, axis=0), factor, axis=1)
    assert np.array_equal(figure[: 16 * factor, : 16 * factor], enlarged)
    assert (tmp_path / "out" / table["image"][0]).resolve() == good[0].resolve()
    assert set(table["target"]) == {"tumour"} and set(table["layer"]) == {"features.1"}


def test_explain_cli_from_a_manifest_split(tmp_path, checkpoint):
    rows = []
    for split in ("val", "test"):
        path = slice_png(tmp_path / "data" / split / "a.png", 100, 250)
        rows.append({"path": f"{split}/a.png", "label": "tumour", "split": split, "group": split})
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "manifest.csv", index=False)
    result = CliRunner().invoke(
        app,
        ["explain", str(checkpoint), "--data", str(tmp_path / "data" / "manifest.csv"),
         "--split", "test", "--method", "cam", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "explain.csv")
    assert list(table["map_npy"]) == ["maps/test/a.cam.npy"] and list(table["label"]) == ["tumour"]
    assert path.exists()
    result = CliRunner().invoke(
        app, ["explain", str(checkpoint), str(path), "--layer", "nope", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no layer 'nope'" in result.output


def lesion_manifest(data: Path) -> Path:
    """val: lesion 250 on 125; test: lesion 250 on 200; lesion masks and full-liver masks."""
    rows = []
    for split, background in (("val", 125), ("test", 200)):
        slice_png(data / f"{split}.png", background, 250)
        ids = np.zeros((16, 16), np.uint8)
        ids[4:8, 4:8] = 1
        Image.fromarray(ids).save(data / f"{split}-lesions.png")
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(data / f"{split}-liver.png")
        rows.append(
            {"path": f"{split}.png", "label": "tumour", "split": split, "group": split,
             "patient_id": split, "lesion_count": 1, "row_mm": 2.0, "col_mm": 2.0,
             "lesion_mask": f"{split}-lesions.png", "liver_mask": f"{split}-liver.png"}
        )  # fmt: skip
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    return data / "manifest.csv"


def test_threshold_is_chosen_on_val_and_applied_to_test(tmp_path, checkpoint):
    # val: lesion 250 on 125 -> map 1.0 on 0.5: any threshold in (0.5, 1] is perfect; the
    # first step reaching the best Dice is 0.501. test: lesion 250 on 200 -> map 0.8 around it.
    data = lesion_manifest(tmp_path / "data").parent
    result = score_localization(checkpoint, data / "manifest.csv", "test", out_dir=tmp_path / "loc")
    assert result["threshold"] == pytest.approx(0.501)
    metrics = result["metrics"]
    # at 0.501 every test pixel but the black one is lesion: Dice 2*16 / (255 + 16)
    assert metrics["dice"] == pytest.approx(32 / 271)
    assert metrics["iou"] == pytest.approx(16 / 255)
    assert metrics["pointing_game"] == 1.0
    assert metrics["pointing_game_random_image"] == pytest.approx(16 / 256)
    assert metrics["pxap"] == pytest.approx(1.0)
    # the lesion is 4 x 4 pixels of 2 mm: diagonal 8 * sqrt(2) = 11.3 mm
    assert result["by_size"][1] == {
        "size_bin": "10-20 mm",
        "lesions": 1,
        "hits": 1,
        "hit_rate": 1.0,
    }
    assert all(Path(f).is_file() for f in result["figures"])
    saved = json.loads((tmp_path / "loc" / "localization.json").read_text())
    assert saved["threshold"] == pytest.approx(0.501)
    # one test patient: its interval is the point itself, and is said not to be trusted
    assert saved["intervals"]["estimates"]["pxap"]["ci_low"] == pytest.approx(1.0)
    assert saved["intervals"]["patients"] == 1 and not saved["intervals"]["trusted"]


def test_evaluate_localization_adds_the_scores_to_metrics_and_report(tmp_path, checkpoint):
    manifest = lesion_manifest(tmp_path / "data")
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(out)),
            *("--resamples", "20", "--localization"),
        ],
    )
    assert result.exit_code == 0, result.output
    located = json.loads((out / "metrics.json").read_text())["localization"]
    assert located["method"] == "gradcam"
    assert located["threshold"] == pytest.approx(0.501)  # chosen on val, as above
    assert located["metrics"]["pointing_game"] == 1.0
    assert located["metrics"]["dice"] == pytest.approx(32 / 271)
    page = (out / "report.html").read_text()
    assert "Weak localisation (gradcam)" in page
    assert "Lesion hit rate by size" in page
    assert (out / "localization" / "localization.json").is_file()


def test_evaluate_localization_reads_the_checkpoint_once(tmp_path, checkpoint, monkeypatch):
    from tests.evaluate.test_load_once import count_loads

    manifest = lesion_manifest(tmp_path / "data")
    loads = count_loads(monkeypatch)
    result = CliRunner().invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(tmp_path / "e")),
            *("--resamples", "20", "--localization"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "localization" in json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert loads == {checkpoint.resolve(): 1}  # predicted test and val, then the CAMs


def test_localization_skips_an_unreadable_slice_and_scores_the_rest(tmp_path, checkpoint):
    manifest = lesion_manifest(tmp_path / "data")
    frame = pd.read_csv(manifest)
    broken = frame[frame["split"] == "test"].assign(path="broken.png")
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    pd.concat([frame, broken]).to_csv(manifest, index=False)
    result = score_localization(checkpoint, manifest, "test", out_dir=tmp_path / "loc")
    assert [s["path"] for s in result["skipped"]] == [str(tmp_path / "data" / "broken.png")]
    assert result["metrics"]["images"] == 1.0  # the readable test slice, scored as before
    assert result["metrics"]["dice"] == pytest.approx(32 / 271)


def test_each_patients_figures_are_over_its_own_slices(tmp_path, checkpoint):
    # the tiny model's map is the image's brightness: patient "bright" has a lesion brighter
    # than its liver (the map's maximum on it; every pixel at or above the lesion's level is
    # lesion: PxAP 1), patient "dark" one darker (maximum off it; the lesion's 16 pixels sit
    # below the other 239 non-black ones, so every threshold that reaches the lesion keeps
    # all 255: precision 16 / 255 at full recall)
    data = tmp_path / "data"
    frame = pd.read_csv(lesion_manifest(data))
    rows = [frame[frame["split"] == "val"]]
    for patient, background, lesion in (("bright", 125, 250), ("dark", 250, 125)):
        slice_png(data / f"{patient}.png", background, lesion)
        rows.append(
            frame[frame["split"] == "test"].assign(
                path=f"{patient}.png", patient_id=patient, group=patient
            )
        )
    manifest = data / "two.csv"
    pd.concat(rows).to_csv(manifest, index=False)
    result = score_localization(checkpoint, manifest, "test", out_dir=tmp_path / "loc")
    by_patient = {row["patient"]: row for row in result["by_patient"]}
    assert by_patient["bright"]["pointing_game"] == 1.0
    assert by_patient["bright"]["pxap"] == pytest.approx(1.0)
    assert by_patient["dark"]["pointing_game"] == 0.0
    assert by_patient["dark"]["pxap"] == pytest.approx(16 / 255, abs=0.01)
    assert by_patient["dark"]["slices"] == 1 and by_patient["dark"]["lesions"] == 1
    # pooled, the dark patient's liver (map 1.0) outranks the bright patient's lesion (1.0)
    # and its own (0.5): 16 lesion pixels of 255 at half the recall, 32 of 510 at all of it.
    # The split's PxAP is the dark patient's, though half of it is perfect: what the table
    # shows and the split's figure hides
    assert result["metrics"]["pxap"] == pytest.approx(16 / 255, abs=0.01)
    table = pd.read_csv(tmp_path / "loc" / "localization_by_patient.csv")
    assert list(table["patient"]) == ["bright", "dark"]
    assert table["pxap"].tolist() == pytest.approx([1.0, by_patient["dark"]["pxap"]])
    out = tmp_path / "e"
    said = CliRunner().invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(out)),
            *("--resamples", "20", "--localization"),
        ],
    )
    assert said.exit_code == 0, said.output
    assert "lowest PxAP: patient dark 0.06" in said.output
    saved = json.loads((out / "metrics.json").read_text())["localization"]["by_patient"]
    assert [row["patient"] for row in saved] == ["bright", "dark"]
