"""oncoscope evaluate on a MIL checkpoint: slide rows, patient groups, the same metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.mil.conftest import Task, one_thread


def test_evaluate_scores_mil_predictions_by_patient(task: Task, tmp_path: Path) -> None:
    labels = pd.read_csv(task.labels)
    # two test slides per patient, and one test slide whose bag is missing
    test = labels["split"] == "test"
    labels.loc[test, "patient"] = [f"t{i // 2}" for i in range(int(test.sum()))]
    missing = pd.DataFrame([{"slide": "gone.svs", "patient": "t99", "label": "tumour",
                             "split": "test"}])  # fmt: skip
    pd.concat([labels, missing]).to_csv(tmp_path / "slides.csv", index=False)
    with one_thread():
        result = CliRunner().invoke(
            app,
            ["evaluate", str(task.checkpoint), "--data", str(tmp_path / "slides.csv"),
             "--out", str(tmp_path / "eval"), "--resamples", "200"],
        )  # fmt: skip
    assert result.exit_code == 2, result.output  # finished, and reports the skipped slide
    assert "gone.svs: no bag gone.h5" in result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert metrics["n_images"] == len(rows) == 16 and metrics["n_groups"] == 8
    assert metrics["settings"]["group_column"] == "patient"
    assert [s["path"] for s in metrics["skipped_images"]] == ["gone.svs"]
    truth = rows["label"] == "tumour"
    auroc = roc_auc_score(truth, rows["prob_tumour"])
    assert abs(metrics["macro"]["auroc"]["value"] - auroc) < 1e-6
    accuracy = float(np.mean(rows["pred"] == rows["label"]))
    assert abs(metrics["macro"]["accuracy"]["value"] - accuracy) < 1e-6
    assert metrics["operating_point"]["picked_on"] == "val"
    assert metrics["group_level"]["n_groups"] == 8
    assert (tmp_path / "eval" / "report.html").is_file()
