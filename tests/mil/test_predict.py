"""mil predict: predictions.csv, attention per tile aligned with the bag, its painting, top
tiles (gallery from the slide file) and GeoJSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import tifffile
from PIL import Image
from shapely.geometry import shape
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.features.bags import bag_attributes, read_bag, write_bag
from oncoscope.pathology.synthetic import SyntheticSlide
from tests.mil.conftest import Task, one_thread

runner = CliRunner()
TILE = 224


def _four_bags(task: Task, folder: Path) -> Path:
    """A bags folder with the first four bags (two of each label), to keep predict quick."""
    folder.mkdir()
    for bag in task.bags[:4]:
        shutil.copy(bag.path, folder / bag.path.name)
    return folder


def _predict(*args: str) -> str:
    with one_thread():
        result = runner.invoke(app, ["mil", "predict", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_predictions_attention_and_its_painting(task: Task, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bags = _four_bags(task, tmp_path / "bags")
    output = _predict(str(task.checkpoint), "--bags", str(bags), "--out", str(out),
                      "--top-k", "4")  # fmt: skip
    assert "not found: heatmap over white, no top_tiles.png" in output  # the slides are absent
    frame = pd.read_csv(out / "predictions.csv")
    assert list(frame.columns) == ["slide", "patient", "pred", "prob_normal", "prob_tumour"]
    assert sorted(frame["slide"]) == sorted(b.path.stem for b in task.bags[:4])
    np.testing.assert_allclose(frame[["prob_normal", "prob_tumour"]].sum(axis=1), 1.0, atol=1e-5)
    argmax = np.where(frame["prob_tumour"] > frame["prob_normal"], "tumour", "normal")
    assert list(frame["pred"]) == list(argmax)
    bag = task.bags[1]
    folder = out / bag.path.stem
    _, coords, _ = read_bag(bag.path)
    attention = np.load(folder / "attention.npy")
    assert attention.shape == (len(coords),) and abs(float(attention.sum()) - 1) < 1e-5
    # the TIFF paints each tile's attention percentile at the tile's cell (abutting tiles)
    with tifffile.TiffFile(folder / "attention.tif") as tif:
        painted = tif.pages[0].asarray()
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert painted.shape == (16, 16)
    top, bottom = int(np.argmax(attention)), int(np.argmin(attention))
    assert painted[coords[top, 1] // TILE, coords[top, 0] // TILE] == 1.0
    assert painted[coords[bottom, 1] // TILE, coords[bottom, 0] // TILE] == 0.0
    px_per_cm = x_resolution[0] / x_resolution[1]
    assert abs(px_per_cm - 1e4 / (0.5 * TILE)) < 1e-3  # one cell = one tile of 224 px at 0.5 um
    # GeoJSON: the union of the 4 tiles of highest attention, in level-0 pixels
    regions = json.loads((folder / "top_attention.geojson").read_text())["features"]
    assert len(regions) == 1
    region = shape(regions[0]["geometry"])
    assert abs(region.area - 4 * TILE**2) < 1e-6
    for index in np.argsort(-attention)[:4]:
        x, y = coords[index]
        assert region.contains(shape({"type": "Point", "coordinates": [x + 112, y + 112]}))
    assert Image.open(folder / "attention.png").size[0] > 100
    assert not (folder / "top_tiles.png").exists()


def test_a_rerun_needs_overwrite_and_replaces_everything(task: Task, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bags = _four_bags(task, tmp_path / "bags")
    _predict(str(task.checkpoint), "--bags", str(bags), "--out", str(out))
    labels = pd.read_csv(task.labels)
    labels.head(3).to_csv(tmp_path / "three.csv", index=False)
    with one_thread():
        refused = runner.invoke(
            app,
            ["mil", "predict", str(task.checkpoint), "--bags", str(bags),
             "--labels", str(tmp_path / "three.csv"), "--out", str(out)],
        )  # fmt: skip
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    _predict(str(task.checkpoint), "--bags", str(bags), "--out", str(out),
             "--labels", str(tmp_path / "three.csv"), "--overwrite")  # fmt: skip
    frame = pd.read_csv(out / "predictions.csv")
    assert list(frame["slide"]) == list(labels["slide"].head(3).str.removesuffix(".svs"))
    assert {"label", "split"} <= set(frame.columns)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(frame["slide"])  # the earlier run's fourth folder is gone


def test_gallery_shows_the_top_tiles_read_from_the_slide(
    task: Task, generic_slide: SyntheticSlide, tmp_path: Path
) -> None:
    width, height = generic_slide.size_wh
    step = 448  # 224 px tiles at 0.5 um from a 0.25 um slide
    xs, ys = np.meshgrid(np.arange(0, width - step, step), np.arange(0, height - step, step))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    features = np.random.default_rng(1).normal(size=(len(coords), 32))
    attrs = bag_attributes(
        slide=generic_slide.path, tile_px=TILE, tile_px_level0=step, stride_px=TILE, mpp=0.5,
        magnification=20.0, encoder="synthetic-gaussian", encoder_spec={},
    )  # fmt: skip
    write_bag(tmp_path / "bags" / "slide.h5", features, coords, attrs)
    out = tmp_path / "out"
    _predict(str(task.checkpoint), "--bags", str(tmp_path / "bags"), "--out", str(out),
             "--top-k", "3")  # fmt: skip
    attention = np.load(out / "slide" / "attention.npy")
    gallery = np.asarray(Image.open(out / "slide" / "top_tiles.png").convert("RGB"))
    assert gallery.shape[1] == 3 * (160 + 6) + 6
    with openslide.OpenSlide(str(generic_slide.path)) as reader:
        for column, index in enumerate(np.argsort(-attention)[:3]):
            x, y = (int(v) for v in coords[index])
            region = reader.read_region((x, y), 0, (step, step)).convert("RGB")
            expected = np.asarray(region.resize((160, 160)), dtype=np.float32)
            left = 6 + column * 166
            shown = gallery[6 : 6 + 160, left : left + 160].astype(np.float32)
            assert np.abs(shown - expected).mean() < 12  # resampling differs, content does not
    heatmap = np.asarray(Image.open(out / "slide" / "attention.png").convert("RGB"))
    assert heatmap.shape[0] > 200  # over the slide thumbnail
