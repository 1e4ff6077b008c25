"""The scale search on a synthetic slide with a small random-weight checkpoint: the pipeline
(crops centred on the points, training normalisation, pre-logits features), bias, bad input,
annotations (Table 1) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from shapely.geometry import Point, Polygon
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.errors import InvalidOptionError, MissingMetadataError, OncoscopeError
from oncoscope.inference.scale_search import search_scale, write_scale_outputs
from oncoscope.io.slides import open_slide
from oncoscope.models import create_model
from oncoscope.pathology.annotations import Annotation, write_geojson
from oncoscope.pathology.synthetic import default_regions, write_synthetic_slide

CLASSES = ["normal", "stroma", "tumour"]
KWARGS = {"input_size": 32, "channels": [4, 8], "hidden": [16], "dropout": 0.0}


def write_checkpoint(path: Path, *, in_chans: int = 3, classes: list[str] = CLASSES) -> Path:
    """An oncoscope checkpoint of a random-weight simple_cnn (32 px), as training writes it."""
    torch.manual_seed(0)
    model = create_model("simple_cnn", num_classes=len(classes), in_chans=in_chans, **KWARGS)
    spec = {
        "model": "simple_cnn",
        "model_kwargs": KWARGS,
        "classes": classes,
        "in_chans": in_chans,
        "image_size": 32,
        "mean": [0.6] * in_chans,
        "std": [0.2] * in_chans,
        "preprocessing": {"magnification": 20.0},
        "group_column": None,
        "manifest": "",
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"spec": spec}, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scale")
    slide = write_synthetic_slide(folder / "slide.tif", (2048, 1536), mpp=0.25)
    write_geojson(slide.regions, folder / "slide.geojson")
    return {
        "checkpoint": write_checkpoint(folder / "model.ckpt"),
        "slide": slide.path,
        "annotations": folder / "slide.geojson",
        "folder": folder,
    }


SCALES = [10, 14, 20, 28, 40]


def test_distances_are_those_of_centred_crops_through_the_pre_logits_features(inputs) -> None:
    result = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=4, seed=1)
    from oncoscope.train.checkpoint import load_model

    model, _ = load_model(inputs["checkpoint"])
    head = model.get_classifier()
    point = result.points[2]
    with open_slide(inputs["slide"]) as slide:
        for i, scale in enumerate(SCALES):
            side = 32 * 40 / scale  # level-0 pixels of a 32-px crop at this scale (x40 scan)
            crop = slide.read(
                (point.x - side / 2, point.y - side / 2), (32, 32), magnification=scale
            )
            image = (torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255 - 0.6) / 0.2
            with torch.no_grad():
                logits = model(image[None])[0]
                features = model.forward_head(model.forward_features(image[None]), True)[0]
            # the last layer on the pre-logits features is the whole model
            assert (head.weight @ features + head.bias).detach().numpy() == pytest.approx(
                logits.numpy(), abs=1e-4
            )
            expected = (head.weight @ features / head.weight.norm(dim=1)).detach().numpy()
            assert point.distances[i] == pytest.approx(expected, abs=1e-4)
            assert point.predicted[i] == CLASSES[int(logits.argmax())]
    best = SCALES[int(np.argmax(point.distances.max(axis=1)))]
    assert point.scale == best


def test_bias_shifts_each_class_curve_by_its_bias_over_its_norm(inputs) -> None:
    plain = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=5)
    signed = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=5, bias=True)
    from oncoscope.train.checkpoint import load_model

    head = load_model(inputs["checkpoint"])[0].get_classifier()
    shift = (head.bias / head.weight.norm(dim=1)).detach().numpy()
    assert signed.bias and not plain.bias
    for a, b in zip(plain.points, signed.points, strict=True):
        assert (a.x, a.y) == (b.x, b.y)  # same seed, same points
        assert b.distances - a.distances == pytest.approx(np.tile(shift, (len(SCALES), 1)))


def test_points_are_seeded_and_lie_in_tissue(inputs) -> None:
    a = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=20, seed=5)
    b = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=20, seed=5)
    assert [(p.x, p.y) for p in a.points] == [(p.x, p.y) for p in b.points]
    # tissue is the regions drawn; the tissue mask fills holes smaller than 0.01 mm^2
    outlines = [Polygon(r.geometry.exterior) for r in default_regions((2048, 1536))]
    for p in a.points:
        assert any(o.buffer(8).contains(Point(p.x, p.y)) for o in outlines)
    assert sum(a.histogram.values()) == 20
    assert a.histogram[a.winner] == max(a.histogram.values())


def test_scales_above_the_scan_are_refused_unless_upsampling_is_allowed(inputs) -> None:
    with pytest.raises(InvalidOptionError, match=r"x43 is above .* x40.*--allow-upsampling"):
        search_scale(inputs["checkpoint"], inputs["slide"], scales=[20, 43], points=2)
    with pytest.warns(UserWarning, match="upsampled"):
        result = search_scale(
            inputs["checkpoint"],
            inputs["slide"],
            scales=[20, 43],
            points=2,
            allow_upsampling=True,
        )
    assert result.upsampled == [43.0]
    assert result.to_json()["upsampled_scales"] == [43]


def test_bad_inputs_give_clear_errors(inputs, tmp_path: Path) -> None:
    blank = write_synthetic_slide(tmp_path / "blank.tif", (512, 512), mpp=0.25, regions=[])
    with pytest.raises(OncoscopeError, match="no tissue"):
        search_scale(inputs["checkpoint"], blank.path, scales=SCALES, points=3)
    ct = write_checkpoint(tmp_path / "ct.ckpt", in_chans=1)
    with pytest.raises(OncoscopeError, match="1-channel"):
        search_scale(ct, inputs["slide"], scales=SCALES, points=3)
    with pytest.raises(InvalidOptionError, match="at least two"):
        search_scale(inputs["checkpoint"], inputs["slide"], scales=[20], points=3)
    with pytest.raises(InvalidOptionError, match="more than the slide"):
        search_scale(inputs["checkpoint"], inputs["slide"], scales=[0.5, 20], points=3)
    other = tmp_path / "other.geojson"
    write_geojson([Annotation("lymphocytes", Point(1000, 760).buffer(1200))], other)
    with pytest.raises(OncoscopeError, match="no point lies in an annotation of the model"):
        search_scale(
            inputs["checkpoint"], inputs["slide"], scales=SCALES, points=3, annotations=other
        )


def test_annotations_add_per_class_accuracy_at_each_scale(inputs) -> None:
    result = search_scale(
        inputs["checkpoint"],
        inputs["slide"],
        scales=SCALES,
        points=30,
        annotations=inputs["annotations"],
    )
    table = result.table
    assert table is not None
    truth = {}
    for p in result.points:  # label each point by the polygon containing it, independently
        inside = [
            r.label
            for r in default_regions((2048, 1536))
            if r.geometry.contains(Point(p.x + 0.5, p.y + 0.5))
        ]
        truth[(p.x, p.y)] = inside[0] if inside else None
        assert p.label == truth[(p.x, p.y)]
    for name, count in table["points"].items():
        assert count == sum(v == name for v in truth.values())
    for i, row in enumerate(table["rows"]):
        assert row["scale"] == SCALES[i]
        assert row["votes"] == result.histogram[SCALES[i]]
        for name, accuracy in row["accuracy"].items():
            mine = [p.predicted[i] == name for p in result.points if p.label == name]
            assert accuracy == pytest.approx(sum(mine) / len(mine))
        assert row["mean"] == pytest.approx(np.mean(list(row["accuracy"].values())))


def test_cli_writes_scale_json_and_figures(inputs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "scale",
        str(inputs["checkpoint"]),
        str(inputs["slide"]),
        "--scales",
        "10,14,20,28,40",
        "--points",
        "12",
        "--out",
        str(out),
        "--annotations",
        str(inputs["annotations"]),
    ]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    record = json.loads((out / "scale.json").read_text())
    assert record["scales"] == SCALES and record["classes"] == CLASSES
    assert record["bias"] is False and record["trained_magnification"] == 20.0
    assert sum(record["histogram"].values()) == 12 and len(record["points"]) == 12
    assert record["winner"] in SCALES
    assert record["histogram"][str(record["winner"])] == max(record["histogram"].values())
    point = record["points"][0]
    assert {"x", "y", "scale", "curve", "distances", "label"} <= set(point)
    assert np.array(point["distances"]).shape == (5, 3)
    assert set(record["widen"]) >= {"low", "high", "message"}
    assert record["table"]["rows"][0]["scale"] == 10
    for name in ("scale_histogram.png", "scale_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "scale: x" in run.output and "accuracy per class" in run.output
    refused = CliRunner().invoke(app, [*args[:3], "--scales", "20,43", "--out", str(out)])
    assert refused.exit_code == 2
    assert "--allow-upsampling" in refused.output and "Traceback" not in refused.output


def test_write_outputs_round_trips_the_points(inputs, tmp_path: Path) -> None:
    result = search_scale(inputs["checkpoint"], inputs["slide"], scales=SCALES, points=3)
    paths = write_scale_outputs(result, tmp_path)
    record = json.loads(paths["json"].read_text())
    for p, entry in zip(result.points, record["points"], strict=True):
        assert (entry["x"], entry["y"], entry["scale"]) == (p.x, p.y, p.scale)
        assert np.array(entry["distances"]) == pytest.approx(p.distances, abs=1e-5)


def _without_metadata(source: Path, path: Path) -> Path:
    """The slide's level 0 as a tiled TIFF with neither resolution tags nor objective power."""
    image = tifffile.imread(source)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", metadata=None)
    return path


def test_scan_overrides_stand_in_for_missing_metadata(inputs, tmp_path: Path) -> None:
    bare = _without_metadata(inputs["slide"], tmp_path / "bare.tif")
    with pytest.raises(MissingMetadataError, match="--mpp-of-scan"):
        search_scale(inputs["checkpoint"], bare, scales=SCALES, points=2)
    result = search_scale(inputs["checkpoint"], bare, scales=SCALES, points=4, scan_mpp=0.25)
    assert (result.slide_mpp, result.slide_magnification) == (0.25, 40)
    assert result.upsampled == []  # x40 is the scan's own resolution, given by the override


def test_scan_magnification_override_replaces_a_wrong_one(inputs) -> None:
    # The file says x40. Told that the scan is x20, the search reads x10 with downsample 2:
    # the pixels the file's own x20 gives. Same largest crop (64 level-0 px), same points.
    told = search_scale(
        inputs["checkpoint"], inputs["slide"], scales=[10, 20], points=6, seed=4,
        scan_magnification=20,
    )  # fmt: skip
    stated = search_scale(inputs["checkpoint"], inputs["slide"], scales=[20, 40], points=6, seed=4)
    assert told.slide_magnification == 20 and stated.slide_magnification == 40
    for a, b in zip(told.points, stated.points, strict=True):
        assert (a.x, a.y) == (b.x, b.y)
        assert a.distances == pytest.approx(b.distances, abs=1e-9)


def test_cli_takes_the_scan_overrides(inputs, tmp_path: Path) -> None:
    bare = _without_metadata(inputs["slide"], tmp_path / "bare.tif")
    out = tmp_path / "out"
    args = ["scale", str(inputs["checkpoint"]), str(bare), "--out", str(out)]
    args += ["--scales", "10,20,40", "--points", "3"]
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "--mpp-of-scan" in missing.output
    run = CliRunner().invoke(app, [*args, "--mpp-of-scan", "0.25"])
    assert run.exit_code == 0, run.output
    record = json.loads((out / "scale.json").read_text())
    assert (record["slide_mpp"], record["slide_magnification"]) == (0.25, 40)
    run = CliRunner().invoke(app, [*args, "--magnification-of-scan", "20"])
    assert run.exit_code == 2 and "x40 is above the slide's scan magnification x20" in run.output
