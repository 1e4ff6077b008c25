"""Issue 13: a model trained on stain-normalised tiles sees normalised tiles in ``slide``.

``wsi tile --stain-normalize`` records the fitted stain target in the manifest; training carries
it into the checkpoint's spec; ``oncoscope slide`` normalises every tile to it (unless
``--no-stain-normalize``). The truth is computed apart from the inference code: the target is
fitted again on the reference image, each tile is read with ``Slide.read_at`` and classified by
the colour classifier's own rule (nearest class colour of the tile's mean colour).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oncoscope.inference.patches import TileDataset
from oncoscope.inference.slide_inference import SlideOptions, infer_slides
from oncoscope.io.slides import open_slide
from oncoscope.pathology.stain import StainNormalizer, read_rgb
from oncoscope.pathology.tile_dataset import TileOptions, tile_slides
from oncoscope.train.checkpoint import write_checkpoint
from oncoscope.train.data import load_training_data
from tests.inference.conftest import CENTROIDS, TILE_PX, colour_spec, write_colour_checkpoint

MAGNIFICATION = 5.0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage.data import immunohistochemistry

    path = tmp_path_factory.mktemp("stain") / "reference.png"
    Image.fromarray(immunohistochemistry()[:256, :256]).save(path)
    return path


def test_tiles_read_for_inference_are_normalised_as_the_reference_says(generic_slide, reference):
    slide = open_slide(generic_slide.path)
    target = slide.resolution(magnification=MAGNIFICATION)
    positions = np.array([[512.0, 512.0], [2048.0, 1024.0], [3000.0, 2000.0]])
    fitted = StainNormalizer("reinhard").fit(read_rgb(reference))
    state = json.loads(json.dumps(fitted.state()))  # as a checkpoint stores it
    plain = TileDataset(generic_slide.path, positions, TILE_PX, target)
    normed = TileDataset(generic_slide.path, positions, TILE_PX, target, stain=state)
    for index in range(len(positions)):
        raw = plain[index][0].numpy()
        np.testing.assert_array_equal(normed[index][0].numpy(), fitted(raw))
        assert np.abs(normed[index][0].numpy().astype(int) - raw).mean() > 5  # it did change


def test_a_model_trained_on_normalised_tiles_classifies_normalised_slide_tiles(
    generic_slide, reference, tmp_path
):
    report = tile_slides(
        [generic_slide.path],
        tmp_path / "tiles",
        annotations=generic_slide.path.with_suffix(".geojson"),
        options=TileOptions(
            size_px=TILE_PX,
            magnification=MAGNIFICATION,
            ratio=(1, 0, 0),
            stain_reference=str(reference),
            stain_method="reinhard",
        ),
    )
    assert report.manifest is not None
    frame = pd.read_csv(report.manifest)
    held_out = frame.assign(split="val", group="copy", slide="copy")  # training needs a val split
    pd.concat([frame, held_out]).to_csv(report.manifest, index=False)
    data = load_training_data(report.manifest, None)
    fitted = StainNormalizer("reinhard").fit(read_rgb(reference))
    assert data.preprocessing["stain"] == json.loads(json.dumps(fitted.state()))

    spec = dict(colour_spec())
    spec["preprocessing"] = dict(data.preprocessing)
    model_path = write_colour_checkpoint(tmp_path / "plain.ckpt")
    from oncoscope.train.checkpoint import load_model

    model, _ = load_model(model_path)
    checkpoint = write_checkpoint(model, spec, tmp_path / "stained.ckpt")

    runs = {}
    for normalise in (True, False):
        out = tmp_path / f"slide-{normalise}"
        options = SlideOptions(
            magnification=MAGNIFICATION, stride=1.0, precision="fp32", stain_normalize=normalise
        )
        batch = infer_slides(checkpoint, [generic_slide.path], out, options)
        assert not batch.failures, batch.failures
        summary = batch.outcomes[0].summary
        assert summary is not None
        runs[normalise] = (np.load(batch.outcomes[0].folder / "probabilities.npy"), summary)
    assert runs[True][1]["stain_normalized"] == "reinhard"
    assert runs[False][1]["stain_normalized"] == "off (--no-stain-normalize)"

    probabilities, summary = runs[True]
    grid = summary["grid"]
    origin = np.array(grid["origin_level0_xy"], float)
    step = float(grid["cell_size_level0_px"])
    slide = open_slide(generic_slide.path)
    target = slide.resolution(magnification=MAGNIFICATION)
    cells = np.argwhere(np.isfinite(probabilities[..., 0]))
    assert len(cells) > 20
    agree = 0
    for row, col in cells:
        tile = slide.read_at(tuple(origin + step * np.array([col, row])), (TILE_PX,) * 2, target)
        colour = fitted(tile).reshape(-1, 3).mean(axis=0) / 255
        expected = int(np.argmin(((CENTROIDS - colour) ** 2).sum(axis=1)))
        agree += int(np.argmax(probabilities[row, col]) == expected)
    assert agree == len(cells)
    # the slide's own colours give another map: the option matters
    unnormalised = runs[False][0]
    assert (
        np.argmax(unnormalised[tuple(cells.T)], -1) != np.argmax(probabilities[tuple(cells.T)], -1)
    ).any()


def test_the_scale_search_reads_crops_as_slide_does(
    generic_slide, reference, tmp_path, monkeypatch
):
    from oncoscope.inference.scale_search import search_scale
    from oncoscope.train.checkpoint import load_model

    fitted = StainNormalizer("reinhard").fit(read_rgb(reference))
    spec = dict(colour_spec())
    spec["preprocessing"] = {"stain": fitted.state()}
    model, _ = load_model(write_colour_checkpoint(tmp_path / "plain.ckpt"))
    checkpoint = write_checkpoint(model, spec, tmp_path / "stained.ckpt")
    normalised: list[np.ndarray] = []
    call = StainNormalizer.__call__

    def spy(self: StainNormalizer, rgb: np.ndarray) -> np.ndarray:
        normalised.append(rgb.copy())
        out: np.ndarray = call(self, rgb)
        return out

    monkeypatch.setattr(StainNormalizer, "__call__", spy)
    settings = {"scales": (5.0, 10.0), "points": 4, "seed": 1}
    search_scale(checkpoint, generic_slide.path, stain_normalize=False, **settings)
    assert normalised == []
    search_scale(checkpoint, generic_slide.path, **settings)
    assert len(normalised) == 2 * 4  # every crop of every scale
