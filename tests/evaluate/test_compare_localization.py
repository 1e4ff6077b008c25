"""``compare --localization``: each model's maps scored on the same tumour slices, paired
patient-bootstrap differences, and each model's size and speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.explain.conftest import TinyGapNet, use_tiny_models, write_checkpoint
from tests.explain.test_run import slice_png

CLASSES = ["healthy", "tumour"]
#: tumour = bright pixels: its CAM is the image's brightness, highest on the lesion
SEES = {"conv": [1.0], "classifier": [[-1.0], [1.0]]}
#: its only feature is relu(-x), zero on these non-negative images: a flat map
BLIND = {"conv": [-1.0], "classifier": [[-1.0], [1.0]]}


def run_dir(folder: Path, kwargs: dict[str, list[float] | list[list[float]]]) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    model = TinyGapNet(**kwargs)
    write_checkpoint(folder / "checkpoints" / "best.ckpt", model, "tiny_gap", kwargs, CLASSES, 16)
    return folder


def cohort(data: Path, patients: int) -> Path:
    """Per patient a tumour slice (lesion 250 on 200 at rows/cols 4-7) and a healthy one."""
    rows = []
    empty = np.zeros((16, 16), np.uint8)
    data.mkdir(parents=True)
    Image.fromarray(empty).save(data / "empty.png")
    ids = empty.copy()
    ids[4:8, 4:8] = 1
    Image.fromarray(ids).save(data / "lesion.png")
    for split, count in (("val", 2), ("test", patients)):
        for p in range(count):
            patient = f"{split}-{p}"
            slice_png(data / f"{patient}-t.png", 200, 250)
            slice_png(data / f"{patient}-h.png", 200, 200)
            for kind, label, mask, lesions in (
                ("t", "tumour", "lesion.png", 1),
                ("h", "healthy", "empty.png", 0),
            ):
                rows.append(
                    {"path": f"{patient}-{kind}.png", "label": label, "split": split,
                     "group": patient, "patient_id": patient, "lesion_count": lesions,
                     "row_mm": 2.0, "col_mm": 2.0, "lesion_mask": mask}
                )  # fmt: skip
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    return data / "manifest.csv"


def test_compare_scores_maps_on_the_same_slices_with_paired_differences(tmp_path, monkeypatch):
    use_tiny_models(monkeypatch)
    manifest = cohort(tmp_path / "data", patients=6)
    sees, blind = run_dir(tmp_path / "sees", SEES), run_dir(tmp_path / "blind", BLIND)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app,
        ["compare", str(sees), str(blind), "--data", str(manifest), "--split", "test",
         "--localization", "cam", "--resamples", "300", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    located = json.loads((out / "comparison.json").read_text())["localization"]
    assert located["method"] == "cam" and located["images"] == 6 and located["patients"] == 6
    # the seeing model's maximum is on every lesion; the flat map's first pixel, (0, 0), is not
    assert located["models"]["sees"]["pointing_game"]["value"] == 1.0
    assert located["models"]["blind"]["pointing_game"]["value"] == 0.0
    loss = located["models"]["blind"]["difference"]["pointing_game"]
    assert (loss["value"], loss["ci_low"], loss["ci_high"]) == (-1.0, -1.0, -1.0)
    assert loss["significant"] is True
    # a flat map ranks no pixel above another: its PxAP is the lesion's share of the pixels
    assert located["models"]["blind"]["pxap"]["value"] == pytest.approx(16 / 256)
    assert located["models"]["sees"]["pxap"]["value"] == pytest.approx(1.0)
    table = pd.read_csv(out / "comparison_localization.csv")
    assert set(table["model"]) == {"sees", "blind"} and "pointing_game" in set(table["metric"])
    own = json.loads((out / "localization" / "sees" / "localization.json").read_text())
    assert own["intervals"] is None  # only the paired intervals above, no one-resample ones
    assert own["metrics"]["pointing_game"] == 1.0
    assert "Weak localisation (cam)" in (out / "report.html").read_text()
    assert "sees: pointing game 1.000" in result.output


def test_compare_gives_each_models_size_and_speed(tmp_path, monkeypatch):
    use_tiny_models(monkeypatch)
    manifest = cohort(tmp_path / "data", patients=2)
    wider: dict[str, list[float] | list[list[float]]] = {
        "conv": [1.0, 0.5],
        "classifier": [[-1.0, 0.0], [1.0, 0.0]],
    }
    runs = [run_dir(tmp_path / "one", SEES), run_dir(tmp_path / "two", wider)]
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app,
        ["compare", *map(str, runs), "--data", str(manifest), "--resamples", "50",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    costs = json.loads((out / "comparison.json").read_text())["costs"]
    # TinyGapNet: conv 1 x channels, classifier channels x 2 (no biases)
    assert costs["one"]["parameters"] == 1 + 2 and costs["two"]["parameters"] == 2 + 4
    # one 16 x 16 image: the 1x1 conv is channels MACs per pixel, the classifier 2 x channels
    assert costs["one"]["gflops_per_image"] == pytest.approx(2 * (256 * 1 + 2) / 1e9)
    assert costs["two"]["gflops_per_image"] == pytest.approx(2 * (256 * 2 + 4) / 1e9)
    assert costs["one"]["seconds_to_classify"] > 0
    assert "Size and speed" in (out / "report.html").read_text()
    assert not (out / "comparison_localization.csv").exists()


def test_a_manifest_without_lesion_masks_stops_before_any_prediction(tmp_path, monkeypatch):
    use_tiny_models(monkeypatch)
    manifest = cohort(tmp_path / "data", patients=2)
    pd.read_csv(manifest).drop(columns=["lesion_mask"]).to_csv(manifest, index=False)
    predicted = []
    import oncoscope.train.predict as predict

    monkeypatch.setattr(predict, "predict_split", lambda *a, **k: predicted.append(a))
    result = CliRunner().invoke(
        app,
        ["compare", str(run_dir(tmp_path / "one", SEES)), "--data", str(manifest),
         "--localization", "cam", "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert result.exit_code == 2 and "missing columns ['lesion_mask']" in result.output
    assert predicted == [] and not (tmp_path / "cmp").exists()
