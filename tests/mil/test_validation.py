"""Validation: a label carried by a small focus (1-5% of the tiles) is learned from slide
labels, and attention points at the focus (figures for 3 seeds in the README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.mil.conftest import Task, one_thread


def test_attention_mil_learns_a_small_focus_from_slide_labels(task: Task, tmp_path: Path) -> None:
    test = [b for b in task.bags if b.split == "test"]
    labels = pd.read_csv(task.labels)
    labels[labels["split"] == "test"].to_csv(tmp_path / "test.csv", index=False)
    with one_thread():
        result = CliRunner().invoke(
            app,
            ["mil", "predict", str(task.checkpoint), "--bags", str(task.bags_dir),
             "--labels", str(tmp_path / "test.csv"), "--out", str(tmp_path / "out")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "out" / "predictions.csv").set_index("slide")
    truth = [b.label == "tumour" for b in test]
    auroc = roc_auc_score(truth, [predicted.loc[b.path.stem, "prob_tumour"] for b in test])
    # measured 0.92-1.0 over seeds 0-2 (README); chance is 0.5
    assert auroc >= 0.8
    hits = [
        int(np.argmax(np.load(tmp_path / "out" / b.path.stem / "attention.npy"))) in set(b.focus)
        for b in test
        if b.label == "tumour"
    ]
    # the focus is 1-5% of the tiles: a random tile lands in it 1-5% of the time
    assert np.mean(hits) >= 0.6
