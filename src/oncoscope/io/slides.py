"""Whole-slide images over OpenSlide: pyramid, microns per pixel, reads at any magnification.

Microns per pixel (mpp) is the source of truth. It comes, in this order, from a user override,
the TIFF resolution tags read as exact rationals (tifffile), or OpenSlide's ``openslide.mpp-x``
(vendor properties such as ``aperio.MPP``). Magnification follows the convention
``mpp = 10 / magnification`` (x40 = 0.25 um/px, x20 = 0.5 um/px, x10 = 1 um/px), used only when
the slide does not state its objective power, or states no mpp. A read at magnification ``M`` on a
slide scanned at objective power ``O`` has downsample ``O / M``; a read at ``mpp`` has downsample
``mpp / slide mpp``. Downsamples within :data:`TOLERANCE` of 1 or of a pyramid level snap to it.

A target resolution is asked for as a :class:`ResolutionRequest` (mpp or magnification, at most
one, each a finite number above 0; :meth:`ResolutionRequest.or_default` fills in the training
default, :data:`DEFAULT_MAGNIFICATION`) and turned into a :class:`Resolution` by
:meth:`Slide.resolve` alone, with the upsampling policy; ``wsi tile``, ``slide``, ``scale`` and
the tissue mask all ask it. A slide without mpp takes ``10 / magnification`` of its objective
power (``mpp_source = "magnification"``); one with neither needs ``--mpp-of-scan`` or
``--magnification-of-scan``.

Coordinates are level-0 pixels ``(x, y)`` of a region's top-left corner, measured from the
corner of OpenSlide's ``bounds-x/bounds-y`` rectangle when the slide has one (as QuPath shows
them); sizes are ``(width, height)``; arrays are ``(rows, cols, 3) uint8`` RGB.

Levels stored as tiled TIFF pages (generic TIFF and Aperio SVS) are read straight from their
tiles by :class:`oncoscope.io.tiff_tiles.TiledTiff` into the output array, with the same pixels
as OpenSlide's ``read_region`` and several times faster for patch-sized reads; everything else,
and any read it cannot serve exactly, goes through OpenSlide.

Open slides are kept in a small per-process pool (:func:`pooled_slide`) sharing one OpenSlide
tile cache and one cache of decoded TIFF tiles, each of fixed size, so handles are reopened per
worker process (they cannot be pickled) and memory does not grow with the number of slides. The
resampling between a pyramid level and the target resolution is written here because OpenSlide
reads only whole levels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image

from oncoscope.errors import (
    CorruptFileError,
    InvalidOptionError,
    MissingMetadataError,
    UnsupportedFormatError,
)
from oncoscope.io.tiff_tiles import DecodedTileCache, JpegPiece, TiledTiff, parse_background

#: ``mpp = MPP_AT_1X / magnification``: x40 = 0.25 um/px, x20 = 0.5, x10 = 1.
MPP_AT_1X = 10.0
#: Relative tolerance when matching a downsample to 1 or to a pyramid level.
TOLERANCE = 0.02
#: Bytes of OpenSlide's tile cache shared by all pooled slides of a process, and (apart) of
#: the decoded TIFF tiles they share (:class:`~oncoscope.io.tiff_tiles.DecodedTileCache`).
CACHE_BYTES = 64 * 1024 * 1024
#: Pixels of a pyramid level read at once when making a thumbnail.
BAND_PIXELS = 16 * 1024 * 1024
#: Slides kept open per process.
POOL_SIZE = 8
#: Resolution of the tiles when neither the user nor a checkpoint gives one (seeds 003 and 004
#: work at x20).
DEFAULT_MAGNIFICATION = 20.0


def magnification_to_mpp(magnification: float) -> float:
    """Microns per pixel of a magnification by the ``mpp = 10 / magnification`` convention.

    Example:
        >>> magnification_to_mpp(40), magnification_to_mpp(20)
        (0.25, 0.5)
    """
    return MPP_AT_1X / magnification


def mpp_to_magnification(mpp: float) -> float:
    """Magnification of a resolution in microns per pixel (``10 / mpp``).

    Example:
        >>> mpp_to_magnification(0.25)
        40.0
    """
    return MPP_AT_1X / mpp


@dataclass(frozen=True)
class ResolutionRequest:
    """A target resolution as asked for: microns per pixel or a magnification, at most one.

    Neither: the scan's own resolution (level 0); see :meth:`or_default`. The one place where
    "not both" and "a finite number above 0" are checked.

    Raises:
        InvalidOptionError: both given, or a value that is not a finite number above 0.

    Example:
        >>> ResolutionRequest().or_default()
        ResolutionRequest(mpp=None, magnification=20.0)
        >>> ResolutionRequest(mpp=0.5).or_default(10.0)
        ResolutionRequest(mpp=0.5, magnification=None)
    """

    mpp: float | None = None
    magnification: float | None = None

    def __post_init__(self) -> None:
        if self.mpp is not None and self.magnification is not None:
            raise InvalidOptionError("give --mpp or --magnification, not both")
        for name, value in (("mpp", self.mpp), ("magnification", self.magnification)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidOptionError(f"--{name} must be a finite number above 0, got {value}")

    @property
    def given(self) -> bool:
        """Whether a resolution was asked for."""
        return self.mpp is not None or self.magnification is not None

    def or_default(self, magnification: float | None = None) -> ResolutionRequest:
        """This request, or when it asks for nothing ``magnification`` (e.g. a checkpoint's
        training magnification), else :data:`DEFAULT_MAGNIFICATION`."""
        if self.given:
            return self
        return ResolutionRequest(
            magnification=magnification if magnification is not None else DEFAULT_MAGNIFICATION
        )


@dataclass(frozen=True)
class Resolution:
    """How a read at a target resolution is served.

    Attributes:
        downsample: level-0 pixels per output pixel (>= 1 unless ``upsampled``).
        mpp: microns per output pixel (``slide mpp * downsample``).
        magnification: magnification of the output (``slide magnification / downsample``).
        level: pyramid level read from (the coarsest one at or above the target resolution).
        upsampled: finer than the scan (level 0 enlarged; only when upsampling is allowed).
    """

    downsample: float
    mpp: float
    magnification: float
    level: int
    upsampled: bool = False


class Slide:
    """A whole-slide image read through OpenSlide (SVS, NDPI, MRXS, generic tiled TIFF, ...).

    Levels of generic TIFF and Aperio slides stored as tiled TIFF pages are read from their
    tiles directly (:attr:`tiff_tiles`), with OpenSlide's pixels; other reads go to OpenSlide.

    Args:
        path: the slide file.
        mpp: override of the scan's microns per pixel (for slides without it, or wrong).
        magnification: override of the scan's objective power.
        handle: an already open OpenSlide object (e.g. ``openslide.ImageSlide`` over an
            in-memory image, for tests); ``path`` then only names it.

    Raises:
        UnsupportedFormatError: OpenSlide does not recognise the file.
        CorruptFileError: OpenSlide recognises it but cannot read it (truncated, garbled).
        MissingMetadataError: neither mpp nor magnification in the file nor given.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mpp: float | None = None,
        magnification: float | None = None,
        handle: openslide.AbstractSlide | None = None,
    ) -> None:
        self.path = Path(path)
        if handle is None:
            handle = _open(self.path)
        self._handle = handle
        props = dict(handle.properties)
        self.properties: dict[str, str] = props
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "unknown")
        full_w, full_h = handle.dimensions
        bx = int(props.get(openslide.PROPERTY_NAME_BOUNDS_X, 0))
        by = int(props.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0))
        bw = int(props.get(openslide.PROPERTY_NAME_BOUNDS_WIDTH, full_w - bx))
        bh = int(props.get(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, full_h - by))
        #: Level-0 offset of the bounds rectangle added to every read.
        self.bounds_xy = (bx, by)
        #: Level-0 size (width, height) of the slide (of its bounds rectangle when it has one).
        self.dimensions = (bw, bh)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(handle.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(handle.level_downsamples)
        file_mpp, self.mpp_source = _file_mpp(self.path, props)
        power = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        file_magnification = _positive_float(power)
        if mpp is not None:
            file_mpp, self.mpp_source = mpp, "user"
        if magnification is not None:
            file_magnification = magnification
        if file_mpp is None and file_magnification is None:
            raise MissingMetadataError(
                "slide has no mpp and no magnification; pass --mpp-of-scan or "
                "--magnification-of-scan",
                self.path,
            )
        if file_mpp is None:
            assert file_magnification is not None
            file_mpp, self.mpp_source = magnification_to_mpp(file_magnification), "magnification"
        #: Microns per level-0 pixel.
        self.mpp: float = file_mpp
        #: Objective power of the scan (from the file, the user, or ``10 / mpp``).
        self.magnification: float = (
            file_magnification if file_magnification is not None else mpp_to_magnification(file_mpp)
        )
        #: Direct reader of the slide's tiled TIFF levels, or None (all reads via OpenSlide).
        self.tiff_tiles: TiledTiff | None = None
        if isinstance(handle, openslide.OpenSlide) and (bx, by) == (0, 0):
            self.tiff_tiles = TiledTiff.open(
                self.path,
                vendor=self.vendor,
                level_dimensions=self.level_dimensions,
                level_downsamples=self.level_downsamples,
                background=parse_background(_background(props)),
                cache=DecodedTileCache(CACHE_BYTES),
            )

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (
            f"Slide({str(self.path)!r}, {w} x {h} px, mpp={self.mpp:g}, "
            f"x{self.magnification:g}, {len(self.level_dimensions)} levels, {self.vendor})"
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the OpenSlide handle and the TIFF file."""
        self._handle.close()
        if self.tiff_tiles is not None:
            self.tiff_tiles.close()

    @property
    def handle(self) -> openslide.AbstractSlide:
        """The OpenSlide object read from (e.g. for ``openslide.deepzoom.DeepZoomGenerator``)."""
        return self._handle

    def set_cache(
        self, cache: openslide.OpenSlideCache, tiles: DecodedTileCache | None = None
    ) -> None:
        """Share an OpenSlide tile cache (bytes fixed at its creation) with other slides, and
        the cache of decoded TIFF tiles when ``tiles`` is given."""
        self._handle.set_cache(cache)
        if tiles is not None and self.tiff_tiles is not None:
            self.tiff_tiles.cache = tiles

    def resolution(
        self, *, mpp: float | None = None, magnification: float | None = None
    ) -> Resolution:
        """:meth:`resolve` of ``ResolutionRequest(mpp, magnification)``, no upsampling."""
        return self.resolve(ResolutionRequest(mpp=mpp, magnification=magnification))

    def resolve(self, request: ResolutionRequest, *, allow_upsampling: bool = False) -> Resolution:
        """Resolve a target resolution to a downsample, its exact mpp, and the level to read.

        A magnification ``M`` has downsample ``scan magnification / M``; an mpp, ``mpp / scan
        mpp``; neither, level 0. A downsample within :data:`TOLERANCE` of 1 or of a pyramid
        level snaps to it; the level is the coarsest at or above the target resolution.

        Args:
            request: the resolution asked for.
            allow_upsampling: accept a resolution finer than the scan's: level 0 is enlarged
                and the result says ``upsampled``.

        Raises:
            InvalidOptionError: a resolution finer than the scan's (magnification above the
                scan's) without ``allow_upsampling``.
        """
        if request.magnification is not None:
            downsample = self.magnification / request.magnification
        elif request.mpp is not None:
            downsample = request.mpp / self.mpp
        else:
            downsample = 1.0
        if downsample < 1 - TOLERANCE:
            if allow_upsampling:
                return self._at(downsample, level=0, upsampled=True)
            raise InvalidOptionError(
                f"target resolution (x{self.magnification / downsample:.3g}, "
                f"{self.mpp * downsample:.4g} um/px) is finer than the scan's "
                f"(x{self.magnification:g}, {self.mpp:.4g} um/px); ask for at most "
                f"x{self.magnification:g}",
                self.path,
            )
        for level_downsample in (1.0, *self.level_downsamples):
            if abs(downsample / level_downsample - 1) <= TOLERANCE:
                downsample = level_downsample
                break
        return self._at(downsample)

    def _at(
        self, downsample: float, level: int | None = None, upsampled: bool = False
    ) -> Resolution:
        """The :class:`Resolution` of an exact downsample, read from ``level`` (default: the
        coarsest level at or above it)."""
        if level is None:
            level = 0
            for index, level_downsample in enumerate(self.level_downsamples):
                if level_downsample <= downsample * (1 + 1e-9):
                    level = index
        return Resolution(
            downsample=downsample,
            mpp=self.mpp * downsample,
            magnification=self.magnification / downsample,
            level=level,
            upsampled=upsampled,
        )

    def read(
        self,
        location_xy: tuple[float, float],
        size_wh: tuple[int, int],
        *,
        mpp: float | None = None,
        magnification: float | None = None,
    ) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """Read a region at any resolution.

        Reads the region from the coarsest pyramid level at or above the target resolution
        (never more of the slide than the region) and resizes it to ``size_wh``.

        Args:
            location_xy: level-0 pixel coordinates of the region's top-left corner.
            size_wh: output size in pixels at the target resolution.
            mpp, magnification: target resolution (see :meth:`resolution`); default level 0.

        Returns:
            ``(height, width, 3) uint8`` RGB; outside the slide is the background (white).
        """
        target = self.resolution(mpp=mpp, magnification=magnification)
        return self.read_at(location_xy, size_wh, target)

    def read_at(
        self,
        location_xy: tuple[float, float],
        size_wh: tuple[int, int],
        target: Resolution,
        out: np.ndarray[Any, np.dtype[np.uint8]] | None = None,
    ) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """:meth:`read` with a resolution already resolved by :meth:`resolution`.

        Args:
            out: a writable ``(height, width, 3) uint8`` array to read into (e.g. one slot of
                a batch), saving a copy; it is returned.
        """
        width, height = size_wh
        if width < 1 or height < 1:
            raise InvalidOptionError(f"region size must be positive, got {size_wh}")
        (x_int, y_int), (dx, dy), (read_w, read_h), scale = self._level_region(
            location_xy, size_wh, target
        )
        if (read_w, read_h) == (width, height) and not dx and not dy:
            if out is None:
                out = np.empty((height, width, 3), dtype=np.uint8)
            if self._read_tiles((x_int, y_int), target.level, out):
                return out
            region = self._read_region((x_int, y_int), target.level, (read_w, read_h))
            return _region_rgb(region, self.properties, out)
        window = np.empty((read_h, read_w, 3), dtype=np.uint8)
        if self._read_tiles((x_int, y_int), target.level, window):
            rgb = Image.fromarray(window)
        else:
            region = self._read_region((x_int, y_int), target.level, (read_w, read_h))
            rgb = _flatten(region, self.properties)
        box = (dx, dy, dx + width * scale, dy + height * scale)
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        if out is None:
            return np.asarray(rgb, dtype=np.uint8)
        out[...] = np.asarray(rgb, dtype=np.uint8)
        return out

    def jpeg_pieces_at(
        self, location_xy: tuple[float, float], size_wh: tuple[int, int], target: Resolution
    ) -> tuple[list[JpegPiece], bool] | None:
        """The compressed JPEG tiles a :meth:`read_at` of the same arguments is made of, to be
        decoded elsewhere (on the GPU; see :meth:`TiledTiff.jpeg_pieces`).

        Returns:
            ``(pieces, background)`` (``background``: part of the region is outside the
            slide); None when the region cannot be served so: a read that resizes or starts
            at a fraction of a level pixel, a level OpenSlide reads, a level not of YCbCr
            JPEG tiles, a tile cut short. Then :meth:`read_at` it.
        """
        width, height = size_wh
        if self.tiff_tiles is None or width < 1 or height < 1:
            return None
        (x_int, y_int), (dx, dy), read_wh, _ = self._level_region(location_xy, size_wh, target)
        if read_wh != (width, height) or dx or dy:
            return None  # read_at resizes this region
        return self.tiff_tiles.jpeg_pieces((x_int, y_int), target.level, height, width)

    def _level_region(
        self, location_xy: tuple[float, float], size_wh: tuple[int, int], target: Resolution
    ) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int], float]:
        """What :meth:`read_at` reads of the target's level: the whole level-0 pixel its corner
        falls in, the corner's offset inside it in level pixels, the level window's size, and
        level pixels per output pixel."""
        width, height = size_wh
        level_downsample = self.level_downsamples[target.level]
        scale = target.downsample / level_downsample  # level pixels per output pixel
        x0 = location_xy[0] + self.bounds_xy[0]
        y0 = location_xy[1] + self.bounds_xy[1]
        x_int, y_int = math.floor(x0), math.floor(y0)
        # Offset of the exact corner inside the first level pixel read.
        dx, dy = (x0 - x_int) / level_downsample, (y0 - y_int) / level_downsample
        read_wh = (math.ceil(dx + width * scale), math.ceil(dy + height * scale))
        return (x_int, y_int), (dx, dy), read_wh, scale

    def _read_tiles(
        self, location_xy: tuple[int, int], level: int, out: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> bool:
        """Read a level window straight from the TIFF tiles into ``out``; False if not served."""
        return self.tiff_tiles is not None and self.tiff_tiles.read(location_xy, level, out)

    def _read_region(
        self, location_xy: tuple[int, int], level: int, size_wh: tuple[int, int]
    ) -> Image.Image:
        """OpenSlide's RGBA ``read_region``; its errors as :class:`CorruptFileError`."""
        try:
            region: Image.Image = self._handle.read_region(location_xy, level, size_wh)
        except openslide.OpenSlideError as error:
            raise CorruptFileError(f"cannot read region: {error}", self.path) from None
        return region

    def thumbnail(
        self, max_size_px: int = 2048
    ) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], float]:
        """The whole slide (its bounds) with its longer side at most ``max_size_px`` pixels.

        Read in horizontal bands of at most :data:`BAND_PIXELS` pixels of the pyramid level
        used, so a slide without a coarse enough level does not need its whole level in memory.

        Returns:
            ``(image, downsample)``: ``(rows, cols, 3) uint8`` RGB, and level-0 pixels per
            thumbnail pixel.
        """
        w, h = self.dimensions
        downsample = max(1.0, max(w, h) / max_size_px)
        size = (max(1, round(w / downsample)), max(1, round(h / downsample)))
        downsample = max(w / size[0], h / size[1])
        level = self._handle.get_best_level_for_downsample(downsample)
        return self._read_whole(self._at(downsample, level=level), size), downsample

    def whole_at(self, mpp: float) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], float]:
        """The whole slide resampled to exactly ``mpp`` microns per pixel.

        Read from the coarsest pyramid level at or finer than ``mpp`` (never snapped to a
        level), in bands of at most :data:`BAND_PIXELS` level pixels, so memory is the output
        plus one band whatever the slide's size. Pixel ``(row, col)`` covers level-0
        ``[col * d, (col + 1) * d) x [row * d, (row + 1) * d)`` with ``d = mpp / slide mpp``;
        the last column and row may reach past the slide (background). A slide coarser than
        ``mpp`` is returned at level 0 as it is (``d = 1``).

        Returns:
            ``(image, downsample)``: ``(ceil(h / d), ceil(w / d), 3) uint8`` RGB, and ``d``.

        Raises:
            InvalidOptionError: ``mpp`` not a finite number above 0.
        """
        request = ResolutionRequest(mpp=mpp)
        assert request.mpp is not None
        downsample = max(1.0, request.mpp / self.mpp)
        w, h = self.dimensions
        size = (math.ceil(w / downsample - 1e-9), math.ceil(h / downsample - 1e-9))
        return self._read_whole(self._at(downsample), size), downsample

    def _read_whole(
        self, target: Resolution, size: tuple[int, int]
    ) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """``size`` pixels at ``target`` from the level-0 origin, in bands of at most
        :data:`BAND_PIXELS` level pixels."""
        scale = target.downsample / self.level_downsamples[target.level]  # level px per px
        band_rows = max(1, int(BAND_PIXELS / (size[0] * scale * scale)))
        image = np.empty((size[1], size[0], 3), dtype=np.uint8)
        for top in range(0, size[1], band_rows):
            rows = min(band_rows, size[1] - top)
            self.read_at(
                (0, top * target.downsample), (size[0], rows), target, image[top : top + rows]
            )
        return image

    def overview(
        self, max_size_px: int, mpp: float | None = None
    ) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], float]:
        """The whole slide read from one pyramid level as it is (no resampling), when one fits.

        The level is the coarsest one whose pixels are at most ``mpp`` microns, among the
        levels whose longer side is at most ``max_size_px``; with ``mpp`` None, or when every
        fitting level is coarser, the finest fitting level. A slide without a level that small
        falls back to :meth:`thumbnail` (resampled, read in bands). Reading a small level
        whole is much cheaper than resampling a larger one (a few ms against ~1 s for 8000^2).

        Returns:
            ``(image, downsample)`` as :meth:`thumbnail`.
        """
        w, h = self.dimensions
        fits = [
            (level, downsample)
            for level, downsample in enumerate(self.level_downsamples)
            if max(w, h) / downsample <= max_size_px
        ]
        if not fits:
            return self.thumbnail(max_size_px)
        fine = [
            fit for fit in fits if mpp is not None and self.mpp * fit[1] <= mpp * (1 + TOLERANCE)
        ]
        level, downsample = fine[-1] if fine else fits[0]
        size = (max(1, math.floor(w / downsample)), max(1, math.floor(h / downsample)))
        return self.read_at((0, 0), size, self._at(downsample, level=level)), downsample

    def info(self) -> dict[str, Any]:
        """Levels, dimensions, mpp (and its source), magnification, vendor and bounds."""
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "bounds_xy": list(self.bounds_xy),
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "magnification": self.magnification,
            "levels": [
                {"level": i, "dimensions": list(d), "downsample": s}
                for i, (d, s) in enumerate(
                    zip(self.level_dimensions, self.level_downsamples, strict=True)
                )
            ],
        }


def open_slide(
    path: str | Path, *, mpp: float | None = None, magnification: float | None = None
) -> Slide:
    """Open a slide (see :class:`Slide`); close it, or use it as a context manager."""
    return Slide(path, mpp=mpp, magnification=magnification)


_POOL: OrderedDict[tuple[str, float | None, float | None], Slide] = OrderedDict()
_CACHE: list[openslide.OpenSlideCache] = []
_TILE_CACHE: list[DecodedTileCache] = []


def pooled_slide(
    path: str | Path, *, mpp: float | None = None, magnification: float | None = None
) -> Slide:
    """A slide from this process's pool of at most :data:`POOL_SIZE` open slides.

    All pooled slides share one OpenSlide tile cache of :data:`CACHE_BYTES` and one cache of
    decoded TIFF tiles of as many bytes; the least recently used slide is closed when the pool
    is full. Do not close a pooled slide.
    """
    key = (str(Path(path).resolve()), mpp, magnification)
    if key in _POOL:
        _POOL.move_to_end(key)
        return _POOL[key]
    slide = Slide(path, mpp=mpp, magnification=magnification)
    if not _CACHE:
        _CACHE.append(openslide.OpenSlideCache(CACHE_BYTES))
        _TILE_CACHE.append(DecodedTileCache(CACHE_BYTES))
    slide.set_cache(_CACHE[0], _TILE_CACHE[0])
    _POOL[key] = slide
    while len(_POOL) > POOL_SIZE:
        _POOL.popitem(last=False)[1].close()
    return slide


def close_pool() -> None:
    """Close every pooled slide of this process."""
    while _POOL:
        _POOL.popitem()[1].close()


def _open(path: Path) -> openslide.OpenSlide:
    if not path.is_file():
        raise UnsupportedFormatError("does not exist or is not a file", path)
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError:
        raise UnsupportedFormatError(
            "is not a slide OpenSlide can read (SVS, NDPI, MRXS, SCN, tiled TIFF, ...)", path
        ) from None
    except openslide.OpenSlideError as error:
        raise CorruptFileError(
            f"cannot open slide (truncated or corrupt?): {error}", path
        ) from None


def _file_mpp(path: Path, props: dict[str, str]) -> tuple[float | None, str]:
    """mpp of a slide from its TIFF resolution tags (exact rationals) or OpenSlide's properties."""
    tiff_mpp = _tiff_resolution_mpp(path) if path.suffix.lower() in {".tif", ".tiff"} else None
    if tiff_mpp is not None:
        return tiff_mpp, "tiff-resolution"
    value = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_X))
    return value, ("vendor" if value is not None else "none")


def _tiff_resolution_mpp(path: Path) -> float | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            resolution = tags.get("XResolution")
            unit = tags.get("ResolutionUnit")
            if resolution is None or unit is None:
                return None
            numerator, denominator = resolution.value
            unit_value = int(unit.value)
    except (tifffile.TiffFileError, OSError, ValueError, TypeError):
        return None
    if numerator <= 0 or denominator <= 0:
        return None
    pixels_per_unit = Fraction(numerator, denominator)
    microns = {2: 25400, 3: 10000}.get(unit_value)  # inch, centimetre
    if microns is None:
        return None
    return float(microns / pixels_per_unit)


def _positive_float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _background(props: dict[str, str]) -> str:
    """The slide's background colour as ``"rrggbb"`` (white unless the slide says otherwise)."""
    return props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")


def _flatten(region: Image.Image, props: dict[str, str]) -> Image.Image:
    """RGBA from OpenSlide (transparent outside the scan) -> RGB over the background colour."""
    colour = "#" + _background(props)
    background = Image.new("RGB", region.size, colour)
    background.paste(region, mask=region.split()[3])
    return background


def _region_rgb(
    region: Image.Image,
    props: dict[str, str],
    out: np.ndarray[Any, np.dtype[np.uint8]] | None = None,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """An RGBA region from OpenSlide as RGB over the background, into ``out`` or a new array.

    An opaque region (the usual case) is converted by Pillow, ~4x faster than slicing the
    channels in NumPy; a region with transparent pixels is blended by :func:`_flatten_array`.
    """
    if region.getchannel("A").getextrema()[0] != 255:  # type: ignore[no-untyped-call]
        return _flatten_array(np.asarray(region), props, out)
    rgb = region.convert("RGB")
    if out is None:
        return np.array(rgb)
    out[...] = np.asarray(rgb)
    return out


def _flatten_array(
    rgba: np.ndarray[Any, np.dtype[np.uint8]],
    props: dict[str, str],
    out: np.ndarray[Any, np.dtype[np.uint8]] | None = None,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """:func:`_flatten` on a ``(rows, cols, 4)`` array, into ``out`` or a new writable array."""
    if out is None:
        out = np.empty((*rgba.shape[:2], 3), dtype=np.uint8)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        np.copyto(out, rgba[..., :3])
        return out
    colour = _background(props)
    background = np.array([int(colour[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)
    out[...] = background.astype(np.uint8)  # transparent: the background (outside the scan)
    opaque = alpha == 255
    out[opaque] = rgba[..., :3][opaque]
    partial = (alpha > 0) & ~opaque  # blended only where needed (edges of the scan)
    weight = alpha[partial][:, None].astype(np.float32) / 255
    blended = rgba[..., :3][partial] * weight + background * (1 - weight)
    out[partial] = np.round(blended).astype(np.uint8)
    return out
