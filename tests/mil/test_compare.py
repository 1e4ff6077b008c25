"""oncoscope compare on MIL runs: slide rows of the same bags, patients resampled together."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.mil.synthetic_slides import write_random_encoder
from tests.mil.conftest import Task, one_thread


def _invoke(*args: str | Path) -> tuple[int, str]:
    with one_thread():
        result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def paired(task: Task, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """slides.csv with two test slides of one label per patient (slides alternate labels),
    and a CLAM-SB run on the same bags."""
    root = tmp_path_factory.mktemp("mil-compare")
    labels = pd.read_csv(task.labels)
    test = labels["split"] == "test"
    labels.loc[test, "patient"] = [f"t{(i // 4) * 2 + i % 2}" for i in range(int(test.sum()))]
    labels.to_csv(root / "slides.csv", index=False)
    code, output = _invoke("mil", "train", "--bags", task.bags_dir, "--labels", task.labels,
                           "--out", root / "clam", "--model", "clam_sb", "--epochs", "2",
                           "--lr", "5e-3", "--precision", "fp32")  # fmt: skip
    assert code == 0, output
    return root / "slides.csv", root / "clam"


def test_compare_two_mil_runs_slide_by_slide(
    task: Task, paired: tuple[Path, Path], tmp_path: Path
) -> None:
    labels, clam = paired
    code, output = _invoke("compare", task.run, clam, "--data", labels, "--split", "test",
                           "--resamples", "200", "--out", tmp_path / "cmp")  # fmt: skip
    assert code == 0, output
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["n_images"] == 16 and comparison["n_groups"] == 8  # slides, patients
    assert comparison["settings"]["group_column"] == "patient"
    assert comparison["architectures"] == {"run": "abmil", "clam": "clam_sb"}
    patients = comparison["patient_level"]
    assert patients["n_images"] == patients["n_groups"] == 8
    assert patients["aggregation"]["method"] == "max"
    auroc, by_patient = {}, {}
    for name, run in (("run", task.run), ("clam", clam)):  # truth: mil predict's own output
        code, output = _invoke("mil", "predict", run / "checkpoints" / "best.ckpt",
                               "--bags", task.bags_dir, "--labels", labels,
                               "--out", tmp_path / name)  # fmt: skip
        assert code == 0, output
        rows = pd.read_csv(tmp_path / name / "predictions.csv")
        rows = rows[rows["split"] == "test"]
        auroc[name] = roc_auc_score(rows["label"] == "tumour", rows["prob_tumour"])
        got = comparison["models"][name]["macro"]["auroc"]
        assert got["value"] == pytest.approx(auroc[name], abs=1e-6)
        worst = rows.groupby("patient").agg(tumour=("label", lambda y: (y == "tumour").any()),
                                            score=("prob_tumour", "max"))  # fmt: skip
        by_patient[name] = roc_auc_score(worst["tumour"], worst["score"])
        got = patients["models"][name]["macro"]["auroc"]
        assert got["value"] == pytest.approx(by_patient[name], abs=1e-6)
    difference = comparison["models"]["clam"]["difference"]["macro"]["auroc"]
    assert difference["value"] == pytest.approx(auroc["clam"] - auroc["run"], abs=1e-6)
    itself = comparison["models"]["run"]["difference"]["macro"]["auroc"]
    assert (itself["value"], itself["ci_low"], itself["ci_high"]) == (0, 0, 0)
    difference = patients["models"]["clam"]["difference"]["macro"]["auroc"]
    assert difference["value"] == pytest.approx(by_patient["clam"] - by_patient["run"], abs=1e-6)
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert "16 slides, 8 groups" in report and "Patient level: Macro average" in report
    tidy = pd.read_csv(tmp_path / "cmp" / "comparison_patients.csv")
    assert set(tidy["model"]) == {"run", "clam"}


def test_compare_refuses_mil_runs_it_cannot_pair(
    task: Task, paired: tuple[Path, Path], tmp_path: Path
) -> None:
    labels, clam = paired
    (tmp_path / "patch" / "checkpoints").mkdir(parents=True)
    write_random_encoder(tmp_path / "patch" / "checkpoints" / "best.ckpt")  # a patch classifier
    code, output = _invoke(
        "compare", task.run, tmp_path / "patch", "--data", labels, "--out", tmp_path / "a"
    )
    assert code == 2 and "is a MIL model (slide labels) and patch a patch model" in output
    code, output = _invoke("compare", tmp_path / "patch", tmp_path / "patch", "--data", labels,
                           "--bags", task.bags_dir, "--out", tmp_path / "c")  # fmt: skip
    assert code == 2 and "--bags applies to MIL checkpoints" in output
    table = pd.read_csv(labels)
    extra = pd.DataFrame([{"slide": "gone.svs", "patient": "t99", "label": "tumour",
                           "split": "test"}])  # fmt: skip
    pd.concat([table, extra]).to_csv(tmp_path / "missing.csv", index=False)
    code, output = _invoke("compare", task.run, clam, "--data", tmp_path / "missing.csv",
                           "--out", tmp_path / "b")  # fmt: skip
    assert code == 2 and "gone.svs: no bag gone.h5" in output and "same slides" in output
