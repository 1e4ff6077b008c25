"""``oncoscope evaluate``, ``compare`` and multi-model ``train`` end to end on tiny runs."""

from __future__ import annotations

import json
import re

import pandas as pd
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.evaluate.conftest import MODELS

runner = CliRunner()


def test_train_several_models_into_sibling_run_directories(runs):
    _, folder = runs
    for name in MODELS:
        assert (folder / name / "checkpoints" / "best.ckpt").is_file()
        assert (folder / name / "metrics.csv").is_file()


def test_a_bad_model_name_in_the_list_fails_before_any_training(tmp_path):
    from tests.train.conftest import write_patches

    manifest = write_patches(tmp_path / "p", {"train": 4, "val": 2})
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["train", "--data", str(manifest), "--model", "simple_cnn,resnt50", "--out", str(out)]
    )
    assert result.exit_code == 2 and "unknown model 'resnt50'" in result.output
    assert not out.exists()  # simple_cnn never started


def test_evaluate_writes_metrics_figures_predictions_and_a_self_contained_report(runs, tmp_path):
    manifest, folder = runs
    checkpoint = folder / "simple_cnn" / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(out)),
            *("--resamples", "20", "--seed", "3"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["macro"]) >= {"accuracy", "auroc", "map", "recall", "specificity", "npv"}
    assert set(metrics["macro"]["auroc"]) == {"value", "ci_low", "ci_high"}
    assert set(metrics["classes"]) == {"adenoma", "well differentiated"}
    assert metrics["n_images"] == 16 and metrics["n_groups"] == 4  # slides test-0..test-3
    assert metrics["group_level"]["n_groups"] == 4
    assert metrics["group_level"]["aggregation"] == "max"
    assert metrics["settings"]["resamples"] == 20 and metrics["settings"]["seed"] == 3
    assert metrics["settings"]["group_column"] == "slide"
    assert metrics["operating_point"]["picked_on"] == "val"
    assert sum(map(sum, metrics["confusion_matrix"]["counts"])) == 16
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 16 and {"pred", "prob_adenoma"} <= set(predictions.columns)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"roc_image.png", "pr_image.png", "confusion_image.png", "calibration_image.png"} <= (
        figures
    )
    assert "training.png" in figures  # the run dir has metrics.csv
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "How to read this" in page and "simple_cnn" in page


def test_evaluate_reports_bad_input_in_one_line(runs, tmp_path):
    manifest, folder = runs
    checkpoint = folder / "simple_cnn" / "checkpoints" / "best.ckpt"
    result = runner.invoke(
        app,
        [
            *("evaluate", str(checkpoint), "--data", str(manifest), "--out", str(tmp_path)),
            *("--aggregate", "median"),
        ],
    )
    assert result.exit_code == 2 and "unknown aggregation 'median'" in result.output
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "no.ckpt"), "--data", str(manifest), "--out", "x"]
    )
    assert result.exit_code == 2 and "checkpoint does not exist" in result.output


def test_compare_pairs_models_and_a_model_with_itself_differs_by_exactly_zero(runs, tmp_path):
    manifest, folder = runs
    first, second = (str(folder / name) for name in MODELS)
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        [
            *("compare", first, second, first, "--data", str(manifest), "--out", str(out)),
            *("--resamples", "20"),
        ],
    )
    assert result.exit_code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["reference"] == "simple_cnn"
    assert list(comparison["models"]) == ["simple_cnn", "mobilenetv3_small_100", "simple_cnn#2"]
    itself = comparison["models"]["simple_cnn#2"]["difference"]
    for estimate in [*itself["macro"].values(), *itself["classes"]["adenoma"].values()]:
        if estimate["value"] is not None:
            assert (estimate["value"], estimate["ci_low"], estimate["ci_high"]) == (0, 0, 0)
            assert estimate["spans_zero"] is True
    same = comparison["models"]["simple_cnn#2"]["macro"]["accuracy"]
    assert same == comparison["models"]["simple_cnn"]["macro"]["accuracy"]
    tidy = pd.read_csv(out / "comparison.csv")
    assert set(tidy["model"]) == {"simple_cnn", "mobilenetv3_small_100", "simple_cnn#2"}
    assert {"scope", "metric", "ci_low", "difference", "difference_spans_zero"} <= set(tidy)
    page = (out / "report.html").read_text()
    assert "difference from simple_cnn" in page and "mobilenetv3_small_100" in page
    bad = runner.invoke(
        app, ["compare", first, "--data", str(manifest), "--out", str(out), "--reference", "x"]
    )
    assert bad.exit_code == 2 and "reference 'x' is not one of the models" in bad.output
