"""SYNTHETIC whole slides whose label is carried by a small tumour-like focus (MIL validation).

Each slide is a pyramidal TIFF (:func:`oncoscope.pathology.synthetic.write_synthetic_slide`)
holding one tissue section: an ellipse of ``normal`` tissue with a ``stroma`` patch (5-15% of
the tissue) in every slide, so that "anything not normal" does not tell the classes apart. A
positive (``tumour``) slide also holds a disc of ``tumour`` tissue covering ``focus_fraction``
of the tissue area, wholly inside the section; a negative (``normal``) slide has none. The
focus polygon is returned, so tests know exactly where the label lives.

Unlike :mod:`oncoscope.mil.synthetic` (bags drawn as Gaussian features), these slides go
through ``oncoscope features`` like real ones: tissue mask, tiling, an encoder's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from shapely import affinity, box
from shapely.geometry import Point, Polygon

from oncoscope.pathology.annotations import Annotation
from oncoscope.pathology.synthetic import write_synthetic_slide

#: Class names of the synthetic task (slide labels).
CLASSES = ("normal", "tumour")


@dataclass(frozen=True)
class FocusSlide:
    """One synthetic slide: file, label, split, patient, tissue and focus (level-0 polygons;
    ``focus`` is None on negative slides)."""

    path: Path
    label: str
    split: str
    patient: str
    tissue: Polygon
    focus: Polygon | None

    @property
    def slide_name(self) -> str:
        """The ``slide`` cell of ``slides.csv``."""
        return self.path.name


def write_focus_slides(
    folder: str | Path,
    splits: dict[str, int],
    *,
    seed: int = 0,
    focus_fraction: tuple[float, float] = (0.01, 0.05),
    side_px: int = 768,
    mpp: float = 1.0,
) -> list[FocusSlide]:
    """Write the slides of every split into ``folder`` as ``slide-NNN.tif``, numbered on
    across the splits, alternately negative and positive within each.

    Args:
        splits: how many slides each split gets, e.g. ``{"train": 16, "val": 6, "test": 10}``.
        seed: seed of the shapes and places.
        focus_fraction: range of the focus's share of the tissue area in positive slides.
        side_px: level-0 width and height of each slide in pixels.
        mpp: microns per level-0 pixel.

    Returns:
        The slides, in the order written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    slides = []
    index = 0
    for split, count in splits.items():
        for number in range(count):
            label = CLASSES[number % 2]
            tissue = _ellipse(rng, side_px)
            stroma = _disc_inside(rng, tissue, rng.uniform(0.05, 0.15) * tissue.area)
            focus = None
            regions = [Annotation("normal", tissue), Annotation("stroma", stroma)]
            if label == CLASSES[1]:
                focus = _disc_inside(rng, tissue, rng.uniform(*focus_fraction) * tissue.area)
                regions.append(Annotation("tumour", focus))
            path = folder / f"slide-{index:03d}.tif"
            write_synthetic_slide(path, (side_px, side_px), mpp=mpp, regions=regions)
            slides.append(FocusSlide(path, label, split, f"patient-{index:03d}", tissue, focus))
            index += 1
    return slides


def focus_cover(
    slide: FocusSlide, coords: np.ndarray[Any, Any], tile_px_level0: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Share (0..1) of each tile's area that lies in the slide's focus (all 0 without one).

    Args:
        coords: ``(n, 2)`` level-0 ``(x, y)`` of the tiles' top-left corners (a bag's).
        tile_px_level0: tile side in level-0 pixels.
    """
    if slide.focus is None:
        return np.zeros(len(coords))
    side = float(tile_px_level0)
    return np.array(
        [slide.focus.intersection(box(x, y, x + side, y + side)).area / side**2 for x, y in coords]
    )


def write_random_encoder(
    path: str | Path, *, tile_px: int = 32, mpp: float = 1.0, model: str = "test_resnet"
) -> Path:
    """A fixed random-weight encoder (timm ``model``, seed 0) as an oncoscope checkpoint that
    takes ``tile_px`` tiles at ``mpp``, for ``oncoscope features`` (its penultimate features;
    at its own input size, so tiles are not resized)."""
    from oncoscope.models import create_model
    from oncoscope.train.checkpoint import write_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = create_model(model, num_classes=len(CLASSES))
    spec = {
        "model": model,
        "model_kwargs": {},
        "classes": list(CLASSES),
        "in_chans": 3,
        "image_size": tile_px,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "preprocessing": {"mpp": mpp},
    }
    return write_checkpoint(network.eval(), spec, path)


def _ellipse(rng: np.random.Generator, side_px: int) -> Polygon:
    """A tissue section: an ellipse of half-axes 0.30-0.45 of the side, near the centre."""
    centre = side_px * (0.5 + rng.uniform(-0.05, 0.05, size=2))
    radii = side_px * rng.uniform(0.30, 0.45, size=2)
    circle = Point(centre).buffer(1.0, quad_segs=32)
    section: Polygon = affinity.scale(circle, radii[0], radii[1], origin=tuple(centre))
    return section


def _disc_inside(rng: np.random.Generator, tissue: Polygon, area: float) -> Polygon:
    """A disc of ``area`` wholly inside ``tissue``, its centre drawn uniformly where it fits."""
    radius = float(np.sqrt(area / np.pi))
    room = tissue.buffer(-radius)
    x0, y0, x1, y1 = room.bounds
    while True:
        centre = Point(rng.uniform(x0, x1), rng.uniform(y0, y1))
        if room.contains(centre):
            disc: Polygon = centre.buffer(radius, quad_segs=16)
            return disc
