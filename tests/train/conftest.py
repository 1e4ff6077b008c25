"""A hand-written manifest of 64-px PNG patches whose two classes differ in brightness."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LABELS = ("adenoma", "well differentiated")


def write_patches(
    folder: Path, counts: dict[str, int], *, size: int = 64, mode: str = "RGB"
) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, count in counts.items():
        for i in range(count):
            label = LABELS[i % 2]
            mean = 100 if label == LABELS[0] else 160
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = rng.normal(mean, 25, shape).clip(0, 255).astype(np.uint8)
            name = f"{split}_{i:03d}.png"
            Image.fromarray(pixels).save(folder / name)
            rows.append({"path": name, "label": label, "split": split, "slide": f"{split}-{i % 4}"})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "slide"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


@pytest.fixture(scope="session")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_patches(tmp_path_factory.mktemp("patches"), {"train": 32, "val": 12, "test": 12})


def write_flipped_patches(folder: Path) -> Path:
    """Patches whose val labels are the opposite of what train teaches.

    The better the model fits the training split, the worse its validation loss: the first
    epoch is the best one and every later one is worse, whatever the numerics.
    """
    manifest = write_patches(folder, {"train": 16, "val": 8})
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["split"] == "val":
            row["label"] = LABELS[1 - LABELS.index(row["label"])]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="session")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flipped_patches(tmp_path_factory.mktemp("flipped"))
