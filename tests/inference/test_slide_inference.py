"""Whole-slide inference on synthetic slides whose class regions are known exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import maximum_filter, minimum_filter

from oncoscope.errors import InvalidOptionError, NoTissueError, OncoscopeError
from oncoscope.inference.patches import TileDataset, tile_grid
from oncoscope.inference.predict_tiles import predict_tiles
from oncoscope.inference.slide_inference import SlideOptions, infer_slide, load_classifier
from oncoscope.io.slides import open_slide
from oncoscope.pathology.annotations import rasterize, read_geojson, write_geojson
from oncoscope.pathology.synthetic import SyntheticSlide, write_synthetic_slide
from oncoscope.pathology.tissue import tissue_mask
from tests.inference.conftest import CLASSES, write_colour_checkpoint

OPTIONS = SlideOptions(magnification=10, stride=0.5, precision="fp32")


@pytest.fixture(scope="module")
def result(
    generic_slide: SyntheticSlide, colour_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("slide-out")
    geojson = out / "truth.geojson"
    write_geojson(generic_slide.regions, geojson)
    classifier = load_classifier(colour_checkpoint)
    outcome = infer_slide(classifier, generic_slide.path, out, OPTIONS, annotations=geojson)
    assert outcome.summary is not None
    return outcome.folder, outcome.summary


def _truth(slide: SyntheticSlide, summary: dict[str, Any]) -> np.ndarray:
    """Class index (in CLASSES) at each cell centre from the drawn polygons; 0 = background."""
    rows, cols = summary["grid"]["shape_rows_cols"]
    cell = summary["grid"]["cell_size_level0_px"]
    drawn = rasterize(slide.regions, (cols, rows), cell, CLASSES[1:])
    return drawn.astype(int)


def test_map_matches_the_known_regions(
    result: tuple[Path, dict[str, Any]], generic_slide: SyntheticSlide
) -> None:
    folder, summary = result
    probabilities = np.load(folder / "probabilities.npy")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (*summary["grid"]["shape_rows_cols"], len(CLASSES))
    computed = ~np.isnan(probabilities).any(axis=-1)
    np.testing.assert_allclose(probabilities[computed].sum(axis=-1), 1.0, atol=1e-5)
    truth = _truth(generic_slide, summary)
    tissue = truth > 0
    # every tissue cell is classified, and the map's argmax is the drawn class almost everywhere
    assert computed[tissue].mean() > 0.98
    right = probabilities.argmax(axis=-1) == truth
    assert right[tissue & computed].mean() > 0.85
    # away from region edges (no tile covering the cell reaches another class) it is exact;
    # at edges the colour model sees a mix of two colours, as a real classifier sees two tissues
    k = 2  # cells per tile side at stride 0.5
    interior = maximum_filter(truth, 2 * k + 1) == minimum_filter(truth, 2 * k + 1)
    assert right[tissue & interior].mean() > 0.995
    assert (tissue & interior).sum() > 0.5 * tissue.sum()
    # the 0.25 um/px, 4096 px wide slide read at x10 (1 um/px): cells of 16 px = 64 level-0 px
    assert summary["mpp"] == pytest.approx(1.0) and summary["grid"]["cell_size_level0_px"] == 64


def test_summary_fractions_follow_the_map_and_the_truth(
    result: tuple[Path, dict[str, Any]], generic_slide: SyntheticSlide
) -> None:
    folder, summary = result
    probabilities = np.load(folder / "probabilities.npy")
    computed = ~np.isnan(probabilities).any(axis=-1)
    argmax = np.where(computed, np.nan_to_num(probabilities, nan=0).argmax(axis=-1), -1)
    w, h = generic_slide.size_wh
    # 4096 x 3072 is a whole number of 64-px cells: every cell is 64 x 64 level-0 px
    for index, name in enumerate(CLASSES):
        expected = (argmax == index).sum() * 64 * 64 / (w * h)
        assert summary["classes"][name]["fraction"] == pytest.approx(expected)
        mm2 = (argmax == index).sum() * (64 * 0.25) ** 2 / 1e6
        assert summary["classes"][name]["area_mm2"] == pytest.approx(mm2)
    # the tumour rectangle spans 0.35 x 0.35 of the slide
    assert summary["classes"]["tumour"]["fraction"] == pytest.approx(0.35 * 0.35, abs=0.01)
    assert summary["class_names"] == CLASSES
    assert set(summary["colors"]) == set(CLASSES)
    assert summary["tiles"] > 0 and summary["tiles_per_second"] > 0
    assert summary["tile_size_px"] == 32 and summary["stride"] == 0.5
    assert summary["slide_dimensions_level0"] == [w, h] and summary["slide_mpp"] == 0.25


def test_regions_geojson_loads_back_with_the_map_areas(
    result: tuple[Path, dict[str, Any]],
) -> None:
    folder, summary = result
    raw = json.loads((folder / "regions.geojson").read_text())
    assert raw["type"] == "FeatureCollection"
    assert all(f["properties"]["objectType"] == "annotation" for f in raw["features"])
    regions = read_geojson(folder / "regions.geojson")
    by_label = {r.label: r.geometry for r in regions}
    assert set(by_label) <= set(CLASSES)
    for name, geometry in by_label.items():
        area_mm2 = geometry.area * 0.25**2 / 1e6  # level-0 px^2 -> mm^2
        assert area_mm2 == pytest.approx(summary["classes"][name]["area_mm2"], rel=1e-6)
    w, h = summary["slide_dimensions_level0"]
    assert max(g.bounds[2] for g in by_label.values()) <= w
    assert max(g.bounds[3] for g in by_label.values()) <= h


def test_annotation_scores_and_figures(result: tuple[Path, dict[str, Any]]) -> None:
    folder, summary = result
    scores = summary["annotations"]
    assert scores["cells"] > 0 and scores["accuracy"] > 0.85
    for name in ("tumour", "stroma", "normal"):
        assert scores["classes"][name]["recall"] > 0.75
        assert scores["classes"][name]["precision"] > 0.75
    for name in ("heatmap.png", "segmentation.png", "status.json"):
        assert (folder / name).stat().st_size > 0
    assert summary["heatmap_class"] == "tumour"
    assert not (folder / ".work").exists()


def test_probability_tiff_is_a_pyramid_overlaying_level_0(
    result: tuple[Path, dict[str, Any]],
) -> None:
    folder, summary = result
    probabilities = np.load(folder / "probabilities.npy")
    with tifffile.TiffFile(folder / "probabilities.tif") as tif:
        page = tif.pages[0]
        np.testing.assert_array_equal(page.asarray(), probabilities)
        numerator, denominator = page.tags["XResolution"].value
        um_per_px = 1e4 / (numerator / denominator)
    assert um_per_px == pytest.approx(summary["grid"]["cell_size_level0_px"] * 0.25, rel=1e-4)


def test_lightning_predict_on_one_device_gives_the_same_map(
    result: tuple[Path, dict[str, Any]],
    generic_slide: SyntheticSlide,
    colour_checkpoint: Path,
    tmp_path: Path,
) -> None:
    folder, _ = result
    options = replace(OPTIONS, devices=1, accelerator="cpu")
    outcome = infer_slide(load_classifier(colour_checkpoint), generic_slide.path, tmp_path, options)
    np.testing.assert_allclose(
        np.load(outcome.folder / "probabilities.npy"),
        np.load(folder / "probabilities.npy"),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bf16_agrees_with_fp32_on_the_patches(small_slide: Path, colour_checkpoint: Path) -> None:
    classifier = load_classifier(colour_checkpoint, torch.device("cpu"))
    with open_slide(small_slide) as slide:
        target = slide.resolution(magnification=10)
        thumb, ds = slide.thumbnail(1024)
        grid = tile_grid(slide.dimensions, target, 32, 0.5, tissue_mask(thumb, ds, mpp=slide.mpp))
    dataset = TileDataset(small_slide, grid.positions_level0, 32, target)
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = np.zeros((len(grid), len(CLASSES)), dtype=np.float32)
        predict_tiles(
            classifier.model, classifier.spec, dataset, runs[precision], precision=precision
        )
    assert len(grid) > 50
    agreement = (runs["fp32"].argmax(1) == runs["bf16"].argmax(1)).mean()
    assert agreement >= 0.995
    assert np.abs(runs["fp32"] - runs["bf16"]).max() < 0.05


def test_reduced_precision_writes_its_agreement(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    options = replace(OPTIONS, precision="bf16", stride=1.0)
    summary = infer_slide(
        load_classifier(colour_checkpoint), small_slide, tmp_path, options
    ).summary
    assert summary is not None and summary["precision"] == "bf16"
    assert summary["precision_agreement"]["argmax_agreement"] >= 0.995
    # 1% of the tiles, at least 16
    assert 16 < summary["tiles"] < 1600
    assert summary["precision_agreement"]["tiles"] == 16
    assert summary["phase_seconds"]["precision_agreement"] > 0

    larger = replace(options, agreement_tiles=40, overwrite=True)
    summary = infer_slide(load_classifier(colour_checkpoint), small_slide, tmp_path, larger).summary
    assert summary is not None and summary["precision_agreement"]["tiles"] == 40

    off = replace(options, agreement_tiles=0, overwrite=True)
    summary = infer_slide(load_classifier(colour_checkpoint), small_slide, tmp_path, off).summary
    assert summary is not None and summary["precision"] == "bf16"
    assert "precision_agreement" not in summary
    assert "precision_agreement" not in summary["phase_seconds"]


def test_bad_inputs_give_clear_errors(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    grey = write_colour_checkpoint(tmp_path / "grey.ckpt", in_chans=1)
    with pytest.raises(OncoscopeError, match="1-channel input; slides are RGB"):
        load_classifier(grey)
    classifier = load_classifier(colour_checkpoint)
    with pytest.raises(InvalidOptionError, match=r"finer than the scan.*--allow-upsampling"):
        infer_slide(classifier, small_slide, tmp_path, replace(OPTIONS, magnification=80))
    with pytest.raises(InvalidOptionError, match="stride"):
        infer_slide(classifier, small_slide, tmp_path, replace(OPTIONS, stride=0.3))
    blank = write_synthetic_slide(tmp_path / "blank.tif", (1024, 768), regions=[]).path
    with pytest.raises(NoTissueError, match="no tissue"):
        infer_slide(classifier, blank, tmp_path, OPTIONS)


def test_upsampling_when_allowed_is_warned(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    options = replace(OPTIONS, magnification=60, allow_upsampling=True, stride=1.0)
    outcome = infer_slide(load_classifier(colour_checkpoint), small_slide, tmp_path, options)
    assert outcome.summary is not None and outcome.summary["magnification"] == pytest.approx(60)
    assert any("upsampling" in w for w in outcome.warnings)


def test_batches_hold_exactly_the_tiles_read_one_by_one(
    generic_slide: SyntheticSlide,
) -> None:
    with open_slide(generic_slide.path) as slide:
        for magnification in (10, 15):  # a pyramid level as it is; a resampled read
            target = slide.resolution(magnification=magnification)
            thumb, ds = slide.thumbnail(1024)
            grid = tile_grid(
                slide.dimensions, target, 32, 0.5, tissue_mask(thumb, ds, mpp=slide.mpp)
            )
            dataset = TileDataset(generic_slide.path, grid.positions_level0, 32, target)
            # the truth: each tile read on its own through the public reader
            truth = np.stack(
                [
                    slide.read((float(x), float(y)), (32, 32), magnification=magnification)
                    for x, y in grid.positions_level0
                ]
            )
            batches = dataset.batches(7)
            assert len(batches) == -(-len(grid) // 7)
            tiles = torch.cat([batches[i][0] for i in range(len(batches))]).numpy()
            indices = torch.cat([batches[i][1] for i in range(len(batches))]).numpy()
            np.testing.assert_array_equal(indices, np.arange(len(grid)))
            np.testing.assert_array_equal(tiles, truth)
            np.testing.assert_array_equal(dataset[5][0].numpy(), truth[5])
            chosen = np.array([9, 2, len(grid) - 1])
            some_tiles, index = dataset.batches(16, chosen)[0]
            np.testing.assert_array_equal(index.numpy(), chosen)
            np.testing.assert_array_equal(some_tiles.numpy(), truth[chosen])
            with pytest.raises(IndexError):
                batches[len(batches)]


def test_summary_splits_the_seconds_into_phases(result: tuple[Path, dict[str, Any]]) -> None:
    _, summary = result
    phases = summary["phase_seconds"]
    assert list(phases) == ["tissue_and_grid", "tiles", "map", "outputs"]
    assert all(value >= 0 for value in phases.values())
    assert sum(phases.values()) == pytest.approx(summary["seconds"], rel=0.02, abs=0.05)
