"""Files written from a probability map: pyramidal TIFF, class areas, GeoJSON regions, scores.

Every map is ``(rows, cols, classes)`` float32 over the output-cell grid of
:class:`oncoscope.inference.patches.TileGrid` (NaN where no tile was classified); cell
``(r, c)`` covers level-0 ``[c * cell, (c + 1) * cell) x [r * cell, (r + 1) * cell)``, clipped
to the slide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from shapely import box, make_valid, union_all

from oncoscope.io.atomic import atomic_path
from oncoscope.pathology.annotations import (
    Annotation,
    rasterize,
    read_geojson,
    read_label_mask,
    write_geojson,
)

#: Value of a cell that no tile covered, in a class-index map.
NO_CLASS = -1


def class_map(probabilities: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Argmax class index per cell; :data:`NO_CLASS` where the map is NaN.

    Example:
        >>> class_map(np.array([[[0.2, 0.8], [np.nan, np.nan]]])).tolist()
        [[1, -1]]
    """
    computed = ~np.isnan(probabilities).any(axis=-1)
    classes = np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=-1)
    result: np.ndarray[Any, np.dtype[np.int64]] = np.where(computed, classes, NO_CLASS)
    return result


def cell_areas_um2(
    shape_rows_cols: tuple[int, int], cell_size_level0: float, slide_wh: tuple[int, int], mpp: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Area (square microns) of each cell inside the slide (edge cells are clipped)."""
    rows, cols = shape_rows_cols
    heights = np.clip(slide_wh[1] - np.arange(rows) * cell_size_level0, 0, cell_size_level0)
    widths = np.clip(slide_wh[0] - np.arange(cols) * cell_size_level0, 0, cell_size_level0)
    areas: np.ndarray[Any, np.dtype[np.float64]] = np.outer(heights, widths) * mpp**2
    return areas


def class_areas(
    classes_map: np.ndarray[Any, Any],
    class_names: Sequence[str],
    cell_areas: np.ndarray[Any, Any],
    slide_area_um2: float,
) -> dict[str, dict[str, float]]:
    """``{class: {"area_mm2", "fraction"}}``; fraction = class area / whole slide area."""
    result = {}
    for index, name in enumerate(class_names):
        area_um2 = float(cell_areas[classes_map == index].sum())
        result[name] = {"area_mm2": area_um2 / 1e6, "fraction": area_um2 / slide_area_um2}
    return result


def write_probability_tiff(
    probabilities: np.ndarray[Any, Any],
    path: str | Path,
    cell_size_level0: float,
    slide_mpp: float,
) -> Path:
    """A pyramidal float32 TIFF of the map whose resolution tags overlay it on level 0.

    A map of one channel (``(rows, cols, 1)``) is written as 2-D pages.

    One page per halving (NaN-aware mean of 2 x 2 cells) until the side is at most 256; the
    resolution (pixels per centimetre) is ``1e4 / (slide_mpp * cell_size_level0 * 2**level)``.
    """
    levels = [np.asarray(probabilities, dtype=np.float32)]
    while max(levels[-1].shape[:2]) > 256:
        levels.append(_halve(levels[-1]))
    path = Path(path)
    with atomic_path(path) as temporary, tifffile.TiffWriter(temporary, bigtiff=True) as tif:
        for index, level in enumerate(levels):
            px_per_cm = 1e4 / (slide_mpp * cell_size_level0 * 2**index)
            tiled = min(level.shape[:2]) >= 256
            tif.write(
                level if level.shape[2] > 1 else level[..., 0],  # one channel: a 2-D page
                photometric="minisblack",
                planarconfig="contig" if level.shape[2] > 1 else None,
                tile=(256, 256) if tiled else None,
                compression="zlib",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
                metadata=None,
            )
    return path


def _halve(level: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    rows, cols = (level.shape[0] + 1) // 2 * 2, (level.shape[1] + 1) // 2 * 2
    padded = np.full((rows, cols, level.shape[2]), np.nan, dtype=np.float32)
    padded[: level.shape[0], : level.shape[1]] = level
    blocks = padded.reshape(rows // 2, 2, cols // 2, 2, -1)
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(blocks)).sum(axis=(1, 3))
        total = np.nansum(blocks, axis=(1, 3))
        halved: np.ndarray[Any, np.dtype[np.float32]] = np.where(
            counts > 0, total / np.maximum(counts, 1), np.nan
        ).astype(np.float32)
    return halved


def class_regions(
    classes_map: np.ndarray[Any, Any],
    class_names: Sequence[str],
    cell_size_level0: float,
    slide_wh: tuple[int, int],
) -> list[Annotation]:
    """One (Multi)Polygon per class present: the union of its cells, in level-0 pixels.

    Runs of same-class cells along each row become boxes (clipped to the slide), merged with
    shapely's union (valid polygons: cells meeting at a corner stay separate parts).
    """
    regions = []
    for index, name in enumerate(class_names):
        boxes = []
        for row, starts, ends in _runs(classes_map == index):
            y0 = row * cell_size_level0
            y1 = min(y0 + cell_size_level0, slide_wh[1])
            for start, end in zip(starts, ends, strict=True):
                x1 = min(end * cell_size_level0, slide_wh[0])
                boxes.append(box(start * cell_size_level0, y0, x1, y1))
        if boxes:
            merged = union_all(boxes)
            regions.append(Annotation(name, merged if merged.is_valid else make_valid(merged)))
    return regions


def _runs(
    mask: np.ndarray[Any, Any],
) -> list[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Per row with any True: ``(row, run starts, run ends)`` (ends exclusive)."""
    result = []
    for row in np.flatnonzero(mask.any(axis=1)):
        edges = np.diff(np.concatenate([[0], mask[row].astype(np.int8), [0]]))
        result.append((int(row), np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
    return result


def write_regions(regions: Sequence[Annotation], path: str | Path) -> Path:
    """QuPath-importable GeoJSON of the class regions (annotations, ``classification.name``)."""
    return write_geojson(regions, path)


def truth_map(
    annotations: str | Path,
    slide_wh: tuple[int, int],
    shape_rows_cols: tuple[int, int],
    cell_size_level0: float,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], list[str]]:
    """Annotation label at each cell's centre: ``(rows, cols)`` index into the names, -1 = none.

    Raises:
        InvalidAnnotationError: unreadable annotations (see :mod:`oncoscope.pathology.annotations`).
    """
    rows, cols = shape_rows_cols
    if Path(annotations).suffix.lower() not in {".png", ".tif", ".tiff"}:
        polygons = read_geojson(annotations)
        names = sorted({a.label for a in polygons})
        drawn = rasterize(polygons, (cols, rows), cell_size_level0, names)
        return drawn.astype(np.int64) - 1, names
    labels = read_label_mask(annotations, slide_wh)
    ids = sorted(int(i) for i in np.unique(labels.mask) if i > 0)
    names = [labels.names.get(i, f"class-{i}") for i in ids]
    lookup = np.full(int(labels.mask.max()) + 1, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    scale = cell_size_level0 / labels.downsample
    r = np.minimum(((np.arange(rows) + 0.5) * scale).astype(np.int64), labels.mask.shape[0] - 1)
    c = np.minimum(((np.arange(cols) + 0.5) * scale).astype(np.int64), labels.mask.shape[1] - 1)
    return lookup[labels.mask[np.ix_(r, c)]], names


def annotation_scores(
    classes_map: np.ndarray[Any, Any],
    class_names: Sequence[str],
    truth: np.ndarray[Any, Any],
    truth_names: Sequence[str],
) -> dict[str, Any]:
    """Per-class accuracy, precision and recall of the map against annotated cells.

    Only cells that are both annotated and classified count. A class's accuracy is one-vs-rest
    (cells where "is this class" is right, over all counted cells). Annotation labels the model
    does not know are listed under ``unmatched_labels`` and count as wrong for every class.
    """
    counted = (truth >= 0) & (classes_map >= 0)
    # truth labels as model class indices (-2 for labels the model does not have)
    to_model = np.array([class_names.index(n) if n in class_names else -2 for n in truth_names])
    expected = to_model[truth[counted]] if counted.any() else np.zeros(0, dtype=np.int64)
    predicted = classes_map[counted]
    per_class = {}
    for index, name in enumerate(class_names):
        tp = int(((predicted == index) & (expected == index)).sum())
        fp = int(((predicted == index) & (expected != index)).sum())
        fn = int(((predicted != index) & (expected == index)).sum())
        total = len(predicted)
        per_class[name] = {
            "accuracy": (total - fp - fn) / total if total else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "cells": tp + fn,
        }
    return {
        "cells": int(counted.sum()),
        "accuracy": float((predicted == expected).mean()) if len(predicted) else None,
        "classes": per_class,
        "unmatched_labels": sorted(set(truth_names) - set(class_names)),
    }
