"""A served folder holding every output the viewer shows, consistent with the synthetic slide.

``slide/a/``: fake ``oncoscope slide`` output over the ``generic_slide`` fixture (outside the
folder, as slides usually are), whose probabilities follow the slide's drawn regions; ``ct/``:
a real ``ct prepare`` of the ``lits_dir`` phantoms; ``explain/``, ``eval/``, ``couinaud/``:
small fake outputs in the documented formats; ``leak`` a symbolic link to a file outside.
``attention_dir``: ``mil predict``'s outputs beside ``slide``'s, for the attention overlay.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import Point

from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import PRESETS
from oncoscope.features.bags import bag_attributes, write_bag
from oncoscope.mil.predict import write_slide_outputs
from oncoscope.pathology.synthetic import SyntheticSlide

CLASSES = ("tumour", "stroma", "normal")
COLOURS = {"tumour": "#e41a1c", "stroma": "#377eb8", "normal": "#4daf4a"}
ORIGIN_XY = (64.0, 32.0)
CELL_PX = 128.0
P_MAIN = 0.8  # probability of the drawn class in its cells; the others share the rest


def truth_class(slide: SyntheticSlide, x: float, y: float) -> str | None:
    """The drawn region holding level-0 (x, y), or None (background)."""
    return next((r.label for r in slide.regions if r.geometry.contains(Point(x, y))), None)


def fake_probabilities(slide: SyntheticSlide) -> np.ndarray:
    """(rows, cols, 3) float32: P_MAIN for the region at each cell's centre, NaN on background."""
    w, h = slide.size_wh
    rows, cols = int((h - ORIGIN_XY[1]) // CELL_PX), int((w - ORIGIN_XY[0]) // CELL_PX)
    probabilities = np.full((rows, cols, len(CLASSES)), np.nan, np.float32)
    for r in range(rows):
        for c in range(cols):
            label = truth_class(
                slide, ORIGIN_XY[0] + (c + 0.5) * CELL_PX, ORIGIN_XY[1] + (r + 0.5) * CELL_PX
            )
            if label is not None:
                probabilities[r, c] = (1 - P_MAIN) / (len(CLASSES) - 1)
                probabilities[r, c, CLASSES.index(label)] = P_MAIN
    return probabilities


def write_slide_output(slide: SyntheticSlide, out: Path) -> Path:
    out.mkdir(parents=True)
    probabilities = fake_probabilities(slide)
    np.save(out / "probabilities.npy", probabilities)
    labels = np.nanargmax(np.nan_to_num(probabilities, nan=-1), axis=2)
    Image.fromarray((labels * 80).astype(np.uint8)).save(out / "segmentation.png")
    Image.fromarray((np.nan_to_num(probabilities[..., 0]) * 255).astype(np.uint8)).save(
        out / "heatmap.png"
    )
    cell_mm2 = (CELL_PX * slide.mpp / 1000) ** 2
    valid = np.isfinite(probabilities[..., 0])
    counts = {n: int(((labels == i) & valid).sum()) for i, n in enumerate(CLASSES)}
    summary = {
        "slide": str(slide.path),
        "class_names": list(CLASSES),
        "classes": {
            n: {"area_mm2": k * cell_mm2, "fraction": k / max(1, sum(counts.values()))}
            for n, k in counts.items()
        },
        "colors": COLOURS,
        "tiles": int(valid.sum()),
        "seconds": 1.5,
        "tiles_per_second": valid.sum() / 1.5,
        "magnification": 10.0,
        "mpp": 1.0,
        "tile_size_px": 64,
        "stride": 32,
        "precision": "fp32",
        "grid": {
            "origin_level0_xy": list(ORIGIN_XY),
            "cell_size_level0_px": CELL_PX,
            "shape_rows_cols": list(probabilities.shape[:2]),
        },
        "slide_dimensions_level0": list(slide.size_wh),
        "slide_mpp": slide.mpp,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    scale = {
        "scales": [0.5, 1.0, 2.0],
        "classes": list(CLASSES),
        "histogram": {"0.5": 2, "1.0": 7, "2.0": 1},
        "winner": 1.0,
        "points": [{"x": 500, "y": 400, "scale": 1.0, "curve": [0.1, 0.2, 0.1], "distances": []}],
    }
    (out / "scale.json").write_text(json.dumps(scale))
    return out


def write_explain(ct_dir: Path, out: Path) -> pd.DataFrame:
    """Two CAM rows on patient 1's first tumour slice and one on its first healthy slice."""
    manifest = pd.read_csv(ct_dir / "manifest.csv", dtype={"patient_id": str})
    mine = manifest[manifest["patient_id"] == "1"]
    picks = [mine[mine["label"] == "tumour"].iloc[0], mine[mine["label"] == "healthy"].iloc[0]]
    (out / "maps").mkdir(parents=True)
    rows = []
    for number, (row, method) in enumerate(
        [(picks[0], "gradcam"), (picks[0], "scorecam"), (picks[1], "gradcam")]
    ):
        image = ct_dir / row["path"]
        h, w = np.asarray(Image.open(image)).shape[:2]
        cam = np.zeros((h, w), np.float32)
        cam[h // 4 : h // 2, w // 4 : w // 2] = 1.0
        np.save(out / "maps" / f"{number}.npy", cam)
        Image.fromarray((cam * 255).astype(np.uint8)).save(out / "maps" / f"{number}.png")
        rows.append(
            {
                "image": str(image),
                "method": method,
                "layer": "features.7",
                "label": row["label"],
                "target": "tumour",
                "pred": "tumour",
                "prob": 0.9,
                "map_npy": f"maps/{number}.npy",
                "overlay_png": f"maps/{number}.png",
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out / "explain.csv", index=False)
    return table


@pytest.fixture(scope="session")
def outside_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("not for the viewer")
    return secret


@pytest.fixture(scope="session")
def viewer_dir(
    tmp_path_factory: pytest.TempPathFactory,
    generic_slide: SyntheticSlide,
    lits_dir: Path,
    outside_file: Path,
) -> Path:
    root = tmp_path_factory.mktemp("served")
    write_slide_output(generic_slide, root / "slide" / "a")
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=3)
    prepare_dataset(lits_dir, root / "ct", options)
    write_explain(root / "ct", root / "explain")
    (root / "eval" / "figures").mkdir(parents=True)
    (root / "eval" / "report.html").write_text("<html><body><h1>Evaluation</h1></body></html>")
    (root / "eval" / "metrics.json").write_text(json.dumps({"auc": 0.9}))
    Image.new("RGB", (40, 30), "white").save(root / "eval" / "figures" / "roc.png")
    (root / "couinaud").mkdir()
    couinaud = {
        "method": "landmark planes",
        "patient_id": "1",
        "lesions": [
            {
                "id": 1,
                "centroid_mm": [10.0, -20.0, 30.0],
                "volume_ml": 4.2,
                "max_diameter_mm": 21.0,
                "segment": "VII",
                "fractions": {"VII": 0.9, "VI": 0.1},
            }
        ],
    }
    (root / "couinaud" / "couinaud.json").write_text(json.dumps(couinaud))
    (root / "leak").symlink_to(outside_file)
    return root


#: Tile side (level-0 px) of the bags of ``attention_dir``.
TILE_PX = 256


def _mil_output(slide: Path, regions: SyntheticSlide, bags: Path, out: Path) -> np.ndarray:
    """A bag of the tissue tiles of ``slide`` (256-px tiles abutting at level 0) and the
    outputs ``mil predict`` writes for it, with distinct attention weights; returns coords."""
    w, h = regions.size_wh
    coords = np.array(
        [
            (x, y)
            for y in range(0, h - TILE_PX + 1, TILE_PX)
            for x in range(0, w - TILE_PX + 1, TILE_PX)
            if any(
                r.geometry.contains(Point(x + TILE_PX / 2, y + TILE_PX / 2))
                for r in regions.regions
            )
        ],
        dtype=np.int64,
    )
    attrs = bag_attributes(
        slide=slide, tile_px=TILE_PX, tile_px_level0=TILE_PX, stride_px=TILE_PX, mpp=0.25,
        magnification=40.0, encoder="test", encoder_spec={"name": "test", "feature_dim": 2},
    )  # fmt: skip
    bags.mkdir(parents=True, exist_ok=True)
    bag = write_bag(
        bags / f"{slide.stem}.h5", np.zeros((len(coords), 2), np.float32), coords, attrs
    )
    attention = np.random.default_rng(0).permutation(len(coords)).astype(np.float32) + 1
    write_slide_outputs(bag, attention / attention.sum(), out / slide.stem, top_k=4)
    return coords


@pytest.fixture(scope="module")
def attention_dir(
    tmp_path_factory: pytest.TempPathFactory, generic_slide: SyntheticSlide
) -> tuple[Path, np.ndarray]:
    """The served folder (``slide/a``: ``slide``'s output over the generic slide; ``mil-out``:
    ``mil predict``'s of the same slide and of a slide no longer at hand), and the tile
    coords of the generic slide's bag."""
    root = tmp_path_factory.mktemp("served-mil")
    write_slide_output(generic_slide, root / "slide" / "a")
    coords = _mil_output(generic_slide.path, generic_slide, root / "bags", root / "mil-out")
    moved = root.parent / f"{root.name}-moved" / "gone.tif"  # a slide file that is not at hand
    moved.parent.mkdir()
    shutil.copy(generic_slide.path, moved)
    _mil_output(moved, generic_slide, root / "bags", root / "mil-out")
    moved.unlink()
    return root, coords
