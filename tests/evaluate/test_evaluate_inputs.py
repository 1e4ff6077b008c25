"""``oncoscope evaluate`` on bad splits, few groups and unreadable images (tiny checkpoint)."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from oncoscope.cli import app
from tests.evaluate.conftest import grey_rows, write_grey_images

runner = CliRunner()


def _evaluate(checkpoint, manifest, out, *options):
    return runner.invoke(
        app,
        ["evaluate", str(checkpoint), "--data", str(manifest), "--out", str(out),
         "--resamples", "20", *options],
    )  # fmt: skip


def test_the_tiny_checkpoint_separates_dark_from_bright(tiny_checkpoint, tmp_path):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 4))
    result = _evaluate(tiny_checkpoint, manifest, tmp_path / "out")
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions["pred"]) == list(predictions["label"])


def test_unknown_split_names_are_errors(tiny_checkpoint, tmp_path):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 4))
    for options, message in (
        (("--val-split", "nonexistent"), "unknown --val-split 'nonexistent'"),
        (("--split", "tset"), "unknown --split 'tset'"),
    ):
        out = tmp_path / options[1]
        result = _evaluate(tiny_checkpoint, manifest, out, *options)
        assert result.exit_code == 2, result.output
        assert message in result.output and "train, val, test" in result.output
        assert not out.exists()


def test_the_threshold_is_never_picked_on_the_scored_split(tiny_checkpoint, tmp_path):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 4))
    out = tmp_path / "same"
    result = _evaluate(tiny_checkpoint, manifest, out, "--split", "val", "--val-split", "val")
    assert result.exit_code == 2, result.output
    assert "scored and picked on the same split 'val'" in result.output
    assert not out.exists()
    # scoring val is fine with the operating point skipped
    result = _evaluate(tiny_checkpoint, manifest, out, "--split", "val", "--val-split", "none")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["operating_point"] is None and metrics["settings"]["split"] == "val"


def test_evaluate_flags_intervals_from_two_patients_in_console_report_and_json(
    tiny_checkpoint, tmp_path
):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 2))
    out = tmp_path / "out"
    result = _evaluate(tiny_checkpoint, manifest, out)
    assert result.exit_code == 0, result.output
    assert result.output.count("not to be trusted") == 2  # image and group level
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["intervals"]["trusted"] is False
    assert metrics["group_level"]["intervals"]["groups_per_class"] == {"healthy": 1, "tumour": 1}
    page = (out / "report.html").read_text()
    assert page.count("not to be trusted") >= 2
