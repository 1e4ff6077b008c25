"""MIL attention in the viewer: ``mil predict``'s per-slide outputs shown over their slide as an
overlay layer (the tile's attention percentile in the heatmap colour map)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from matplotlib import colormaps
from PIL import Image

from oncoscope.pathology.synthetic import SyntheticSlide
from oncoscope.viewer.app import create_app
from tests.viewer.conftest import TILE_PX


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_attention_is_a_layer_of_its_slide(
    attention_dir: tuple[Path, np.ndarray], generic_slide: SyntheticSlide
) -> None:
    client = TestClient(create_app(attention_dir[0]), raise_server_exceptions=False)
    index = client.get("/api/index").json()
    by_key = {s["key"]: s for s in index["slides"]}
    # the attention of the slide of slide/a joins that entry; attention.tif is not a slide
    assert by_key["slide/a"]["attention"] == 1 and by_key["slide/a"]["inference"]
    assert by_key["mil-out/gone"]["attention"] == 1 and not by_key["mil-out/gone"]["slide_found"]
    assert len(index["slides"]) == 2
    facts = client.get("/api/slide", params={"key": "slide/a"}).json()
    (layer,) = facts["attention"]
    assert layer["run"] == "mil-out"
    w, h = generic_slide.size_wh
    assert layer["grid"]["x"] == layer["grid"]["y"] == 0
    assert layer["grid"]["width"] >= w and layer["grid"]["height"] >= h
    assert set(layer["files"]) >= {"attention.png", "top_tiles.png", "top_attention.geojson"}


def test_attention_overlay_paints_each_tile_its_percentile(
    attention_dir: tuple[Path, np.ndarray],
) -> None:
    root, coords = attention_dir
    client = TestClient(create_app(root), raise_server_exceptions=False)
    attention = np.load(root / "mil-out" / "a" / "attention.npy")
    image = _png(client.get("/api/slide/attention.png", params={"key": "slide/a", "index": 0}))
    grid = client.get("/api/slide", params={"key": "slide/a"}).json()["attention"][0]["grid"]
    factor = image.shape[1] / (grid["width"] / TILE_PX)  # PNG pixels per tile
    turbo = colormaps["turbo"]
    order = np.argsort(attention)  # weights are distinct: the k-th smallest is percentile k/(n-1)
    for rank in (0, len(order) // 2, len(order) - 1):
        x, y = coords[order[rank]] // TILE_PX
        pixel = image[int((y + 0.5) * factor), int((x + 0.5) * factor)]
        expected = turbo(rank / (len(order) - 1), bytes=True)
        np.testing.assert_allclose(pixel[:3], expected[:3], atol=2)
        assert pixel[3] == 255
    assert image[0, 0, 3] == 0  # the corner holds no tile: transparent
    assert (
        client.get("/api/slide/attention.png", params={"key": "slide/a", "index": 1}).status_code
        == 404
    )
    assert (
        client.get("/api/slide/attention.png", params={"key": "slide/a", "index": -1}).status_code
        == 422
    )


def test_a_broken_attention_record_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "attention.json").write_text("{")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "attention.json").write_text('{"attention": [1, 2]}')  # not ours
    index = TestClient(create_app(tmp_path)).get("/api/index").json()
    assert index["slides"] == []
    assert [p["path"] for p in index["problems"]] == ["bad/attention.json"]
    assert index["problems"][0]["problem"].startswith("unreadable attention.json")


def test_an_attention_map_outside_the_folder_is_not_shown(
    attention_dir: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    root = tmp_path / "served"
    shutil.copytree(attention_dir[0] / "mil-out" / "a", root / "m" / "a")
    (root / "m" / "a" / "attention.tif").unlink()
    (root / "m" / "a" / "attention.tif").symlink_to(
        attention_dir[0] / "mil-out" / "a" / "attention.tif"
    )
    client = TestClient(create_app(root), raise_server_exceptions=False)
    params = {"key": "m/a", "index": 0}
    assert client.get("/api/slide", params={"key": "m/a"}).json()["attention"][0]["run"] == "m"
    assert client.get("/api/slide/attention.png", params=params).status_code == 404
    (root / "m" / "a" / "attention.tif").unlink()
    assert client.get("/api/slide/attention.png", params=params).status_code == 404
