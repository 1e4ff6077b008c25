"""Bad input to mil train / mil predict: one line naming the problem, exit 2, before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.features.bags import bag_attributes, write_bag
from tests.mil.conftest import Task

runner = CliRunner()


def _bags(folder: Path, stems: list[str], encoder: str = "toy", d: int = 3) -> None:
    for index, stem in enumerate(stems):
        rng = np.random.default_rng(index)
        attrs = bag_attributes(
            slide=f"{stem}.svs", tile_px=224, tile_px_level0=224, stride_px=224, mpp=0.5,
            magnification=20.0, encoder=encoder, encoder_spec={"name": encoder},
        )  # fmt: skip
        write_bag(folder / f"{stem}.h5", rng.normal(size=(4, d)), np.zeros((4, 2)), attrs)


def _labels(path: Path, rows: list[tuple[str, ...]]) -> Path:
    columns = ["slide", "label", "split", "patient"][: len(rows[0])]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


GOOD = [
    ("s1.svs", "normal", "train", "p1"),
    ("s2.svs", "tumour", "train", "p2"),
    ("s3.svs", "normal", "val", "p3"),
    ("s4.svs", "tumour", "val", "p4"),
]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("patient in two splits", "patient p2 is in splits train, val"),
        ("slide without bag", "1 slide(s) have no bag <slide>.h5 in"),
        ("one class", "split val has one class only (normal)"),
        ("two encoders", "encoder 'other'"),
        ("two labels in a patient bag", "patient p1 has slides labelled normal, tumour"),
    ],
)
def test_mil_train_refuses_bad_input_in_one_line_before_any_work(
    tmp_path: Path, case: str, message: str
) -> None:
    rows = list(GOOD)
    stems = ["s1", "s2", "s3", "s4"]
    extra: list[str] = []
    if case == "patient in two splits":
        rows.append(("s5.svs", "tumour", "val", "p2"))
        stems.append("s5")
    elif case == "slide without bag":
        rows.append(("s5.svs", "tumour", "val", "p5"))
    elif case == "one class":
        rows[3] = ("s4.svs", "normal", "val", "p4")
    elif case == "two labels in a patient bag":
        rows.append(("s5.svs", "tumour", "train", "p1"))
        stems.append("s5")
        extra = ["--bag-level", "patient"]
    _bags(tmp_path / "bags", stems)
    if case == "two encoders":
        _bags(tmp_path / "bags", ["s3"], encoder="other")
    labels = _labels(tmp_path / "slides.csv", rows)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["mil", "train", "--bags", str(tmp_path / "bags"), "--labels", str(labels),
         "--out", str(out), "--precision", "fp32", *extra],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert not out.exists()


def test_mil_train_refuses_a_run_folder_in_use(tmp_path: Path) -> None:
    _bags(tmp_path / "bags", ["s1", "s2", "s3", "s4"])
    labels = _labels(tmp_path / "slides.csv", GOOD)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("keep")
    result = runner.invoke(
        app,
        ["mil", "train", "--bags", str(tmp_path / "bags"), "--labels", str(labels),
         "--out", str(tmp_path / "run"), "--overwrite"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "not a training run's (mine.txt)" in result.output
    assert (tmp_path / "run" / "mine.txt").read_text() == "keep"


def test_mil_predict_refuses_bags_of_another_encoder(task: Task, tmp_path: Path) -> None:
    _bags(tmp_path / "bags", ["x"], encoder="another-encoder", d=32)
    result = runner.invoke(
        app,
        ["mil", "predict", str(task.checkpoint), "--bags", str(tmp_path / "bags"),
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "encoder 'another-encoder'" in result.output
    assert "synthetic-gaussian" in result.output
    assert not (tmp_path / "out").exists()


def test_mil_predict_refuses_a_patch_checkpoint(tmp_path: Path) -> None:
    from oncoscope.models import create_model
    from oncoscope.train.checkpoint import write_checkpoint

    model = create_model("simple_cnn", num_classes=2, in_chans=3)
    spec = {"model": "simple_cnn", "model_kwargs": {}, "classes": ["a", "b"], "in_chans": 3,
            "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}  # fmt: skip
    checkpoint = write_checkpoint(model, spec, tmp_path / "patch.ckpt")
    _bags(tmp_path / "bags", ["x"])
    result = runner.invoke(
        app,
        ["mil", "predict", str(checkpoint), "--bags", str(tmp_path / "bags"),
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "not a MIL checkpoint" in result.output
