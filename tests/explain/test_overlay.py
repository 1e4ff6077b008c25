"""Explain overlays a reader can read: colour bar with its label, the truth, the lesion outline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.explain.overlay import FIGURE_MIN_SIDE_PX, figure
from oncoscope.explain.run import explain_images
from tests.explain.conftest import TinyGapNet, use_tiny_models, write_checkpoint
from tests.explain.test_run import CLASSES, KWARGS, lesion_manifest, slice_png


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_tiny_models(monkeypatch)
    model = TinyGapNet(**KWARGS)
    return write_checkpoint(tmp_path / "tiny.ckpt", model, "tiny_gap", KWARGS, CLASSES, 16)


def opencv_jet(value: float) -> np.ndarray:
    """The RGB colour OpenCV's jet gives a map value (the colours of pytorch-grad-cam)."""
    bgr = cv2.applyColorMap(np.array([[round(255 * value)]], np.uint8), cv2.COLORMAP_JET)
    return bgr[0, 0, ::-1].astype(int)


def test_the_figure_holds_the_overlay_and_a_colour_bar_from_0_at_the_bottom_to_1_at_the_top():
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = figure(picture, bar_label="Grad-CAM for tumour, 0 to 1", caption=["true: tumour"])
    factor = -(-FIGURE_MIN_SIDE_PX // 30)  # 30 px wide -> enlarged 9 times
    height, width = 20 * factor, 30 * factor
    assert np.array_equal(out[:height, :width], picture.repeat(factor, 0).repeat(factor, 1))
    assert out.shape[0] > height and out.shape[1] > width  # room for caption and bar
    bar = out[:height, width:]
    column = next(c for c in range(bar.shape[1]) if (bar[height // 2, c] != 255).any())
    middle = column + 5
    top, bottom = bar[1, middle].astype(int), bar[height - 2, middle].astype(int)
    assert np.abs(top - opencv_jet(1.0)).max() <= 8
    assert np.abs(bottom - opencv_jet(0.0)).max() <= 8
    # the label and the caption are drawn: dark text pixels right of the bar and under the image
    assert (out[:height, width + column + 20 :] < 100).any()
    assert (out[height:, :width] < 100).any()


def test_explain_overlays_carry_the_true_label_and_outline_the_manifests_lesion(
    tmp_path, checkpoint
):
    manifest = lesion_manifest(tmp_path / "data")
    result = CliRunner().invoke(
        app,
        ["explain", str(checkpoint), "--data", str(manifest), "--split", "test",
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "explain.csv")
    with Image.open(tmp_path / "out" / table["overlay_png"][0]) as image:
        assert image.text["truth"] == "tumour" and image.text["prediction"] == "tumour"
        outlined = np.asarray(image.convert("RGB"))
    factor = FIGURE_MIN_SIDE_PX // 16
    region = outlined[: 16 * factor, : 16 * factor]
    white = np.argwhere((region == 255).all(axis=2)) // factor  # in image pixels
    # the lesion is rows/cols 4-7: its outline runs along rows and cols 3-8, nowhere else
    assert len(white) > 0 and white.min() >= 3 and white.max() <= 8
    # the same image without a mask has no white outline
    plain = explain_images(checkpoint, [tmp_path / "data" / "test.png"], tmp_path / "plain")
    with Image.open(tmp_path / "plain" / plain.rows[0]["overlay_png"]) as image:
        assert image.text["truth"] == ""
        region = np.asarray(image.convert("RGB"))[: 16 * factor, : 16 * factor]
    assert not (region == 255).all(axis=2).any()


def test_the_caption_differs_with_the_true_label(tmp_path, checkpoint):
    image = slice_png(tmp_path / "a.png", 100, 250)
    pictures = []
    for label in ("tumour", "healthy"):
        report = explain_images(checkpoint, [image], tmp_path / label, labels=[label])
        with Image.open(tmp_path / label / report.rows[0]["overlay_png"]) as png:
            assert png.text["truth"] == label
            pictures.append(np.asarray(png.convert("RGB")))
    size = 16 * (FIGURE_MIN_SIDE_PX // 16)
    assert np.array_equal(pictures[0][:size, :size], pictures[1][:size, :size])
    assert not np.array_equal(pictures[0][size:], pictures[1][size:])  # the caption band
