"""Maps as transparent PNG overlays: class probabilities, MIL attention, segmentation, mask
contours, CAMs.

Inputs are the arrays the other commands write: ``probabilities.npy`` ``(rows, cols, C)``
float32 in ``[0, 1]`` on the output-cell grid of ``oncoscope slide`` (NaN where not computed),
CT masks ``(H, W)`` bool, CAM maps ``(H, W)`` float32 in ``[0, 1]``. Outputs are
``(rows, cols, 4) uint8`` RGBA arrays (alpha 0 where there is nothing to show) and PNG bytes;
the browser sets the overlay's opacity.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from oncoscope.errors import InvalidOptionError, UnsupportedFormatError

#: Longest side of an overlay PNG after nearest-neighbour enlargement (pixels).
MAX_OVERLAY_SIDE_PX = 2048
#: Colour map of probability heatmaps and CAMs (matplotlib name).
COLORMAP = "turbo"

RGBA = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Grid:
    """The output-cell grid of ``oncoscope slide``: cell ``(r, c)`` covers level-0
    ``x in [ox + c*s, ox + (c+1)*s)``, ``y in [oy + r*s, oy + (r+1)*s)``.

    Attributes:
        origin_xy: level-0 ``(ox, oy)`` of cell (0, 0)'s corner.
        cell_px: ``s``, level-0 pixels per cell side.
        shape: ``(rows, cols)``.
    """

    origin_xy: tuple[float, float]
    cell_px: float
    shape: tuple[int, int]

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Grid:
        """The grid of a ``summary.json``.

        Raises:
            InvalidOptionError: ``grid`` missing or malformed.
        """
        try:
            grid = summary["grid"]
            ox, oy = (float(v) for v in grid["origin_level0_xy"])
            cell = float(grid["cell_size_level0_px"])
            rows, cols = (int(v) for v in grid["shape_rows_cols"])
        except (KeyError, TypeError, ValueError):
            raise InvalidOptionError("summary.json has no valid 'grid'") from None
        if not (cell > 0 and rows > 0 and cols > 0):
            raise InvalidOptionError("summary.json 'grid' has a non-positive size")
        return cls((ox, oy), cell, (rows, cols))

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """``(row, col)`` of the cell holding level-0 ``(x, y)``, or None outside the grid.

        Example:
            >>> Grid((100.0, 0.0), 50.0, (2, 3)).cell_at(249.9, 99.0)
            (1, 2)
            >>> Grid((100.0, 0.0), 50.0, (2, 3)).cell_at(99.0, 0.0) is None
            True
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        col = math.floor((x - self.origin_xy[0]) / self.cell_px)
        row = math.floor((y - self.origin_xy[1]) / self.cell_px)
        if 0 <= row < self.shape[0] and 0 <= col < self.shape[1]:
            return row, col
        return None

    def extent_level0(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in level-0 pixels covered by the grid."""
        rows, cols = self.shape
        return (*self.origin_xy, cols * self.cell_px, rows * self.cell_px)


def load_probabilities(path: Path, n_classes: int | None = None) -> npt.NDArray[np.float32]:
    """``probabilities.npy`` memory-mapped: ``(rows, cols, C)`` float32.

    Raises:
        UnsupportedFormatError: not a 3-D float array, or ``C`` differs from ``n_classes``.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UnsupportedFormatError(f"not a NumPy array file: {error}", path) from None
    if array.ndim != 3 or array.dtype.kind != "f":
        raise UnsupportedFormatError(
            f"expected (rows, cols, classes) float, got {array.shape} {array.dtype}", path
        )
    if n_classes is not None and array.shape[2] != n_classes:
        raise UnsupportedFormatError(
            f"has {array.shape[2]} classes, summary.json names {n_classes}", path
        )
    probabilities: npt.NDArray[np.float32] = array.astype(np.float32, copy=False)
    return probabilities


def load_attention_map(path: Path) -> npt.NDArray[np.float32]:
    """Level 0 of ``attention.tif`` of ``oncoscope mil predict``: ``(rows, cols)`` float32,
    each tile's attention percentile (0..1) on its cells, NaN where no tile lies.

    Raises:
        UnsupportedFormatError: not a TIFF, or its first page not a 2-D float image.
    """
    import tifffile

    try:
        array = tifffile.imread(path, key=0)
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise UnsupportedFormatError(f"not a TIFF map: {error}", path) from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise UnsupportedFormatError(
            f"expected a (rows, cols) float map, got {array.shape} {array.dtype}", path
        )
    values: npt.NDArray[np.float32] = array.astype(np.float32, copy=False)
    return values


def parse_colour(text: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` as an RGB triple.

    Raises:
        InvalidOptionError: not ``#rrggbb``.

    Example:
        >>> parse_colour("#ff8000")
        (255, 128, 0)
    """
    value = text.strip().lstrip("#")
    if len(value) != 6:
        raise InvalidOptionError(f"colour must be #rrggbb, got {text!r}")
    try:
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    except ValueError:
        raise InvalidOptionError(f"colour must be #rrggbb, got {text!r}") from None


def class_colours(class_names: Sequence[str], colours: Mapping[str, str]) -> list[str]:
    """``#rrggbb`` per class: the summary's colour, else matplotlib's ``tab10`` cycle."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cycle = colormaps["tab10"]
    result = []
    for index, name in enumerate(class_names):
        given = colours.get(name)
        try:
            result.append("#{:02x}{:02x}{:02x}".format(*parse_colour(given)) if given else "")
        except InvalidOptionError:
            result.append("")
        if not result[-1]:
            result[-1] = to_hex(cycle(index % 10))
    return result


def colormap_stops(colormap: str = COLORMAP, count: int = 11) -> list[str]:
    """``count`` evenly spaced colours of a colour map as ``#rrggbb`` (for a CSS colour bar)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[colormap]
    return [to_hex(cmap(i / (count - 1))) for i in range(count)]


def heatmap_rgba(
    probability: npt.NDArray[np.floating], colormap: str = COLORMAP, *, fade: bool = False
) -> RGBA:
    """Values ``(rows, cols)`` in ``[0, 1]`` in a colour map; NaN cells transparent.

    With ``fade`` the opacity follows the value (0 transparent, 1 opaque), so that a CAM shows
    only where it is high and leaves the rest of the image as it is.
    """
    from matplotlib import colormaps

    values = np.asarray(probability, dtype=np.float32)
    valid = np.isfinite(values)
    unit = np.clip(np.where(valid, values, 0.0), 0.0, 1.0)
    rgba: RGBA = colormaps[colormap](unit, bytes=True)
    alpha = np.round(unit * 255) if fade else np.full(unit.shape, 255.0)
    rgba[..., 3] = np.where(valid, alpha, 0).astype(np.uint8)
    return rgba


def argmax_classes(probabilities: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
    """The most probable class per cell of ``(rows, cols, C)``; -1 where all are NaN."""
    values = np.asarray(probabilities, dtype=np.float32)
    valid = np.isfinite(values).any(axis=2)
    best = np.argmax(np.where(np.isfinite(values), values, -np.inf), axis=2)
    return np.where(valid, best, -1).astype(np.int64)


def segmentation_rgba(
    labels: npt.NDArray[np.integer], colours: Sequence[str], visible: Iterable[int]
) -> RGBA:
    """Class labels ``(rows, cols)`` (-1 = none) in class colours; hidden classes transparent."""
    table = np.zeros((len(colours) + 1, 4), np.uint8)  # last row: label -1
    shown = set(visible)
    for index, colour in enumerate(colours):
        if index in shown:
            table[index] = (*parse_colour(colour), 255)
    rgba: RGBA = table[np.asarray(labels)]
    return rgba


def contour_rgba(mask: npt.NDArray[np.bool_], colour: str, thickness_px: int = 1) -> RGBA:
    """The inner outline of a ``(H, W)`` bool mask in ``colour``, the rest transparent."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(np.asarray(mask, dtype=bool), mode="inner")
    if thickness_px > 1:
        edges = ndimage.binary_dilation(edges, iterations=thickness_px - 1) & mask
    rgba = np.zeros((*edges.shape, 4), np.uint8)
    rgba[edges] = (*parse_colour(colour), 255)
    return rgba


def enlarge(rgba: RGBA, max_side_px: int = MAX_OVERLAY_SIDE_PX) -> RGBA:
    """Repeat pixels by the largest integer factor keeping the longer side <= ``max_side_px``
    (so a coarse grid stays crisp when the browser scales it)."""
    factor = max(1, max_side_px // max(rgba.shape[:2]))
    if factor == 1:
        return rgba
    enlarged: RGBA = np.repeat(np.repeat(rgba, factor, axis=0), factor, axis=1)
    return enlarged


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    """An ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, "PNG")
    return buffer.getvalue()
