"""The viewer's HTTP API: what each endpoint returns, and 4xx (never 500) for bad requests."""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from oncoscope.pathology.synthetic import SyntheticSlide
from oncoscope.viewer.app import create_app
from tests.conftest import canonical_ras, radiological
from tests.viewer.conftest import CELL_PX, CLASSES, COLOURS, ORIGIN_XY, P_MAIN, truth_class


@pytest.fixture(scope="module")
def client(viewer_dir: Path) -> TestClient:
    return TestClient(create_app(viewer_dir), raise_server_exceptions=False)


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def patient_key(client: TestClient, pid: str = "1") -> str:
    index = client.get("/api/index").json()
    return str(next(p["key"] for p in index["ct_patients"] if p["patient_id"] == pid))


def test_index_lists_every_output(client: TestClient) -> None:
    index = client.get("/api/index").json()
    assert [s["key"] for s in index["slides"]] == ["slide/a"]
    assert index["slides"][0]["inference"] and index["slides"][0]["slide_found"]
    assert sorted(p["patient_id"] for p in index["ct_patients"]) == ["0", "1", "2", "3", "4"]
    assert [r["path"] for r in index["reports"]] == ["eval/report.html"]
    assert index["reports"][0]["figures"] == ["/files/eval/figures/roc.png"]
    assert [x["path"] for x in index["explains"]] == ["explain/explain.csv"]
    assert index["couinauds"][0]["data"]["lesions"][0]["segment"] == "VII"
    assert [s["path"] for s in index["scales"]] == ["slide/a/scale.json"]
    for page in ("/", "/slide?key=slide/a", "/ct?key=x"):
        assert client.get(page).headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("url", "title", "scripts"),
    [
        ("/", "oncoscope viewer", ["/static/common.js", "/static/index.js"]),
        (
            "/slide?key=slide/a",
            "slide · oncoscope viewer",
            ["/static/common.js", "/osd/openseadragon.min.js", "/static/slide.js"],
        ),
        ("/ct?key=x", "CT · oncoscope viewer", ["/static/common.js", "/static/ct.js"]),
    ],
)
def test_each_page_is_one_document_with_its_title_and_scripts_in_order(
    client: TestClient, url: str, title: str, scripts: list[str]
) -> None:
    text = client.get(url).text
    assert text.startswith("<!doctype html>") and text.count("<html") == 1
    assert f"<title>{title}</title>" in text
    found = [part.split('"', 1)[0] for part in text.split('<script src="')[1:]]
    assert found == scripts  # the shared helpers first, then what the page's script needs
    assert all(client.get(src).status_code == 200 for src in found if src.startswith("/static"))


def test_slide_facts_match_the_slide_and_summary(
    client: TestClient, generic_slide: SyntheticSlide
) -> None:
    facts = client.get("/api/slide", params={"key": "slide/a"}).json()
    assert facts["info"]["dimensions"] == list(generic_slide.size_wh)
    assert facts["info"]["mpp"] == pytest.approx(generic_slide.mpp)
    assert [c["name"] for c in facts["classes"]] == list(CLASSES)
    assert [c["colour"] for c in facts["classes"]] == [COLOURS[c] for c in CLASSES]
    assert facts["grid"]["x"] == ORIGIN_XY[0] and facts["grid"]["y"] == ORIGIN_XY[1]
    assert facts["scale"]["winner"] == 1.0


def test_deep_zoom_descriptor_and_tiles(client: TestClient, generic_slide: SyntheticSlide) -> None:
    response = client.get("/dz/slide/a.dzi")
    assert response.status_code == 200
    size = ET.fromstring(response.text).find("{*}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == generic_slide.size_wh
    levels = math.ceil(math.log2(max(generic_slide.size_wh))) + 1
    full = png(client.get(f"/dz/slide/a_files/{levels - 1}/0_0.png"))
    assert full.shape == (255, 255, 3)  # 254 px tile + 1 px overlap on the right/bottom
    w, h = generic_slide.size_wh
    whole = png(client.get(f"/dz/slide/a_files/{levels - 6}/0_0.png"))  # 1/32: one tile
    assert whole.shape == (h // 32, w // 32, 3)
    # the tumour rectangle (10 %..45 % of the slide) is darker than the white background
    assert whole[int(0.2 * h / 32), int(0.2 * w / 32)].mean() < whole[2, 2].mean() - 30
    jpeg = client.get("/dz/slide/a_files/0/0_0.jpeg")
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    "tile",
    [
        "abc/0_0.jpeg",
        "0/0_0.gif",
        "0/x_y.jpeg",
        "0/0.jpeg",
        "99/0_0.jpeg",
        "0/-1_0.jpeg",
        "0/5_5.jpeg",
        "-3/0_0.jpeg",
        "0/99999999999999999999999_0.jpeg",
        "1e9/0_0.jpeg",
    ],
)
def test_malformed_tiles_are_client_errors(client: TestClient, tile: str) -> None:
    status = client.get(f"/dz/slide/a_files/{tile}").status_code
    assert 400 <= status < 500


def test_unknown_slide_is_404(client: TestClient) -> None:
    assert client.get("/dz/nope.dzi").status_code == 404
    assert client.get("/dz/../slide/a.dzi").status_code == 404
    assert client.get("/api/slide", params={"key": "../slide/a"}).status_code == 404


def test_probe_returns_the_cell_probabilities(
    client: TestClient, generic_slide: SyntheticSlide
) -> None:
    w, h = generic_slide.size_wh
    for x, y in [(0.2 * w, 0.2 * h), (0.7 * w, 0.15 * h), (0.3 * w, 0.75 * h)]:
        result = client.get("/api/slide/probe", params={"key": "slide/a", "x": x, "y": y}).json()
        row, col = int((y - ORIGIN_XY[1]) // CELL_PX), int((x - ORIGIN_XY[0]) // CELL_PX)
        assert result["cell"] == [row, col]
        centre = truth_class(
            generic_slide,
            ORIGIN_XY[0] + (col + 0.5) * CELL_PX,
            ORIGIN_XY[1] + (row + 0.5) * CELL_PX,
        )
        assert result["probabilities"][centre] == pytest.approx(P_MAIN)
    outside = client.get("/api/slide/probe", params={"key": "slide/a", "x": 10, "y": 10}).json()
    assert outside["cell"] is None and outside["probabilities"] is None
    hole = client.get(
        "/api/slide/probe", params={"key": "slide/a", "x": 0.72 * w, "y": 0.3 * h}
    ).json()
    assert hole["cell"] is not None and hole["probabilities"] is None  # stroma's hole: background
    assert (
        client.get("/api/slide/probe", params={"key": "slide/a", "x": "nan", "y": 1}).status_code
        == 200
    )
    assert (
        client.get("/api/slide/probe", params={"key": "slide/a", "x": "left", "y": 1}).status_code
        == 422
    )


def test_segmentation_overlay_colours_and_class_toggles(
    client: TestClient, generic_slide: SyntheticSlide
) -> None:
    w, h = generic_slide.size_wh
    x, y = 0.2 * w, 0.2 * h  # in the tumour
    row, col = int((y - ORIGIN_XY[1]) // CELL_PX), int((x - ORIGIN_XY[0]) // CELL_PX)
    params = {"key": "slide/a", "kind": "segmentation"}
    everything = png(client.get("/api/slide/overlay.png", params=params))
    rows = int((h - ORIGIN_XY[1]) // CELL_PX)
    factor = everything.shape[0] // rows
    pixel = everything[row * factor + factor // 2, col * factor + factor // 2]
    assert tuple(pixel) == (0xE4, 0x1A, 0x1C, 255)  # the tumour colour of summary.json
    assert everything[0, 0, 3] == 0  # background corner: not analysed, transparent
    stroma_only = png(client.get("/api/slide/overlay.png", params={**params, "classes": "stroma"}))
    assert stroma_only[row * factor, col * factor, 3] == 0
    assert (stroma_only[..., 3] > 0).sum() < (everything[..., 3] > 0).sum()
    heat = png(
        client.get(
            "/api/slide/overlay.png", params={"key": "slide/a", "kind": "heatmap", "cls": "tumour"}
        )
    )
    assert heat.shape == everything.shape and heat[0, 0, 3] == 0
    for bad in ({"kind": "heatmap", "cls": "nope"}, {"kind": "segmentation", "classes": "x"}):
        assert (
            client.get("/api/slide/overlay.png", params={"key": "slide/a", **bad}).status_code
            == 400
        )
    assert (
        client.get("/api/slide/overlay.png", params={"key": "slide/a", "kind": "x"}).status_code
        == 422
    )


def test_ct_patient_slices_labels_and_cams(client: TestClient, viewer_dir: Path) -> None:
    key = patient_key(client)
    patient = client.get("/api/ct", params={"key": key}).json()
    manifest = pd.read_csv(viewer_dir / "ct" / "manifest.csv", dtype={"patient_id": str})
    mine = manifest[manifest["patient_id"] == "1"]
    assert patient["mode"] == "volume" and len(patient["slices"]) == patient["volume"]["shape"][0]
    labelled = {s["index"]: s["label"] for s in patient["slices"] if s["label"]}
    assert labelled == dict(zip(mine["slice_index"], mine["label"], strict=True))
    with_cams = {
        s["index"]: [c["method"] for c in s["cams"]] for s in patient["slices"] if s["cams"]
    }
    explain = pd.read_csv(viewer_dir / "explain" / "explain.csv")
    expected: dict[int, list[str]] = {}
    for image, method in zip(explain["image"], explain["method"], strict=True):
        index = int(
            mine[[str(viewer_dir / "ct" / p) == image for p in mine["path"]]]["slice_index"].iloc[0]
        )
        expected.setdefault(index, []).append(method)
    assert with_cams == expected
    assert patient["couinaud"][0]["data"]["lesions"][0]["segment"] == "VII"
    other = client.get("/api/ct", params={"key": patient_key(client, "2")}).json()
    assert other["couinaud"] == [] and not any(s["cams"] for s in other["slices"])


def test_ct_slice_is_the_windowed_volume(client: TestClient, lits_dir: Path) -> None:
    key = patient_key(client)
    hu, _ = canonical_ras(lits_dir / "volume-1.nii.gz")
    mask, _ = canonical_ras(lits_dir / "segmentation-1.nii.gz")
    index = 12
    expected = np.round(np.clip((radiological(hu[:, :, index]) + 100) / 300, 0, 1) * 255)
    shown = png(
        client.get("/api/ct/slice.png", params={"key": key, "index": index, "window": "liver"})
    )
    assert np.abs(shown.astype(int) - expected).max() <= 1
    bone = png(
        client.get("/api/ct/slice.png", params={"key": key, "index": index, "window": "bone"})
    )
    assert not np.array_equal(bone, shown)
    lesion = png(
        client.get("/api/ct/mask.png", params={"key": key, "index": index, "kind": "liver"})
    )
    outline = lesion[..., 3] > 0
    liver = radiological(mask[:, :, index]) >= 1
    assert outline.any() and not (outline & ~liver).any()  # the outline lies on the liver's edge


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"index": 999}, 400),
        ({"index": -1}, 400),
        ({"index": "top"}, 422),
        ({"index": 3, "window": "purple"}, 400),
        ({"index": 3, "window": "0/40"}, 400),
    ],
)
def test_bad_ct_requests(client: TestClient, params: dict[str, int | str], status: int) -> None:
    response = client.get("/api/ct/slice.png", params={"key": patient_key(client), **params})
    assert response.status_code == status
    assert (
        client.get(
            "/api/ct/mask.png", params={"key": patient_key(client), "index": 3, "kind": "bone"}
        ).status_code
        == 422
    )
    assert client.get("/api/ct", params={"key": "ct/manifest.csv#99"}).status_code == 404


def test_cam_map_is_rendered(client: TestClient, viewer_dir: Path) -> None:
    cam = png(client.get("/api/cam.png", params={"explain": "explain/explain.csv", "row": 0}))
    values = np.load(viewer_dir / "explain" / "maps" / "0.npy")
    assert cam.shape[:2] == values.shape
    assert not np.array_equal(cam[values == 1][0], cam[values == 0][0])
    for params in ({"row": 99}, {"row": -1}):
        assert (
            client.get(
                "/api/cam.png", params={"explain": "explain/explain.csv", **params}
            ).status_code
            == 404
        )
    assert client.get("/api/cam.png", params={"explain": "../x.csv", "row": 0}).status_code == 404


def test_files_inside_are_served(client: TestClient, viewer_dir: Path) -> None:
    response = client.get("/files/eval/report.html")
    assert response.status_code == 200 and "Evaluation" in response.text
    assert json.loads(client.get("/files/eval/metrics.json").text) == {"auc": 0.9}


@pytest.mark.parametrize(
    "url",
    [
        "/files/%2e%2e/outside/secret.txt",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/eval/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/files/leak",
        "/files/eval/missing.png",
        "/files/eval",
        "/files/eval/figures/",
        "/files/~/x",
        "/static/..%2f..%2fapp.py",
        "/static/%2e%2e/app.py",
        "/osd/..%2f..%2f..%2fpackage.json",
    ],
)
def test_nothing_outside_the_folder_is_served(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert "not for the viewer" not in response.text
    assert "root:" not in response.text


def test_folder_without_outputs(tmp_path: Path) -> None:
    index = TestClient(create_app(tmp_path)).get("/api/index").json()
    assert index["slides"] == [] and index["ct_patients"] == [] and index["reports"] == []


def test_broken_outputs_are_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    (tmp_path / "bad2").mkdir()
    (tmp_path / "bad2" / "summary.json").write_text(
        json.dumps({"slide": "gone.svs", "class_names": ["a"]})
    )
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    index = client.get("/api/index").json()
    assert index["problems"][0]["path"] == "bad/summary.json"
    assert [(s["key"], s["slide_found"]) for s in index["slides"]] == [("bad2", False)]
    facts = client.get("/api/slide", params={"key": "bad2"}).json()
    assert facts["slide_found"] is False and facts["probabilities"] is False
    assert client.get("/dz/bad2.dzi").status_code == 404
    assert (
        client.get(
            "/api/slide/overlay.png", params={"key": "bad2", "kind": "heatmap", "cls": "a"}
        ).status_code
        == 404
    )
    assert client.get("/api/slide/probe", params={"key": "bad2", "x": 1, "y": 1}).status_code in (
        400,
        404,
    )


LONG_NAME = "a" * 300  # one component over NAME_MAX (255)
LONG_PATH = "/".join(["b" * 200] * 30)  # components fine, the whole over PATH_MAX (4096)


@pytest.mark.parametrize("name", [LONG_NAME, LONG_PATH], ids=["long-name", "long-path"])
@pytest.mark.parametrize(
    "url",
    [
        "/files/{}",
        "/files/eval/{}.png",
        "/static/{}",
        "/osd/{}",
        "/api/cam.png?row=0&explain={}",
        "/api/slide?key={}",
        "/dz/{}.dzi",
        "/dz/{}_files/0/0_0.jpeg",
    ],
)
def test_a_very_long_path_is_a_client_error(client: TestClient, url: str, name: str) -> None:
    response = client.get(url.format(name))
    assert response.status_code in (404, 414), (response.status_code, response.text[:200])
