from __future__ import annotations

import json
import shutil
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from PIL import Image
from shapely import box, unary_union
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.dataset.manifest import read_manifest
from oncoscope.errors import InvalidOptionError
from oncoscope.pathology.annotations import rasterize, write_geojson
from oncoscope.pathology.synthetic import write_synthetic_slide
from oncoscope.pathology.tile_dataset import WSI_COLUMNS, TileOptions, tile_slides

runner = CliRunner()


def _grid(length, extent, overlap):
    starts, j, stride = [], 0, extent * (1 - overlap)
    while round(j * stride) + extent <= length:
        starts.append(round(j * stride))
        j += 1
    return starts


def test_tiles_follow_the_grid_and_record_level0_corners_and_mpp(generic_slide, tmp_path):
    result = runner.invoke(
        app,
        ["wsi", "tile", str(generic_slide.path), "--out", str(tmp_path), "--size", "256",
         "--magnification", "20", "--overlap", "0.3", "--min-coverage", "0.5",
         "--split", "1:0:0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert tuple(manifest.columns) == WSI_COLUMNS
    w, h = generic_slide.size_wh
    extent = 512  # 256 px at x20 on a x40 scan
    grid = {(x, y) for y in _grid(h, extent, 0.3) for x in _grid(w, extent, 0.3)}
    assert set(zip(manifest["x"], manifest["y"], strict=True)) <= grid
    tissue = unary_union([r.geometry for r in generic_slide.regions])
    fractions = {(x, y): tissue.intersection(box(x, y, x + extent, y + extent)).area / extent**2
                 for x, y in grid}  # fmt: skip
    clearly_in = {p for p, f in fractions.items() if f > 0.6}
    clearly_out = {p for p, f in fractions.items() if f < 0.4}
    kept = set(zip(manifest["x"], manifest["y"], strict=True))
    assert clearly_in <= kept and not (clearly_out & kept)
    for row in manifest.itertuples():
        assert row.coverage == pytest.approx(fractions[(row.x, row.y)], abs=0.06)
    assert (manifest["mpp"] == 0.5).all() and (manifest["magnification"] == 20).all()
    assert (manifest["size"] == 256).all() and (manifest["label"] == "tissue").all()
    assert (manifest["split"] == "train").all() and (manifest["group"] == "a").all()
    tile = np.asarray(Image.open(tmp_path / manifest["path"][0]))
    assert tile.shape == (256, 256, 3)
    learning_view = read_manifest(tmp_path / "manifest.csv")  # what the learning commands read
    assert len(learning_view) == len(manifest) and (learning_view["group"] == "a").all()
    folder = tmp_path / "a"
    assert (folder / "tissue.png").exists() and (folder / "overlay.png").exists()
    record = json.loads((folder / "slide.json").read_text())
    assert record["tile"]["mpp"] == 0.5 and record["tile"]["level"] == 1
    assert json.loads((tmp_path / "tile.json").read_text())["failures"] == []


def test_annotated_tiles_take_the_majority_label_and_its_coverage(
    slide_dir, generic_slide, tmp_path
):
    options = TileOptions(size_px=128, magnification=10, overlap=0.0, ratio=(1, 0, 0), random=5)
    report = tile_slides([generic_slide.path], tmp_path, options, annotations=slide_dir)
    rows = pd.DataFrame(report.rows)
    assert set(rows["label"]) == {"tumour", "stroma", "normal"}
    assert set(rows["kind"]) == {"grid", "random"} and (rows["kind"] == "random").sum() == 5
    for row in rows.itertuples():
        tile = box(row.x, row.y, row.x + 512, row.y + 512)
        areas = {
            r.label: r.geometry.intersection(tile).area / 512**2 for r in generic_slide.regions
        }
        assert row.label == max(areas, key=areas.get)
        assert row.coverage == pytest.approx(areas[row.label], abs=1e-6)
        assert row.coverage >= 0.5


def test_slides_are_split_whole_and_bad_slides_are_reported_while_others_are_tiled(
    slide_dir, tmp_path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(slide_dir / f"{name}.tif", inputs / f"{name}.tif")
    (inputs / "broken.svs").write_bytes(b"II*\x00 not really a slide")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["wsi", "tile", str(inputs), "--out", str(out), "--split", "1:1:1",
              "--magnification", "5", "--size", "128", "--workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.strip().startswith("error:")]
    assert len(errors) == 1 and "broken.svs" in errors[0]
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest.groupby("slide")["split"].nunique().max() == 1
    assert sorted(manifest.groupby("slide")["split"].first()) == ["test", "train", "val"]


def test_the_interface_command_on_an_aperio_svs_without_annotations(aperio_slide, tmp_path):
    result = runner.invoke(
        app, ["wsi", "tile", str(aperio_slide.path), "--out", str(tmp_path), "--size", "256",
              "--magnification", "20", "--overlap", "0.3", "--min-coverage", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "all go to train" in result.output  # one slide cannot fill the default 3:1:1
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    expected = ["path", "slide", "x", "y", "size", "magnification", "mpp", "label", "coverage",
                "split"]  # fmt: skip
    assert list(manifest.columns[:10]) == expected and len(manifest) > 0
    assert (manifest["split"] == "train").all() and (manifest["label"] == "tissue").all()
    assert manifest["mpp"].unique().tolist() == [pytest.approx(0.505)]  # 2 x the scan's 0.2525
    assert (manifest["magnification"] == 20).all()
    w, h = aperio_slide.size_wh
    grid = {(x, y) for y in _grid(h, 512, 0.3) for x in _grid(w, 512, 0.3)}
    assert set(zip(manifest["x"], manifest["y"], strict=True)) <= grid


def test_an_explicit_split_too_large_for_the_slides_is_an_error(generic_slide, tmp_path):
    with pytest.raises(InvalidOptionError, match="--split 1:0:0"):
        tile_slides([generic_slide.path], tmp_path, TileOptions(ratio=(0.6, 0.2, 0.2)))


def test_blank_slide_warns_and_writes_no_tiles(tmp_path):
    blank = write_synthetic_slide(tmp_path / "blank.tif", (1024, 1024), regions=[])
    result = runner.invoke(
        app, ["wsi", "tile", str(blank.path), "--out", str(tmp_path / "o"), "--split", "1:0:0"]
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "no tissue" in result.output
    assert len(pd.read_csv(tmp_path / "o" / "manifest.csv")) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "4000", "--magnification", "20"], "smaller --size"),
        (["--magnification", "80"], "finer than the scan's"),
        (["--mpp", "0.5", "--magnification", "20"], "not both"),
        (["--edge", "pad"], "--edge 'pad' is not one of drop, shift"),
    ],
)
def test_bad_options_are_one_line_errors(generic_slide, tmp_path, args, message):
    result = runner.invoke(
        app, ["wsi", "tile", str(generic_slide.path), "--out", str(tmp_path), "--split", "1:0:0",
              "--strict", *args],
    )  # fmt: skip
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_invalid_annotations_fail_that_slide(generic_slide, tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 9], [9, 0], [0, 9], [0, 0]]]},
        "properties": {}}]}))  # fmt: skip
    result = runner.invoke(
        app, ["wsi", "tile", str(generic_slide.path), "--out", str(tmp_path / "o"), "--split",
              "1:0:0", "--annotations", str(bad)],
    )  # fmt: skip
    assert result.exit_code == 2 and "Self-intersection" in result.output


@pytest.mark.parametrize("fmt", ["hdf5", "zarr"])
def test_hdf5_and_zarr_hold_the_same_pixels_as_png(generic_slide, tmp_path, fmt):
    base = TileOptions(size_px=128, magnification=5, ratio=(1, 0, 0))
    png = tile_slides([generic_slide.path], tmp_path / "png", base)
    store = tile_slides(
        [generic_slide.path], tmp_path / fmt, TileOptions(**{**base.__dict__, "tile_format": fmt})
    )
    assert len(png.rows) == len(store.rows) > 0
    name, index = store.rows[-1]["path"].split("#")
    if fmt == "hdf5":
        with h5py.File(tmp_path / fmt / name) as f:
            pixels, xy = f["tiles"][int(index)], f["xy"][int(index)]
    else:
        group = zarr.open_group(str(tmp_path / fmt / name), mode="r")
        pixels, xy = group["tiles"][int(index)], group["xy"][int(index)]
    expected = np.asarray(Image.open(tmp_path / "png" / png.rows[-1]["path"]))
    np.testing.assert_array_equal(pixels, expected)
    assert tuple(xy) == (png.rows[-1]["x"], png.rows[-1]["y"])


def test_wsi_info_prints_pyramid_and_resolution(aperio_slide):
    result = runner.invoke(app, ["wsi", "info", str(aperio_slide.path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["vendor"] == "aperio" and facts["magnification"] == 40
    assert len(facts["levels"]) == 4 and facts["mpp"] == pytest.approx(0.2525)


def test_wsi_demo_tiles_a_synthetic_slide_and_saves_the_overlay(tmp_path):
    from oncoscope.demo import run_wsi_demo

    result = run_wsi_demo(tmp_path)
    rows = pd.DataFrame(result.tiles.rows)
    assert set(rows["label"]) == {"tumour", "stroma", "normal"}
    assert (rows["coverage"] >= 0.5).all() and (rows["kind"] == "random").sum() == 3 * 20
    assert Image.open(result.overlay).size == (1024, 768)
    # three slides, one per split, each holding every class
    assert rows.groupby("slide")["split"].nunique().eq(1).all()
    assert sorted(rows.groupby("slide")["split"].first()) == ["test", "train", "val"]
    assert rows.groupby("slide")["label"].nunique().eq(3).all()
    # slide 2 is slide 1 mirrored left-right: its tumour (x 10-45 % of 8192 px) lies on the right
    tumour = rows[(rows["label"] == "tumour") & (rows["slide"] == "synthetic-2")]
    centres = tumour["x"] + tumour["size"] * 4 / 2  # 256 px at x10 on a x40 scan: 1024 level-0 px
    assert (centres > 8192 / 2).all()


def test_stain_normalize_option_maps_tiles_to_the_reference(generic_slide, tmp_path):
    from skimage.data import immunohistochemistry

    reference = tmp_path / "reference.png"
    Image.fromarray(immunohistochemistry()[:256, :256]).save(reference)
    base = {"size_px": 128, "magnification": 5, "ratio": (1, 0, 0)}
    plain = tile_slides([generic_slide.path], tmp_path / "plain", TileOptions(**base))
    normed = tile_slides(
        [generic_slide.path],
        tmp_path / "normed",
        TileOptions(**base, stain_reference=str(reference), stain_method="reinhard"),
    )
    first = np.asarray(Image.open(tmp_path / "plain" / plain.rows[0]["path"]), dtype=float)
    second = np.asarray(Image.open(tmp_path / "normed" / normed.rows[0]["path"]), dtype=float)
    target = np.asarray(Image.open(reference), dtype=float).reshape(-1, 3).mean(axis=0)
    # the tile's mean colour moves towards the reference's
    moved = np.linalg.norm(second.reshape(-1, 3).mean(axis=0) - target)
    assert moved < np.linalg.norm(first.reshape(-1, 3).mean(axis=0) - target)


def test_wsi_info_on_a_file_that_is_not_a_slide_is_one_line(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("hello")
    result = runner.invoke(app, ["wsi", "info", str(path)])
    assert result.exit_code == 2 and "notes.svs: is not a slide" in result.output


def _feature(geometry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": "tumour"}}


SQUARE_OUTSIDE = {
    "type": "Polygon",
    "coordinates": [[[5000, 100], [6000, 100], [6000, 900], [5000, 900], [5000, 100]]],
}


@pytest.mark.parametrize(
    ("features", "why"),
    [
        ([], "has no features"),
        (
            [_feature({"type": "Point", "coordinates": [50, 50]})] * 2,
            "has no Polygon or MultiPolygon, only Point (2 feature(s))",
        ),
        (
            [_feature(SQUARE_OUTSIDE)],
            "has 1 polygon(s), all outside the slide (0-1024 x 0-768 level-0 px; "
            "they span x 5000-6000, y 100-900)",
        ),
    ],
    ids=["empty", "points", "outside"],
)
def test_annotations_that_label_nothing_are_warned_naming_the_file(tmp_path, features, why):
    slide = write_synthetic_slide(tmp_path / "s.tif", (1024, 768)).path
    geojson = tmp_path / "s.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = runner.invoke(
        app, ["wsi", "tile", str(slide), "--out", str(tmp_path / "o"), "--split", "1:0:0",
              "--size", "64", "--magnification", "10", "--annotations", str(geojson)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"warning: {slide}: annotations {geojson} {why}" in output
    assert "no tile is labelled" in output
    assert "wrote 0 tiles" in output


def test_annotations_that_label_the_slide_give_no_such_warning(tmp_path):
    made = write_synthetic_slide(tmp_path / "s.tif", (1024, 768))
    geojson = write_geojson(made.regions, tmp_path / "s.geojson")
    options = TileOptions(size_px=64, magnification=10, overlap=0.0, ratio=(1, 0, 0))
    report = tile_slides([made.path], tmp_path / "o", options, annotations=geojson)
    assert report.rows and not [w for w in report.warnings if "no tile is labelled" in w[1]]


def test_label_masks_are_8_or_16_bit_class_indices(tmp_path):
    made = write_synthetic_slide(tmp_path / "s.tif", (1024, 768))
    options = TileOptions(size_px=64, magnification=10, overlap=0.0, ratio=(1, 0, 0))
    # 16-bit: class 1000 is the tumour rectangle (drawn at a downsample of 4)
    drawn = rasterize(made.regions, (256, 192), 4.0, ["tumour", "stroma", "normal"])
    wide = np.where(drawn == 1, 1000, drawn.astype(np.uint16)).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    (tmp_path / "wide.json").write_text(json.dumps({"1000": "tumour", "2": "stroma"}))
    rows = tile_slides([made.path], tmp_path / "o", options, annotations=tmp_path / "wide.png").rows
    tumour = next(r for r in made.regions if r.label == "tumour").geometry
    for row in rows:
        inside = tumour.intersection(box(row["x"], row["y"], row["x"] + 256, row["y"] + 256))
        assert (row["label"] == "tumour") == (inside.area / 256**2 >= 0.5)
    assert "tumour" in {r["label"] for r in rows}

    zero = tmp_path / "zero.png"
    Image.fromarray(np.zeros((192, 256), np.uint8)).save(zero)
    report = tile_slides([made.path], tmp_path / "o2", options, annotations=zero)
    assert any("is a label mask of only 0" in w for _, w in report.warnings)

    for name, values, message in [
        ("float.tif", drawn.astype(np.float32) + 0.5, "float32 values"),
        ("signed.tif", drawn.astype(np.int32) - 1, "from -1 to 2"),
    ]:
        tifffile.imwrite(tmp_path / name, values)
        report = tile_slides(
            [made.path], tmp_path / f"o-{name}", options, annotations=tmp_path / name
        )
        assert len(report.failures) == 1 and message in report.failures[0][1]


def test_overlay_tints_the_tissue_green_and_outlines_the_kept_tiles():
    """The QC overlay: thumbnail pixels under the tissue mask are 0.8 of themselves plus 0.2 of
    (0, 200, 0), the others untouched; a kept tile is outlined at its place."""
    from oncoscope.pathology.tile_dataset import _overlay
    from oncoscope.pathology.tissue import TissueMask

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    mask = np.zeros((16, 24), bool)  # 4 thumbnail px per mask px
    mask[4:12, 6:18] = True
    tissue = TissueMask(mask=mask, downsample=8.0, threshold=0.1)
    image = np.asarray(_overlay((pixels, 2.0), tissue, [(8, 8, "t", 1.0, "grid")], 40.0))
    inside = np.kron(mask, np.ones((4, 4), bool))
    expected = pixels.astype(float)
    expected[inside] = 0.8 * expected[inside] + 0.2 * np.array([0, 200, 0])
    outline = np.zeros(inside.shape, bool)
    outline[4:25, 4:25] = True
    outline[5:24, 5:24] = False  # the tile at level-0 (8, 8), 40 px wide: thumbnail 4..24
    assert np.abs(image[~outline].astype(float) - expected[~outline]).max() <= 1.0
    assert (image[outline] == (0, 0, 255)).all()
