from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from shapely import box
from shapely.geometry import shape

from oncoscope.errors import InvalidAnnotationError
from oncoscope.pathology.annotations import (
    MaskLabels,
    PolygonLabels,
    best_label,
    rasterize,
    read_geojson,
    read_label_mask,
    write_geojson,
)
from oncoscope.pathology.synthetic import default_regions

QUPATH_EXPORT = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "1b2c",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]],
                    [[25, 25], [75, 25], [75, 75], [25, 75], [25, 25]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[200, 0], [300, 0], [300, 50], [200, 50], [200, 0]]],
                    [[[200, 60], [300, 60], [300, 100], [200, 100], [200, 60]]],
                ],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [5, 5]},
            "properties": {"objectType": "annotation"},
        },
    ],
}


def test_reads_qupath_polygons_with_holes_and_multipolygons(tmp_path):
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(QUPATH_EXPORT))
    annotations = read_geojson(path)
    assert [a.label for a in annotations] == ["Tumor", "Stroma"]  # the point has no area
    assert annotations[0].geometry.area == 100 * 100 - 50 * 50
    assert annotations[1].geometry.area == 100 * 50 + 100 * 40


def test_geojson_round_trips_both_ways(tmp_path):
    source = tmp_path / "qupath.geojson"
    source.write_text(json.dumps(QUPATH_EXPORT))
    written = write_geojson(read_geojson(source), tmp_path / "out.geojson")
    data = json.loads(written.read_text())
    kept = QUPATH_EXPORT["features"][:2]
    assert [f["properties"]["classification"]["name"] for f in data["features"]] == [
        f["properties"]["classification"]["name"] for f in kept
    ]
    for mine, theirs in zip(data["features"], kept, strict=True):
        assert shape(mine["geometry"]).equals(shape(theirs["geometry"]))
    regions = default_regions((4000, 3000))
    again = read_geojson(write_geojson(regions, tmp_path / "regions.geojson"))
    assert [a.label for a in again] == [r.label for r in regions]
    assert all(a.geometry.equals(r.geometry) for a, r in zip(again, regions, strict=True))


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ({"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]},
         "feature 0 is not a valid polygon .*Self-intersection"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "feature 0"),
    ],
)  # fmt: skip
def test_invalid_or_self_intersecting_polygons_are_clear_errors(tmp_path, geometry, message):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geometry, "properties": {}}]}))  # fmt: skip
    with pytest.raises(InvalidAnnotationError, match=message):
        read_geojson(path)
    path.write_text("{not json")
    with pytest.raises(InvalidAnnotationError, match=r"bad\.geojson"):
        read_geojson(path)


def test_tile_takes_the_label_covering_most_of_it_with_its_coverage(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(QUPATH_EXPORT))
    labels = PolygonLabels(read_geojson(path))
    # 40 x 40 tile at (80, 0): tumour over x in [80, 100) minus nothing (hole starts at 25..75 y)
    coverage = labels.coverage((80, 0), (40, 40))
    assert coverage == {"Tumor": pytest.approx(20 * 25 / 1600 + 20 * 15 / 1600)}
    assert best_label(labels.coverage((190, 0), (40, 40))) == ("Stroma", pytest.approx(0.75))
    assert labels.coverage((30, 30), (40, 40)) == {}  # inside the hole


def test_label_mask_gives_the_same_coverage_as_the_polygons(tmp_path):
    regions = default_regions((4000, 3000))
    classes = ["tumour", "stroma", "normal"]
    mask = rasterize(regions, (500, 375), 8.0, classes)
    path = tmp_path / "labels.png"  # a label mask as a user draws it, with its class names
    Image.fromarray(mask).save(path)
    path.with_suffix(".json").write_text(json.dumps({"1": "tumour", "2": "stroma", "3": "normal"}))
    from_file = read_label_mask(path, (4000, 3000))
    assert isinstance(from_file, MaskLabels) and from_file.downsample == 8.0
    polygons = PolygonLabels(regions)
    for x, y in [(300, 300), (1700, 1000), (2400, 700), (2500, 500), (1000, 2100)]:
        exact = polygons.coverage((x, y), (400, 400))
        approx = from_file.coverage((x, y), (400, 400))
        assert set(exact) == set(approx)
        for label, value in exact.items():
            assert approx[label] == pytest.approx(value, abs=0.03)
    truth = box(400, 300, 1800, 1350)  # the tumour rectangle of default_regions
    assert (mask == 1).sum() * 64 == pytest.approx(truth.area, rel=0.02)
    with pytest.raises(InvalidAnnotationError, match="aspect"):
        read_label_mask(path, (4000, 4000))
    assert np.unique(mask).tolist() == [0, 1, 2, 3]


def _nested(depth: int) -> str:
    return "[" * depth + "0" + "]" * depth


@pytest.mark.parametrize(
    "text",
    [
        _nested(100_000),  # deeper than the JSON reader goes
        json.dumps(  # coordinates 500 deep: JSON reads them, shapely would recurse
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": json.loads(_nested(500))},
                    }
                ],
            }
        ),
        '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}, '
        '"properties": {"notes": ' + _nested(100_000) + "}}",
    ],
    ids=["bare", "coordinates", "properties"],
)
def test_absurdly_nested_geojson_is_a_one_line_error(tmp_path, text):
    path = tmp_path / "deep.geojson"
    path.write_text(text)
    with pytest.raises(InvalidAnnotationError, match="nested more than 64 levels") as raised:
        read_geojson(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


def test_geojson_nested_as_qupath_nests_it_is_read(tmp_path):
    export = json.loads(json.dumps(QUPATH_EXPORT))
    export["features"][0]["properties"]["measurements"] = {"a": {"b": {"c": [[1, 2], [3]]}}}
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(export))
    assert [a.label for a in read_geojson(path)] == ["Tumor", "Stroma"]
