"""SYNTHETIC whole-slide images for tests and the demo (never patient data).

:func:`write_synthetic_slide` writes a pyramidal tiled TIFF (tifffile, JPEG tiles, mpp in the
resolution tags) that OpenSlide opens as a generic TIFF, or, with ``vendor="aperio"``, an
Aperio-style SVS (first ImageDescription ``Aperio Image Library ...|AppMag = 40|MPP = 0.25``)
that OpenSlide opens as ``aperio``. Regions of known classes are drawn as flat, H&E-like colours
with a smooth texture; the same polygons are returned (and can be written as GeoJSON with
:func:`oncoscope.pathology.annotations.write_geojson`) so tests know the truth exactly.

Every pyramid level is rendered directly from the polygons, tile by tile, through a generator:
a 100 000 x 100 000 slide is written without ever holding more than one tile in memory, and its
blank tiles compress to almost nothing (or, with ``sparse=True``, are not written at all: TIFF
tiles with no bytes, which OpenSlide reads as background). Written by hand because no library
makes synthetic slides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
from shapely import box as shapely_box
from shapely.geometry import Polygon

from oncoscope.io.atomic import atomic_path
from oncoscope.pathology.annotations import Annotation, rasterize

#: H&E-like colours of the synthetic classes (RGB).
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "tumour": (118, 62, 150),
    "stroma": (231, 150, 196),
    "normal": (190, 110, 175),
    "necrosis": (245, 200, 215),
}
BACKGROUND = (255, 255, 255)
_TEXTURE_PERIOD_PX = 97.0  # level-0 pixels; smooth enough to survive the pyramid


@dataclass(frozen=True)
class SyntheticSlide:
    """A written synthetic slide and the regions drawn on it (level-0 pixel polygons)."""

    path: Path
    size_wh: tuple[int, int]
    mpp: float
    regions: tuple[Annotation, ...]


def default_regions(size_wh: tuple[int, int]) -> list[Annotation]:
    """Three tissue regions scaled to a slide: a tumour rectangle, stroma with a hole, normal.

    The regions do not overlap; the stroma's hole is background (no tissue).
    """
    w, h = size_wh
    tumour = Polygon(
        [(0.10 * w, 0.10 * h), (0.45 * w, 0.10 * h), (0.45 * w, 0.45 * h), (0.10 * w, 0.45 * h)]
    )
    stroma = Polygon(
        [(0.55 * w, 0.10 * h), (0.90 * w, 0.10 * h), (0.90 * w, 0.55 * h), (0.55 * w, 0.55 * h)],
        holes=[
            [(0.65 * w, 0.20 * h), (0.80 * w, 0.20 * h), (0.80 * w, 0.40 * h), (0.65 * w, 0.40 * h)]
        ],
    )
    normal = Polygon(
        [(0.15 * w, 0.60 * h), (0.60 * w, 0.65 * h), (0.50 * w, 0.90 * h), (0.20 * w, 0.85 * h)]
    )
    return [
        Annotation("tumour", tumour),
        Annotation("stroma", stroma),
        Annotation("normal", normal),
    ]


def render_region(
    regions: Sequence[Annotation],
    location_xy: tuple[float, float],
    size_wh: tuple[int, int],
    downsample: float = 1.0,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Render the synthetic slide's pixels of one region at a downsample.

    Args:
        regions: labelled polygons in level-0 pixels; later ones are drawn over earlier ones.
        location_xy: level-0 top-left corner of the region.
        size_wh: output size in pixels.
        downsample: level-0 pixels per output pixel.

    Returns:
        ``(height, width, 3) uint8`` RGB.
    """
    width, height = size_wh
    x0, y0 = location_xy
    window = shapely_box(x0, y0, x0 + width * downsample, y0 + height * downsample)
    present = [r for r in regions if r.geometry.intersects(window)]
    classes = [f"{i}" for i in range(len(present))]
    index = rasterize(
        [Annotation(f"{i}", r.geometry) for i, r in enumerate(present)],
        size_wh,
        downsample,
        classes,
        origin_xy=location_xy,
    )
    colours = [BACKGROUND, *(CLASS_COLOURS.get(r.label, (160, 90, 160)) for r in present)]
    rgb = np.asarray(colours, dtype=np.float32)[index]
    if len(colours) > 1:
        xs = x0 + (np.arange(width) + 0.5) * downsample
        ys = y0 + (np.arange(height) + 0.5) * downsample
        # phases from the coordinates modulo the period (exact): the texture repeats exactly,
        # so the same drawing a whole number of periods away renders the same pixels
        ys, xs = np.mod(ys, _TEXTURE_PERIOD_PX), np.mod(xs, _TEXTURE_PERIOD_PX)
        wave = np.outer(
            np.sin(2 * np.pi * ys / _TEXTURE_PERIOD_PX), np.sin(2 * np.pi * xs / _TEXTURE_PERIOD_PX)
        )
        tissue = (index > 0)[..., None]
        rgb = np.where(tissue, rgb * (1 + 0.08 * wave[..., None]), rgb)
    pixels: np.ndarray[Any, np.dtype[np.uint8]] = np.clip(rgb, 0, 255).astype(np.uint8)
    return pixels


def write_synthetic_slide(
    path: str | Path,
    size_wh: tuple[int, int] = (8192, 6144),
    *,
    mpp: float = 0.25,
    magnification: float = 40.0,
    regions: Sequence[Annotation] | None = None,
    tile_px: int = 256,
    vendor: Literal["generic", "aperio"] = "generic",
    smallest_level_px: int = 512,
    quality: int = 90,
    sparse: bool = False,
) -> SyntheticSlide:
    """Write a SYNTHETIC pyramidal tiled TIFF (or Aperio-style SVS) slide.

    Levels halve the size until the longer side is at most ``smallest_level_px``.

    Args:
        path: output file (``.tif``/``.tiff`` generic, ``.svs`` with ``vendor="aperio"``).
        size_wh: level-0 size in pixels.
        mpp: microns per level-0 pixel, written in the resolution tags (and ``MPP`` for aperio).
        magnification: objective power written for aperio (``AppMag``); generic TIFF has none.
        regions: labelled polygons in level-0 pixels (default :func:`default_regions`).
        tile_px: TIFF tile size (a multiple of 16).
        vendor: ``"generic"`` or ``"aperio"``.
        smallest_level_px: stop the pyramid at this size.
        quality: JPEG quality.
        sparse: leave the tiles without tissue out of the file (empty TIFF tiles, read as the
            background), but for the first and last of each level (which keep OpenSlide's
            bounds the whole slide); a very large mostly blank slide then writes in seconds.

    Returns:
        The :class:`SyntheticSlide` with the regions drawn.
    """
    path = Path(path)
    chosen = list(regions) if regions is not None else default_regions(size_wh)
    width, height = size_wh
    downsamples = [1]
    while max(width, height) / downsamples[-1] > smallest_level_px:
        downsamples.append(downsamples[-1] * 2)
    px_per_cm = 10_000 / mpp
    with atomic_path(path) as temporary, tifffile.TiffWriter(temporary, bigtiff=True) as tif:
        for index, downsample in enumerate(downsamples):
            level_wh = (max(1, width // downsample), max(1, height // downsample))
            description = None
            if vendor == "aperio":
                description = (
                    f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] "
                    f"({tile_px}x{tile_px}) JPEG/RGB Q={quality}|AppMag = {magnification:g}|"
                    f"MPP = {mpp:g}|oncoscope = synthetic"
                    if index == 0
                    else f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> "
                    f"{level_wh[0]}x{level_wh[1]} - |AppMag = {magnification:g}|MPP = {mpp:g}"
                )
            tif.write(
                _tiles(chosen, level_wh, downsample, tile_px, sparse),
                shape=(level_wh[1], level_wh[0], 3),
                dtype=np.uint8,
                tile=(tile_px, tile_px),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(px_per_cm / downsample, px_per_cm / downsample),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
                description=description,
                metadata=None,
            )
    return SyntheticSlide(path, (width, height), mpp, tuple(chosen))


def _tiles(
    regions: Sequence[Annotation],
    level_wh: tuple[int, int],
    downsample: int,
    tile_px: int,
    sparse: bool = False,
) -> Iterator[np.ndarray[Any, np.dtype[np.uint8]] | None]:
    written = np.full((tile_px, tile_px, 3), 255, dtype=np.uint8)
    blank = None if sparse else written
    bounds = [r.geometry.bounds for r in regions]
    span = tile_px * downsample
    for top in range(0, level_wh[1], tile_px):
        for left in range(0, level_wh[0], tile_px):
            origin = (left * downsample, top * downsample)
            near = any(
                x0 < origin[0] + span
                and origin[0] < x1
                and y0 < origin[1] + span
                and origin[1] < y1
                for x0, y0, x1, y1 in bounds
            )
            if not near:
                # the first and last tiles are written: tifffile takes the dtype from the first,
                # and OpenSlide's bounds (the written tiles' extent) stay the whole level
                last = top + tile_px >= level_wh[1] and left + tile_px >= level_wh[0]
                yield written if (top, left) == (0, 0) or last else blank
                continue
            window = shapely_box(
                origin[0],
                origin[1],
                origin[0] + tile_px * downsample,
                origin[1] + tile_px * downsample,
            )
            if any(r.geometry.intersects(window) for r in regions):
                yield render_region(regions, origin, (tile_px, tile_px), downsample)
            else:
                yield blank
