"""Synthetic feature bags whose label is carried by a small focus only (tests, README figures).

Tiles lie on a square grid; every tile's features are drawn from a "normal" Gaussian
``N(0, I)``. In a positive slide a focus (a disc of contiguous tiles covering ``focus_fraction``
of them) is drawn from ``N(shift * u, I)`` instead, ``u`` a fixed random unit direction; a
negative slide has no focus. No slide file exists: the bags record a slide path that is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from oncoscope.features.bags import bag_attributes, write_bag

#: Class names of the synthetic task.
CLASSES = ("normal", "tumour")
#: The encoder id synthetic bags record.
SYNTHETIC_ENCODER = "synthetic-gaussian"


@dataclass(frozen=True)
class SyntheticBag:
    """One synthetic slide: its bag, label, split, patient and the focus tiles' indices."""

    path: Path
    label: str
    split: str
    patient: str
    focus: np.ndarray[Any, np.dtype[np.int64]]

    @property
    def slide_name(self) -> str:
        """The ``slide`` cell of ``slides.csv`` (a slide file that does not exist)."""
        return f"{self.path.stem}.svs"


class LabelledSlide(Protocol):
    """A slide of a synthetic task as ``slides.csv`` lists it."""

    @property
    def slide_name(self) -> str: ...
    @property
    def patient(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def split(self) -> str: ...


def write_synthetic_bags(
    folder: str | Path,
    splits: dict[str, int],
    *,
    grid: int = 16,
    feature_dim: int = 32,
    focus_fraction: tuple[float, float] = (0.01, 0.05),
    shift: float = 4.0,
    tile_px: int = 224,
    seed: int = 0,
) -> list[SyntheticBag]:
    """Write ``splits[name]`` bags per split (half positive, alternating) into ``folder``.

    Args:
        folder: where the bags go (``slide-NNN.h5``).
        splits: bags per split, e.g. ``{"train": 24, "val": 8, "test": 16}``.
        grid: tiles per side (``grid ** 2`` tiles per slide).
        feature_dim: features per tile.
        focus_fraction: range of the focus's share of the tiles in positive slides.
        shift: distance of the focus features' mean from the normal one.
        tile_px: tile side (px); tiles abut (stride = tile), level 0 = read resolution.
        seed: seed of everything.

    Returns:
        The bags, in the order written.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=feature_dim)
    direction /= np.linalg.norm(direction)
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    coords = np.stack([cols * tile_px, rows * tile_px], axis=1).astype(np.int64)
    bags = []
    index = 0
    for split, count in splits.items():
        for number in range(count):
            label = CLASSES[number % 2]
            features = rng.normal(size=(grid * grid, feature_dim)).astype(np.float32)
            focus = np.zeros(0, dtype=np.int64)
            if label == CLASSES[1]:
                fraction = rng.uniform(*focus_fraction)
                centre = rng.uniform(0.2 * grid, 0.8 * grid, size=2)
                distance = np.hypot(rows - centre[0], cols - centre[1])
                size = max(1, round(fraction * grid * grid))
                focus = np.sort(np.argsort(distance, kind="stable")[:size]).astype(np.int64)
                features[focus] += (shift * direction).astype(np.float32)
            stem = f"slide-{index:03d}"
            attrs = bag_attributes(
                slide=folder / f"{stem}.svs",
                tile_px=tile_px,
                tile_px_level0=tile_px,
                stride_px=tile_px,
                mpp=0.5,
                magnification=20.0,
                encoder=SYNTHETIC_ENCODER,
                encoder_spec={"name": SYNTHETIC_ENCODER, "feature_dim": feature_dim},
            )
            path = write_bag(folder / f"{stem}.h5", features, coords, attrs)
            bags.append(SyntheticBag(path, label, split, f"patient-{index:03d}", focus))
            index += 1
    return bags


def write_slides_csv(bags: Sequence[LabelledSlide], path: str | Path) -> Path:
    """``slides.csv`` (slide, patient, label, split) of synthetic bags or slides."""
    frame = pd.DataFrame(
        {
            "slide": [b.slide_name for b in bags],
            "patient": [b.patient for b in bags],
            "label": [b.label for b in bags],
            "split": [b.split for b in bags],
        }
    )
    path = Path(path)
    frame.to_csv(path, index=False)
    return path
