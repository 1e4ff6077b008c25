"""VALIDATION of the scale search: a classifier trained at x20 is found to work best at x20.

The tissue is SYNTHETIC and drawn in physical units, so that its look depends on the
magnification it is read at: round "nuclei" of a fixed diameter in microns on a jittered grid
(spacing 2.2 diameters) over pink stroma. Three classes form a ladder of nucleus sizes (1.6, 4
and 10 um). A small CNN is trained through ``oncoscope train`` on 64-px patches rendered at x20
(0.5 um/px). Slides of the middle class are then written at other level-0 resolutions, and
the search must put most points within one step of the known answer:

* a slide scanned at x40 (0.25 um/px, stated truthfully): reading at x20 reproduces the
  training look, so the answer is x20;
* the same tissue with its scan resolution mis-stated as x60 (the case the seed motivates: the
  slide's magnification is unknown or wrong): the training look appears at a stated x30.

Why the middle class: read off its scale, a middle-sized nucleus drifts towards a neighbour's
size and the margins shrink on both sides (an interior peak); the smallest and largest classes
keep growing more "themselves" towards the ends (the seed's monotonic curves).

The vote lands one step LOW (x17, x25) and that is Algorithm 1 on this classifier, not the
reads: its distance to the middle class's hyperplane peaks at about 0.8 of the training
magnification even on crops rendered directly at each scale (no resampling), and a slide drawn
at x20 votes x17 too (README, ``oncoscope scale``, "Why the vote lands one step low"). Hence
"within one step", not "at". The points voting x43 on the x40 slide lie at the tissue's edge.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from oncoscope.inference.scale_search import search_scale
from oncoscope.train.config import resolve_config
from oncoscope.train.run import train

DIAMETERS_UM = {"small": 1.6, "medium": 4.0, "large": 10.0}
TRAIN_MPP = 0.5  # x20
PATCH_PX = 64
SCALES = [10, 12, 14, 17, 20, 25, 30, 35, 43]
PINK = np.array([235.0, 170.0, 205.0])
PURPLE = np.array([90.0, 40.0, 130.0])


def _hash(i: np.ndarray[Any, Any], j: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    h = (i * 73856093) ^ (j * 19349663) ^ (k * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    hashed: np.ndarray[Any, Any] = ((h ^ (h >> 16)) & 0xFFFF) / 65536.0
    return hashed


def render_tissue(label: str, x0_um: float, y0_um: float, size_px: tuple[int, int], mpp: float):
    """``(rows, cols, 3) uint8`` of a class's tissue, top-left at ``(x0_um, y0_um)``, at ``mpp``.

    Nuclei are anti-aliased discs of the class's diameter, one per grid cell of 2.2 diameters,
    jittered by a hash of the cell (the same tissue whatever the resolution).
    """
    diameter = DIAMETERS_UM[label]
    cell, radius, salt = 2.2 * diameter, diameter / 2, len(label)
    xs = x0_um + (np.arange(size_px[0]) + 0.5) * mpp
    ys = y0_um + (np.arange(size_px[1]) + 0.5) * mpp
    x, y = np.meshgrid(xs, ys)
    col, row = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
    ink = np.zeros_like(x)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = col + di, row + dj
            cx = (i + 0.2 + 0.6 * _hash(i, j, salt)) * cell
            cy = (j + 0.2 + 0.6 * _hash(i, j, salt + 1)) * cell
            edge = (radius - np.hypot(x - cx, y - cy)) / mpp + 0.5
            ink = np.maximum(ink, np.clip(edge, 0, 1))
    rgb = PINK * (1 - ink[..., None]) + PURPLE * ink[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_training_patches(folder: Path, per_class: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for split, count in per_class.items():
        for label in DIAMETERS_UM:
            for index in range(count):
                x0, y0 = rng.uniform(0, 20_000, 2)
                name = f"{split}-{label}-{index:03d}.png"
                patch = render_tissue(label, x0, y0, (PATCH_PX, PATCH_PX), TRAIN_MPP)
                Image.fromarray(patch).save(folder / name)
                rows.append({"path": name, "label": label, "split": split, "mpp": TRAIN_MPP})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "mpp"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def write_slide(path: Path, *, true_mpp: float, stated_mpp: float, size_px: int = 1280) -> Path:
    """A square of medium tissue inside a white margin, drawn at ``true_mpp`` um per pixel and
    written with ``stated_mpp`` in its resolution tags (a generic tiled TIFF)."""
    margin = size_px // 10
    image = np.full((size_px, size_px, 3), 255, dtype=np.uint8)
    inner = size_px - 2 * margin
    tissue = render_tissue("medium", 5_000.0, 7_000.0, (inner, inner), true_mpp)
    image[margin : margin + inner, margin : margin + inner] = tissue
    per_cm = 10_000 / stated_mpp
    tifffile.imwrite(
        path,
        image,
        tile=(256, 256),
        photometric="rgb",
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: for a model this small, a second thread costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scale-validation")
    manifest = write_training_patches(folder, {"train": 100, "val": 12})
    config = resolve_config(
        overrides={
            "data": manifest,
            "out": folder / "run",
            "model": "simple_cnn",
            "model_kwargs": {"channels": [16, 32, 64, 64], "hidden": [64], "dropout": 0.2},
            "epochs": 6,
            "batch_size": 32,
            "augment": "histology",
            "precision": "fp32",
            "num_workers": 0,
            "seed": 0,
        }
    )
    return train(config, progress_bar=False).best_checkpoint


@pytest.mark.filterwarnings("ignore:x43 above the scan's x40")
@pytest.mark.parametrize(
    ("stated_mpp", "expected"),
    [(0.25, 20), (0.25 * 20 / 30, 30)],
    ids=["x40-scan-finds-x20", "misstated-x60-finds-x30"],
)
def test_search_recovers_the_training_scale(
    checkpoint: Path, tmp_path: Path, stated_mpp: float, expected: int
) -> None:
    slide = write_slide(tmp_path / "slide.tif", true_mpp=0.25, stated_mpp=stated_mpp)
    # x43 on the x40 scan is read by upsampling level 0
    result = search_scale(
        checkpoint, slide, scales=SCALES, points=30, seed=0, allow_upsampling=True
    )
    assert result.trained_magnification == 20
    near = result.within(expected, steps=1)
    print(
        f"\n{slide.name} stated {stated_mpp:.4g} um/px, expected x{expected}: winner "
        f"x{result.winner:g}, {near:.0%} of points within one step, votes {result.histogram}, "
        f"curves {result.curve_counts()}"
    )
    assert near > 0.5  # "most points"
    assert abs(SCALES.index(result.winner) - SCALES.index(expected)) <= 1
