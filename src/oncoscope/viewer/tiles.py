"""Deep-zoom tiles of whole-slide images (OpenSlide's DeepZoomGenerator), slides opened lazily.

At most :data:`OPEN_SLIDES` slides are open at once; the least recently used is closed when
another is opened. The deep-zoom image covers the slide's bounds rectangle (``limit_bounds``),
so its full-resolution pixels are the level-0 coordinates of :mod:`oncoscope.io.slides`.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openslide
from openslide.deepzoom import DeepZoomGenerator

from oncoscope.errors import CorruptFileError, InvalidOptionError
from oncoscope.io.slides import Slide

#: Slides kept open at once.
OPEN_SLIDES = 4
#: Deep-zoom tile size and overlap in pixels (254 + 2 x 1 = 256, OpenSlide's example default).
TILE_SIZE = 254
OVERLAP = 1
#: JPEG quality of the tiles.
JPEG_QUALITY = 85
#: Tile formats served.
FORMATS = ("jpeg", "png")


@dataclass
class OpenedSlide:
    """An open slide: the reader (for information) and its deep-zoom generator."""

    slide: Slide
    deepzoom: DeepZoomGenerator

    def dzi(self, image_format: str = "jpeg") -> str:
        """The Deep Zoom descriptor XML of the slide."""
        return str(self.deepzoom.get_dzi(image_format))

    def tile(self, level: int, col: int, row: int, image_format: str = "jpeg") -> bytes:
        """One deep-zoom tile as JPEG or PNG bytes.

        Raises:
            InvalidOptionError: an unknown format, or a level or address outside the pyramid.
            CorruptFileError: OpenSlide cannot read the region.
        """
        if image_format not in FORMATS:
            raise InvalidOptionError(f"tile format must be one of {FORMATS}, got {image_format!r}")
        if not 0 <= level < self.deepzoom.level_count:
            raise InvalidOptionError(f"level {level} is not in 0..{self.deepzoom.level_count - 1}")
        cols, rows = self.deepzoom.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise InvalidOptionError(f"tile ({col}, {row}) is outside level {level}")
        try:
            image = self.deepzoom.get_tile(level, (col, row))
        except openslide.OpenSlideError as error:
            raise CorruptFileError(f"cannot read tile: {error}", self.slide.path) from None
        buffer = io.BytesIO()
        if image_format == "jpeg":
            image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        else:
            image.convert("RGB").save(buffer, "PNG")
        return buffer.getvalue()

    def info(self) -> dict[str, Any]:
        """:meth:`oncoscope.io.slides.Slide.info` plus the deep-zoom level count."""
        facts = self.slide.info()
        facts["deepzoom_levels"] = self.deepzoom.level_count
        return facts


class SlideCache:
    """Slides opened on first use, at most ``size`` at once (least recently used closed).

    Thread-safe: uvicorn serves tiles from a thread pool.
    """

    def __init__(self, size: int = OPEN_SLIDES) -> None:
        self._size = size
        self._open: OrderedDict[Path, OpenedSlide] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> OpenedSlide:
        """The opened slide at ``path``.

        Raises:
            UnsupportedFormatError, CorruptFileError, MissingMetadataError: see
                :class:`oncoscope.io.slides.Slide`.
        """
        with self._lock:
            if path in self._open:
                self._open.move_to_end(path)
                return self._open[path]
            slide = _open_slide(path)
            self._open[path] = slide
            while len(self._open) > self._size:
                self._open.popitem(last=False)[1].slide.close()
            return slide

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Close every open slide."""
        with self._lock:
            while self._open:
                self._open.popitem()[1].slide.close()


def _open_slide(path: Path) -> OpenedSlide:
    from oncoscope.errors import MissingMetadataError

    slide = Slide(path)  # raises for unreadable files
    deepzoom = DeepZoomGenerator(
        slide.handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=True
    )
    if deepzoom.level_count < 1:
        raise MissingMetadataError("slide has no pixels", path)
    return OpenedSlide(slide, deepzoom)
