"""Region annotations: QuPath GeoJSON polygons (shapely) and label-mask images.

GeoJSON is read as QuPath exports it: a ``FeatureCollection`` (or a bare list of features, or one
feature) of ``Polygon``/``MultiPolygon`` geometries with holes, in level-0 pixel coordinates of
the slide, the class in ``properties.classification.name``. Other geometry types (points,
lines) carry no area and are skipped. A label mask is an 8- or 16-bit single-channel image
(PNG, TIFF) whose pixel values are class indices (0 = unlabelled) covering the whole slide at
any downsample, with class names in a sidecar ``<name>.json`` (``{"1": "tumour", ...}``).
Annotations that label no part of a slide (no features, only points or lines, polygons all
outside it, an all-zero mask) are explained by :func:`nothing_labelled`.

A tile takes the label covering most of it, with that label's coverage fraction
(:func:`best_label`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from shapely import STRtree, box, unary_union
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.validation import explain_validity
from skimage.draw import polygon as draw_polygon

from oncoscope.errors import InvalidAnnotationError
from oncoscope.io.atomic import atomic_path
from oncoscope.pathology.tissue import region_fraction

UNLABELLED = "unlabelled"
#: Largest class index of a label mask (16-bit).
MAX_MASK_LABEL = 65535
#: Deepest nesting of lists and objects accepted in a GeoJSON file (a MultiPolygon in a
#: FeatureCollection needs 7; QuPath's properties add a few).
MAX_GEOJSON_NESTING = 64


@dataclass(frozen=True)
class Annotation:
    """One labelled region: a shapely (Multi)Polygon in level-0 pixel coordinates."""

    label: str
    geometry: Polygon | MultiPolygon


class Labels(Protocol):
    """Anything that tells how much of a level-0 box each label covers."""

    def coverage(
        self, location_xy: tuple[float, float], size_wh: tuple[float, float]
    ) -> dict[str, float]:
        """Fraction (0..1) of the box covered by each label present in it."""
        ...


def read_geojson(path: str | Path) -> list[Annotation]:
    """Read QuPath-style GeoJSON annotations.

    Raises:
        InvalidAnnotationError: not JSON, nested deeper than :data:`MAX_GEOJSON_NESTING`, not
            GeoJSON features, or an invalid polygon (self-intersecting, too few points), with
            the feature's index and why.
    """
    path = Path(path)
    annotations = []
    for index, feature in enumerate(_features(path)):
        geometry_data = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry_data, dict):
            raise InvalidAnnotationError(f"feature {index} has no geometry", path)
        if geometry_data.get("type") not in {"Polygon", "MultiPolygon"}:
            continue
        try:
            geometry = shape(geometry_data)
        except (ValueError, TypeError, AttributeError, IndexError) as error:
            raise InvalidAnnotationError(
                f"feature {index}: bad coordinates ({error})", path
            ) from None
        if geometry.is_empty or not geometry.is_valid:
            why = explain_validity(geometry) if not geometry.is_empty else "empty polygon"
            raise InvalidAnnotationError(
                f"feature {index} is not a valid polygon ({why}); fix it in QuPath "
                "(e.g. Objects > Annotations > Simplify shape) and export again",
                path,
            )
        annotations.append(Annotation(_label(feature.get("properties")), geometry))
    return annotations


def _features(path: Path) -> list[Any]:
    """The features of a GeoJSON file, unchecked (see :func:`read_geojson`)."""
    too_deep = (
        f"is nested more than {MAX_GEOJSON_NESTING} levels deep (GeoJSON needs fewer than 10); "
        "it is not annotations"
    )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidAnnotationError(f"cannot read GeoJSON: {error}", path) from None
    except RecursionError:
        raise InvalidAnnotationError(too_deep, path) from None
    if _nesting_exceeds(data, MAX_GEOJSON_NESTING):
        raise InvalidAnnotationError(too_deep, path)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise InvalidAnnotationError(
            "is not a GeoJSON FeatureCollection, Feature or list of features", path
        )
    if not isinstance(features, list):
        raise InvalidAnnotationError("'features' is not a list", path)
    return features


def write_geojson(annotations: Sequence[Annotation], path: str | Path) -> Path:
    """Write annotations as a QuPath-style GeoJSON FeatureCollection (atomically)."""
    features = [
        {
            "type": "Feature",
            "geometry": mapping(a.geometry),
            "properties": {"objectType": "annotation", "classification": {"name": a.label}},
        }
        for a in annotations
    ]
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


class PolygonLabels:
    """Label coverage of boxes from polygons (exact areas, shapely).

    Polygons of one label are merged first, so overlapping ones are not counted twice.
    """

    def __init__(self, annotations: Sequence[Annotation]) -> None:
        self.count = len(annotations)
        by_label: dict[str, list[Polygon | MultiPolygon]] = {}
        for annotation in annotations:
            by_label.setdefault(annotation.label, []).append(annotation.geometry)
        self.labels = sorted(by_label)
        self.geometries = [unary_union(by_label[label]) for label in self.labels]
        self._tree = STRtree(self.geometries)

    def coverage(
        self, location_xy: tuple[float, float], size_wh: tuple[float, float]
    ) -> dict[str, float]:
        """Fraction (0..1) of the level-0 box covered by each label present in it."""
        x, y = location_xy
        tile = box(x, y, x + size_wh[0], y + size_wh[1])
        result = {}
        for index in self._tree.query(tile, predicate="intersects"):
            area = self.geometries[index].intersection(tile).area
            if area > 0:
                result[self.labels[index]] = float(area / tile.area)
        return result


class MaskLabels:
    """Label coverage of boxes from a label-mask image covering the slide.

    Args:
        mask: ``(rows, cols)`` integer class indices, 0 = unlabelled.
        downsample: level-0 pixels per mask pixel.
        names: class index -> label name.
    """

    def __init__(
        self, mask: np.ndarray[Any, Any], downsample: float, names: Mapping[int, str]
    ) -> None:
        self.mask = mask
        self.downsample = downsample
        self.names = dict(names)

    def coverage(
        self, location_xy: tuple[float, float], size_wh: tuple[float, float]
    ) -> dict[str, float]:
        """Fraction (0..1) of the level-0 box covered by each label present in it."""
        result = {}
        for index in np.unique(self.mask):
            if index == 0:
                continue
            fraction = region_fraction(self.mask == index, location_xy, size_wh, self.downsample)
            if fraction > 0:
                result[self.names.get(int(index), f"class-{index}")] = fraction
        return result


def best_label(coverage: Mapping[str, float]) -> tuple[str | None, float]:
    """The label covering most of a tile and its coverage; ``(None, 0.0)`` when none.

    Example:
        >>> best_label({"tumour": 0.6, "stroma": 0.3})
        ('tumour', 0.6)
    """
    if not coverage:
        return None, 0.0
    label = max(sorted(coverage), key=lambda k: coverage[k])
    return label, coverage[label]


def rasterize(
    annotations: Sequence[Annotation],
    size_wh: tuple[int, int],
    downsample: float,
    classes: Sequence[str],
    origin_xy: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Draw annotations into a label mask (index ``classes.index(label) + 1``; 0 = none).

    Args:
        annotations: polygons in level-0 pixels.
        size_wh: mask size in pixels.
        downsample: level-0 pixels per mask pixel.
        classes: label names in index order (at most 255).
        origin_xy: level-0 position of the mask's top-left corner.

    Returns:
        ``(rows, cols) uint8``; later annotations are drawn over earlier ones.
    """
    mask = np.zeros((size_wh[1], size_wh[0]), dtype=np.uint8)
    for annotation in annotations:
        value = classes.index(annotation.label) + 1
        geoms = getattr(annotation.geometry, "geoms", [annotation.geometry])
        for polygon in geoms:
            _fill(mask, polygon.exterior.coords, origin_xy, downsample, value)
            for interior in polygon.interiors:
                _fill(mask, interior.coords, origin_xy, downsample, 0)
    return mask


def read_label_mask(path: str | Path, slide_wh: tuple[int, int]) -> MaskLabels:
    """Read a label-mask PNG covering a slide of level-0 size ``slide_wh``.

    The mask is 8- or 16-bit: any integer image whose values are class indices 0 to 65535.

    Raises:
        InvalidAnnotationError: unreadable, not single-channel, not integer class indices
            (floating point, negative, above 65535), or an aspect ratio that does not match
            the slide's.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            mask = np.asarray(image)
    except (OSError, ValueError) as error:
        raise InvalidAnnotationError(f"cannot read label mask: {error}", path) from None
    if mask.ndim != 2:
        raise InvalidAnnotationError("label mask must be one channel of class indices", path)
    if mask.dtype.kind not in "biu":
        raise InvalidAnnotationError(
            f"label mask holds {mask.dtype} values; it must hold integer class indices "
            "(an 8- or 16-bit image)",
            path,
        )
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > MAX_MASK_LABEL):
        raise InvalidAnnotationError(
            f"label mask values run from {int(mask.min())} to {int(mask.max())}; class "
            f"indices are 0 (none) to {MAX_MASK_LABEL} (an 8- or 16-bit image)",
            path,
        )
    rows, cols = mask.shape
    downsample = slide_wh[0] / cols
    if abs(rows * downsample - slide_wh[1]) > 2 * downsample:
        raise InvalidAnnotationError(
            f"label mask of {cols} x {rows} px does not match the slide's aspect "
            f"({slide_wh[0]} x {slide_wh[1]})",
            path,
        )
    names: dict[int, str] = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            names = {int(k): str(v) for k, v in json.loads(sidecar.read_text()).items()}
        except (ValueError, AttributeError) as error:
            raise InvalidAnnotationError(f"bad class names: {error}", sidecar) from None
    return MaskLabels(mask.astype(np.int32), downsample, names)


def load_labels(path: str | Path, slide_wh: tuple[int, int]) -> Labels:
    """GeoJSON (``.geojson``/``.json``) or label-mask image (``.png``) annotations of a slide."""
    path = Path(path)
    if path.suffix.lower() in {".png", ".tif", ".tiff"}:
        return read_label_mask(path, slide_wh)
    return PolygonLabels(read_geojson(path))


def nothing_labelled(path: str | Path, labels: Labels, slide_wh: tuple[int, int]) -> str | None:
    """Why annotations read from ``path`` label no part of a slide of level-0 size
    ``slide_wh``, in words that follow the file's name ("has no features"); None when some
    region of the slide is labelled.

    The reasons: a GeoJSON file without features, with only geometries that have no area
    (points, lines), or whose polygons all lie outside the slide; a label mask that is all 0.

    Raises:
        InvalidAnnotationError: the GeoJSON file cannot be read again (see :func:`read_geojson`).
    """
    if isinstance(labels, MaskLabels):
        return None if labels.mask.any() else "is a label mask of only 0 (unlabelled)"
    if not isinstance(labels, PolygonLabels):
        return None
    width, height = slide_wh
    slide = box(0, 0, width, height)
    if any(g.intersection(slide).area > 0 for g in labels.geometries):
        return None
    if labels.count:
        x0, y0, x1, y1 = unary_union(labels.geometries).bounds
        return (
            f"has {labels.count} polygon(s), all outside the slide (0-{width} x 0-{height} "
            f"level-0 px; they span x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f}): annotations of "
            "another slide, or not in level-0 pixels?"
        )
    features = _features(Path(path))
    if not features:
        return "has no features"
    kinds = sorted(
        {
            str(f["geometry"].get("type"))
            for f in features
            if isinstance(f, dict) and isinstance(f.get("geometry"), dict)
        }
    )
    return (
        f"has no Polygon or MultiPolygon, only {', '.join(kinds)} ({len(features)} feature(s)), "
        "which have no area to label tiles with"
    )


def _nesting_exceeds(data: Any, limit: int) -> bool:
    """True when lists and dicts in ``data`` (parsed JSON) nest deeper than ``limit`` levels;
    without recursion, so any depth is safe to check.

    Example:
        >>> _nesting_exceeds({"a": [[1]]}, 3), _nesting_exceeds({"a": [[1]]}, 2)
        (False, True)
    """
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, (list, dict)) else []
    while stack:
        value, depth = stack.pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, (list, dict)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _label(properties: Any) -> str:
    if not isinstance(properties, dict):
        return UNLABELLED
    classification = properties.get("classification")
    if isinstance(classification, dict) and classification.get("name"):
        return str(classification["name"])
    if isinstance(classification, str) and classification:
        return classification
    return UNLABELLED


def _fill(
    mask: np.ndarray[Any, Any],
    coords: Any,
    origin_xy: tuple[float, float],
    downsample: float,
    value: int,
) -> None:
    """Set the mask pixels whose centres lie inside a ring (level-0 coordinates) to ``value``."""
    points = np.asarray(coords, dtype=np.float64)
    cols = (points[:, 0] - origin_xy[0]) / downsample - 0.5
    rows = (points[:, 1] - origin_xy[1]) / downsample - 0.5
    rr, cc = draw_polygon(rows, cols, shape=mask.shape)
    mask[rr, cc] = value
