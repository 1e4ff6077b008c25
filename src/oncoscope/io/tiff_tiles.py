"""Pixels of tiled TIFF pyramid levels read straight from their tiles, as OpenSlide reads them.

For slides OpenSlide opens as ``generic-tiff`` or ``aperio`` (``.tif``, ``.tiff``, ``.svs``),
:class:`TiledTiff` maps each OpenSlide level to its TIFF page (tifffile), reads a tile's bytes
at its offset, decodes it (imagecodecs: JPEG with JPEGTables, RGB or YCbCr, as OpenSlide sets
the colour space from the photometric tag; deflate, LZW and uncompressed through tifffile's
``TiffPage.decode``) and copies the window asked for into the caller's ``(rows, cols, 3) uint8``
RGB array. Decoded tiles are kept in a :class:`DecodedTileCache` bounded in bytes, so the
224-px reads that share a TIFF tile decode it once. Outside the level is the background colour,
and partial tiles at the right and bottom edges are cropped, as OpenSlide does.

A read it cannot serve exactly as OpenSlide's ``read_region`` returns False and the caller
reads through OpenSlide instead: levels of other layouts (strips, planar, not 8-bit RGB,
JPEG 2000 and other compressions), a page whose size is not OpenSlide's level size, missing
tiles, level coordinates that are not whole level pixels (OpenSlide then interpolates), tiles
past the end of the file, JPEG data that does not end with its end-of-image marker, or a
decoding error. So a tile that is cut short, zeroed or has a broken header still ends in
OpenSlide's error. Not caught: JPEG data garbled inside its entropy-coded part but still ending
in the marker, which libjpeg decodes with only a warning (imagecodecs does not report
warnings); it is returned as decoded where OpenSlide, which treats warnings as errors, fails.

Hand-written because OpenSlide composites every ``read_region`` through cairo into premultiplied
ARGB that becomes an RGBA image per call (224-px reads here are about 4x faster, see
``benchmarks/slide_throughput.py``), and tifffile/zarr slicing of a level keeps no decoded
tiles, so neighbouring reads would decode the same tile again.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

#: OpenSlide vendors whose levels are TIFF pages read as they are (no bounds, no stitching).
VENDORS = frozenset({"generic-tiff", "aperio"})
#: File suffixes of those slides.
SUFFIXES = frozenset({".tif", ".tiff", ".svs"})
#: OpenSlide reads regions in squares of this many level pixels (``openslide_read_region``).
_OPENSLIDE_CHUNK_PX = 4096
_NONE, _LZW, _JPEG, _DEFLATE, _DEFLATE_OLD = 1, 5, 7, 8, 32946
_RGB, _YCBCR = 2, 6

_Array = np.ndarray[Any, np.dtype[np.uint8]]


class DecodedTileCache:
    """Decoded tiles, least recently used dropped first, at most ``max_bytes`` of pixels in all.

    One cache can be shared by several :class:`TiledTiff` readers (keys name the reader). A tile
    larger than the whole bound is not kept. Safe to use from several threads.

    Args:
        max_bytes: bound on the summed ``nbytes`` of the tiles kept.

    Example:
        >>> cache = DecodedTileCache(2 * 64 * 64 * 3)
        >>> for key in "abc":
        ...     cache.put(key, np.zeros((64, 64, 3), np.uint8))
        >>> cache.get("a") is None, cache.get("c") is not None, cache.nbytes
        (True, True, 24576)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._tiles: OrderedDict[Hashable, _Array] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tiles)

    def get(self, key: Hashable) -> _Array | None:
        """The tile kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            return tile

    def put(self, key: Hashable, tile: _Array) -> None:
        """Keep ``tile`` under ``key``, dropping the least recently used tiles to stay in bound."""
        if tile.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._tiles[key] = tile
            self.nbytes += tile.nbytes
            while self.nbytes > self.max_bytes:
                self.nbytes -= self._tiles.popitem(last=False)[1].nbytes

    def drop(self, owner: Hashable) -> None:
        """Forget the tiles whose key is a tuple starting with ``owner``."""
        with self._lock:
            for key in [k for k in self._tiles if isinstance(k, tuple) and k[0] == owner]:
                self.nbytes -= self._tiles.pop(key).nbytes


@dataclass(frozen=True)
class _Level:
    """One TIFF page as an OpenSlide level: the page (its size and tile size), where its tiles
    are (``across`` tiles a row), how to decode them."""

    page: tifffile.TiffPage
    across: int
    offsets: Sequence[int]
    bytecounts: Sequence[int]
    downsample: float


@dataclass(frozen=True)
class JpegPiece:
    """The part of a window that one JPEG-compressed TIFF tile holds (see
    :meth:`TiledTiff.jpeg_pieces`).

    Attributes:
        key: the tile, the same for every window that uses it (in this process).
        stream: the tile's complete JPEG stream (the page's JPEGTables merged in).
        source: ``(top, bottom, left, right)`` of the part inside the decoded tile.
        target: ``(top, bottom, left, right)`` of where it goes in the window.
    """

    key: Hashable
    stream: bytes
    source: tuple[int, int, int, int]
    target: tuple[int, int, int, int]


class TiledTiff:
    """Reads of a slide's tiled TIFF levels without OpenSlide (see the module docstring).

    Open it with :meth:`open`, which says None for a slide it cannot serve at all.

    Args:
        path: the slide file.
        tif: the slide opened by tifffile (closed by :meth:`close`).
        levels: per OpenSlide level, the level served, or None for one left to OpenSlide.
        background: RGB of the area outside the slide.
        cache: where decoded tiles are kept (may be shared with other readers).
    """

    _ids = itertools.count()

    def __init__(
        self,
        path: Path,
        tif: tifffile.TiffFile,
        levels: Sequence[_Level | None],
        background: tuple[int, int, int],
        cache: DecodedTileCache,
    ) -> None:
        self.path = path
        self.levels = tuple(levels)
        self.background = np.array(background, dtype=np.uint8)
        self.cache = cache
        self._tif = tif
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        self._id = next(self._ids)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        vendor: str,
        level_dimensions: Sequence[tuple[int, int]],
        level_downsamples: Sequence[float],
        background: tuple[int, int, int],
        cache: DecodedTileCache,
    ) -> TiledTiff | None:
        """A reader of the slide's levels, or None when it cannot serve any level of it.

        Args:
            path: the slide file.
            vendor: OpenSlide's vendor of the slide (only ``generic-tiff`` and ``aperio``).
            level_dimensions: OpenSlide's ``(width, height)`` of each level, which the TIFF
                pages must match one to one.
            level_downsamples: OpenSlide's downsample of each level.
            background: RGB of the area outside the slide.
            cache: where decoded tiles are kept.
        """
        path = Path(path)
        if vendor not in VENDORS or path.suffix.lower() not in SUFFIXES:
            return None
        if not hasattr(os, "pread"):
            return None
        try:
            tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, OSError, ValueError):
            return None
        try:
            levels = _levels(tif, vendor, level_dimensions, level_downsamples)
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, TypeError):
            levels = []  # tags tifffile cannot make sense of: all reads through OpenSlide
        if any(levels):
            try:
                return cls(path, tif, levels, background, cache)
            except OSError:
                pass
        tif.close()
        return None

    def serves(self, level: int) -> bool:
        """Whether reads of this OpenSlide level come from here (else from OpenSlide)."""
        return 0 <= level < len(self.levels) and self.levels[level] is not None

    def read(self, location_xy: tuple[int, int], level: int, out: _Array) -> bool:
        """Read a window of a level into ``out``, as OpenSlide's ``read_region`` would.

        Args:
            location_xy: level-0 pixel ``(x, y)`` of the window's top-left corner (as given
                to ``read_region``).
            level: OpenSlide level index.
            out: writable ``(rows, cols, 3) uint8`` RGB array, the window's size.

        Returns:
            True when ``out`` holds the window (outside the level: the background colour);
            False when this read is left to OpenSlide (``out`` then holds anything).
        """
        rows, cols = out.shape[:2]
        window = self._window(location_xy, level, rows, cols)
        if window is None:
            return False
        chosen, left, top = window
        if not _inside(chosen, left, top, rows, cols):
            out[...] = self.background
        for index, (b0, b1, a0, a1), (t0, t1, l0, l1) in _cover(chosen, left, top, rows, cols):
            tile = self._tile(level, chosen, index)
            if tile is None:
                return False
            out[t0:t1, l0:l1] = tile[b0:b1, a0:a1]
        return True

    def jpeg_pieces(
        self, location_xy: tuple[int, int], level: int, rows: int, cols: int
    ) -> tuple[list[JpegPiece], bool] | None:
        """The compressed JPEG tiles a window is made of, for a decoder elsewhere (the GPU).

        Served for levels of YCbCr JPEG tiles only (the colour space every JPEG decoder
        assumes for three components without markers; OpenSlide's RGB-JPEG is left to
        :meth:`read`), for the same windows as :meth:`read`.

        Args:
            location_xy: level-0 pixel ``(x, y)`` of the window's top-left corner.
            level: OpenSlide level index.
            rows, cols: the window's size in level pixels.

        Returns:
            ``(pieces, background)``: each piece a tile's complete JPEG stream with the part
            of it that goes where in the window; ``background`` is True when part of the
            window is outside the level (the background colour). None when the window cannot
            be served so (then :meth:`read` it).
        """
        window = self._window(location_xy, level, rows, cols)
        if window is None:
            return None
        chosen, left, top = window
        page = chosen.page
        if page.compression != _JPEG or page.photometric != _YCBCR:
            return None
        pieces = []
        for index, source, target in _cover(chosen, left, top, rows, cols):
            data = self._tile_bytes(chosen, index)
            stream = complete_jpeg(page.jpegtables, data) if data is not None else None
            if stream is None:
                return None
            pieces.append(JpegPiece((self._id, level, index), stream, source, target))
        return pieces, not _inside(chosen, left, top, rows, cols)

    def _window(
        self, location_xy: tuple[int, int], level: int, rows: int, cols: int
    ) -> tuple[_Level, int, int] | None:
        """The served level and the window's top-left level pixel ``(left, top)``, or None
        when the read is left to OpenSlide (a level not served, a closed file, a corner at a
        fraction of a level pixel, or OpenSlide's chunks doing so)."""
        chosen = self.levels[level] if 0 <= level < len(self.levels) else None
        if chosen is None or self._fd < 0:
            return None
        ds = chosen.downsample
        x, y = location_xy[0] / ds, location_xy[1] / ds
        if not (x.is_integer() and y.is_integer()):
            return None  # OpenSlide paints at a fraction of a pixel (cairo interpolates)
        if max(rows, cols) > _OPENSLIDE_CHUNK_PX and not float(ds).is_integer():
            return None  # OpenSlide's later chunks start at fractions of a level pixel
        return chosen, int(x), int(y)

    def _tile_bytes(self, chosen: _Level, index: int) -> bytes | None:
        """A tile's stored bytes, or None for a missing tile (OpenSlide leaves it transparent
        or fills it), one past the end of the file, or a short read."""
        offset, count = chosen.offsets[index], chosen.bytecounts[index]
        if count <= 0 or offset <= 0 or offset + count > self._size or self._fd < 0:
            return None
        data = os.pread(self._fd, count, offset)
        return data if len(data) == count else None

    def close(self) -> None:
        """Close the file and forget this slide's decoded tiles."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._tif.close()
            self.cache.drop(self._id)

    def _tile(self, level: int, chosen: _Level, index: int) -> _Array | None:
        """The decoded ``(tile_h, tile_w, 3) uint8`` tile, or None when it cannot be served."""
        key = (self._id, level, index)
        tile = self.cache.get(key)
        if tile is not None:
            return tile
        data = self._tile_bytes(chosen, index)
        if data is None:
            return None
        tile = _decode(chosen.page, data, index)
        if tile is None or tile.shape != (chosen.page.tilelength, chosen.page.tilewidth, 3):
            return None
        self.cache.put(key, tile)
        return tile


def _inside(chosen: _Level, left: int, top: int, rows: int, cols: int) -> bool:
    """Whether a window at level pixel ``(left, top)`` of ``rows`` x ``cols`` lies wholly
    inside the level."""
    page = chosen.page
    return (
        left >= 0 and top >= 0 and left + cols <= page.imagewidth and top + rows <= page.imagelength
    )


def _cover(
    chosen: _Level, left: int, top: int, rows: int, cols: int
) -> Iterator[tuple[int, tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """The tiles of a window at level pixel ``(left, top)`` of ``rows`` x ``cols`` inside the
    level: ``(tile index, (top, bottom, left, right) in the tile, the same in the window)``."""
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + cols, chosen.page.imagewidth), min(top + rows, chosen.page.imagelength)
    if x0 >= x1 or y0 >= y1:
        return
    th, tw = chosen.page.tilelength, chosen.page.tilewidth
    for row in range(y0 // th, (y1 - 1) // th + 1):
        for col in range(x0 // tw, (x1 - 1) // tw + 1):
            a0, a1 = max(x0, col * tw), min(x1, (col + 1) * tw)
            b0, b1 = max(y0, row * th), min(y1, (row + 1) * th)
            yield (
                row * chosen.across + col,
                (b0 - row * th, b1 - row * th, a0 - col * tw, a1 - col * tw),
                (b0 - top, b1 - top, a0 - left, a1 - left),
            )


def complete_jpeg(tables: bytes | None, data: bytes) -> bytes | None:
    r"""A TIFF JPEG tile as a stream any decoder reads: its abbreviated ``data`` with the page's
    JPEGTables (a stream of quantisation and Huffman tables only) merged in before its frame;
    ``data`` as it is without tables. None when either is not a whole JPEG stream (start and
    end-of-image markers), as a cut-short tile.

    Example:
        >>> complete_jpeg(b"\xff\xd8TABLES\xff\xd9", b"\xff\xd8FRAME\xff\xd9")
        b'\xff\xd8TABLESFRAME\xff\xd9'
        >>> complete_jpeg(None, b"\xff\xd8FRAME") is None
        True
    """
    if not _whole_jpeg(data):
        return None
    if not tables:
        return data
    if not _whole_jpeg(tables):
        return None
    return tables[:-2] + data[2:]


def _whole_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts with JPEG's start-of-image marker and ends with its end."""
    return data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


def _decode(page: tifffile.TiffPage, data: bytes, index: int) -> _Array | None:
    """One tile's RGB pixels decoded as OpenSlide decodes them, or None on any failure."""
    try:
        if page.compression == _JPEG:
            if not _whole_jpeg(data):
                return None  # cut short or padded: libjpeg may only warn, OpenSlide may fail
            # OpenSlide sets the JPEG colour space from the photometric tag (Aperio's RGB JPEG)
            space = "YCBCR" if page.photometric == _YCBCR else "RGB"
            pixels = imagecodecs.jpeg8_decode(
                data, tables=page.jpegtables, colorspace=space, outcolorspace="RGB"
            )
        else:
            decoded = page.decode(data, index)[0]
            if decoded is None:
                return None
            pixels = np.asarray(decoded).reshape(decoded.shape[-3:])
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError):  # codec errors subclass
        # RuntimeError (imagecodecs) or ValueError (tifffile): OpenSlide reads it and reports
        return None
    return pixels if pixels.dtype == np.uint8 and pixels.ndim == 3 else None


def _levels(
    tif: tifffile.TiffFile,
    vendor: str,
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[float],
) -> list[_Level | None]:
    """TIFF pages in OpenSlide's level order, each served or None; [] when they do not match.

    OpenSlide's levels are the tiled pages of the main IFD chain: for ``aperio`` all of them in
    file order; for ``generic-tiff`` the first page and the reduced-resolution ones, sorted by
    width, widest first (a stable sort).
    """
    pages: list[tifffile.TiffPage] = []
    for number, page in enumerate(tif.pages):
        if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
            continue
        if vendor == "generic-tiff" and number > 0 and not page.subfiletype & 1:
            continue
        pages.append(page)
    if vendor == "generic-tiff":
        pages.sort(key=lambda page: -page.imagewidth)
    sizes = [(page.imagewidth, page.imagelength) for page in pages]
    if sizes != [tuple(size) for size in level_dimensions]:
        return []
    return [
        _level(page, downsample) for page, downsample in zip(pages, level_downsamples, strict=True)
    ]


def _servable(page: tifffile.TiffPage) -> bool:
    """Whether a page's tiles decode here exactly as OpenSlide decodes them."""
    if page.compression == _JPEG:
        photometric_ok = page.photometric in {_RGB, _YCBCR}
    else:
        photometric_ok = page.photometric == _RGB
    return (
        photometric_ok
        and page.compression in {_NONE, _LZW, _JPEG, _DEFLATE, _DEFLATE_OLD}
        and page.predictor in {1, 2}
        and page.planarconfig == 1
        and page.bitspersample == 8
        and page.samplesperpixel == 3
        and not page.extrasamples
        and page.sampleformat == 1
        and page.tags.valueof(274, 1) == 1  # Orientation: top-left
        and page.fillorder == 1
        and page.imagedepth == 1
        and page.tiledepth == 1
        and page.tilewidth > 0
        and page.tilelength > 0
    )


def _level(page: tifffile.TiffPage, downsample: float) -> _Level | None:
    """The page as a served level, or None when its tiles cannot be served exactly."""
    if not _servable(page):
        return None
    across = math.ceil(page.imagewidth / page.tilewidth)
    down = math.ceil(page.imagelength / page.tilelength)
    offsets, bytecounts = page.dataoffsets, page.databytecounts
    if len(offsets) != across * down or len(bytecounts) != across * down:
        return None
    return _Level(page, across, offsets, bytecounts, downsample)


def parse_background(colour: str) -> tuple[int, int, int]:
    """RGB of OpenSlide's ``openslide.background-color`` (``"rrggbb"``).

    Example:
        >>> parse_background("ffffff"), parse_background("00ff80")
        ((255, 255, 255), (0, 255, 128))
    """
    return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
