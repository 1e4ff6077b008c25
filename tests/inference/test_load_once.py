"""``slide --auto-scale`` and ``scale`` read the checkpoint file once (``torch.load`` counted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.inference.scale_search import search_scale
from oncoscope.inference.slide_inference import load_classifier
from tests.evaluate.test_load_once import count_loads

runner = CliRunner()


def test_slide_auto_scale_reads_the_checkpoint_once(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    loads = count_loads(monkeypatch)
    result = runner.invoke(
        app,
        ["slide", str(colour_checkpoint), str(small_slide), "--out", str(out), "--auto-scale",
         "--scales", "5,10,20", "--scale-points", "4", "--stride", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    searched = json.loads((out / small_slide.stem / "scale.json").read_text())
    summary = json.loads((out / small_slide.stem / "summary.json").read_text())
    assert summary["magnification"] == pytest.approx(searched["winner"])  # searched, classified
    assert loads == {colour_checkpoint.resolve(): 1}


def test_scale_reads_the_checkpoint_once(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = count_loads(monkeypatch)
    result = runner.invoke(
        app,
        ["scale", str(colour_checkpoint), str(small_slide), "--out", str(tmp_path / "s"),
         "--scales", "5,10", "--points", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "scale.json").is_file()
    assert loads == {colour_checkpoint.resolve(): 1}


def test_the_slide_classifiers_network_gives_the_search_of_the_file(
    small_slide: Path, colour_checkpoint: Path
) -> None:
    """The network ``slide`` loaded (channels-last, kept unfolded beside the folded model)
    gives the distances and votes the scale search gets from the file itself (fp32)."""
    classifier = load_classifier(colour_checkpoint, torch.device("cpu"))
    settings = {"scales": (5.0, 10.0, 20.0), "points": 6, "seed": 2}
    from_file = search_scale(colour_checkpoint, small_slide, **settings)  # type: ignore[arg-type]
    passed = search_scale(
        colour_checkpoint,
        small_slide,
        model=(classifier.network, classifier.spec),
        **settings,  # type: ignore[arg-type]
    )
    assert passed.winner == from_file.winner
    assert passed.histogram == from_file.histogram
    for ours, theirs in zip(passed.points, from_file.points, strict=True):
        assert (ours.x, ours.y, ours.predicted) == (theirs.x, theirs.y, theirs.predicted)
        np.testing.assert_allclose(ours.distances, theirs.distances, rtol=1e-4, atol=1e-6)
