"""``oncoscope evaluate`` on bad splits, few groups and unreadable images (tiny checkpoint)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image
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


def test_unreadable_images_are_reported_one_line_each_and_the_rest_evaluated(
    tiny_checkpoint, tmp_path
):
    rows = grey_rows("val", 4) + grey_rows("test", 6)
    manifest = write_grey_images(tmp_path / "d", rows)
    truncated = tmp_path / "d" / "test-1-0.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 25])  # cut inside the pixel data
    with pytest.raises(OSError, match="truncated"), Image.open(truncated) as image:
        image.load()  # the header opens, the pixels do not
    frame = pd.read_csv(manifest)
    frame.loc[frame["path"] == "val-0-0.png", "path"] = "missing.png"
    frame.to_csv(manifest, index=False)
    out = tmp_path / "out"
    result = _evaluate(tiny_checkpoint, manifest, out)
    assert result.exit_code == 2, result.output  # reported, as explain does
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("error:")]
    assert len(lines) == 2, result.output
    assert any(str(truncated) in line and "cannot decode image" in line for line in lines)
    assert any("missing.png" in line for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 12 - 1  # one of the test split's 12 images skipped
    skipped = {(s["split"], s["path"]) for s in metrics["skipped_images"]}
    assert ("test", str(truncated)) in skipped and len(skipped) == 2
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 11 and str(truncated) not in set(predictions["path"])
    page = (out / "report.html").read_text()
    assert "2 images could not be read and were skipped" in page


def test_an_empty_path_cell_is_one_line_naming_its_line(tiny_checkpoint, tmp_path):
    manifest = write_grey_images(tmp_path / "d", grey_rows("val", 4) + grey_rows("test", 6))
    frame = pd.read_csv(manifest)
    row = int(frame.index[frame["path"] == "test-2-1.png"][0])
    frame.loc[row, "path"] = None
    frame.to_csv(manifest, index=False)
    result = _evaluate(tiny_checkpoint, manifest, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{manifest}: empty path on line {row + 2}" in result.output
