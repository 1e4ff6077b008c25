"""PNG figures of a probability map: a heatmap over the slide thumbnail and the class map.

The map is drawn cell by cell (nearest-neighbour sampling at each thumbnail pixel), never
smoothed, so what is shown is what was computed. The figures are composed with Pillow (colour
maps from matplotlib): a figure per slide costs milliseconds, where a matplotlib figure costs
~0.3 s, a large share of a small slide's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb
from PIL import Image, ImageDraw, ImageFont

from oncoscope.io.atomic import atomic_path

#: Opacity of the heatmap over the thumbnail.
HEATMAP_ALPHA = 0.55
#: Font size (px) of titles and legends.
FONT_PX = 14
_MARGIN = 8

#: Class names (lower case, any part) taken as the class a heatmap shows by default.
TUMOUR_WORDS = ("tumour", "tumor", "cancer", "carcinoma", "malignan", "tum")


def class_colors(class_names: Sequence[str]) -> dict[str, str]:
    """``{class: "#rrggbb"}`` from matplotlib's ``tab10`` (``tab20`` beyond ten classes).

    Example:
        >>> class_colors(["a", "b"])
        {'a': '#1f77b4', 'b': '#ff7f0e'}
    """
    cmap = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    return {name: to_hex(cmap(i % cmap.N)) for i, name in enumerate(class_names)}


def heatmap_class(class_names: Sequence[str], chosen: str | None = None) -> str | None:
    """The class a heatmap shows: ``chosen``, else the first tumour-like name, else None (max).

    Example:
        >>> heatmap_class(["background", "stroma", "tumour"])
        'tumour'
    """
    if chosen is not None:
        return chosen
    for name in class_names:
        if any(word in name.lower() for word in TUMOUR_WORDS):
            return name
    return None


def sample_cells(
    grid_map: np.ndarray[Any, Any],
    thumbnail_shape: tuple[int, int],
    thumb_downsample: float,
    cell_size_level0: float,
) -> np.ndarray[Any, Any]:
    """The map value at each thumbnail pixel's centre (nearest cell)."""
    rows = ((np.arange(thumbnail_shape[0]) + 0.5) * thumb_downsample / cell_size_level0).astype(int)
    cols = ((np.arange(thumbnail_shape[1]) + 0.5) * thumb_downsample / cell_size_level0).astype(int)
    rows = np.minimum(rows, grid_map.shape[0] - 1)
    cols = np.minimum(cols, grid_map.shape[1] - 1)
    return grid_map[np.ix_(rows, cols)]


def write_heatmap(
    values: np.ndarray[Any, Any],
    thumbnail: np.ndarray[Any, Any],
    path: str | Path,
    title: str,
) -> Path:
    """Probabilities (0..1, NaN = not computed) at thumbnail size over the thumbnail.

    The ``inferno`` colours are blended over the thumbnail at :data:`HEATMAP_ALPHA` where the
    map is computed; a colour bar labelled ``title`` is drawn at the right.
    """
    lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    computed = np.isfinite(values)
    levels = np.round(np.clip(np.where(computed, values, 0), 0, 1) * 255).astype(np.intp)
    weight = np.where(computed, HEATMAP_ALPHA, 0.0).astype(np.float32)[..., None]
    blended = thumbnail[..., :3].astype(np.float32) * (1 - weight) + lut[levels] * weight
    image = Image.fromarray(np.round(blended).astype(np.uint8))
    font = _font()
    bar_h = max(32, image.height * 3 // 4)
    bar = Image.fromarray(np.round(lut[::-1]).astype(np.uint8)[:, None, :]).resize((16, bar_h))
    labels = ("1.0", "0.5", "0.0")
    bar_w = 16 + _MARGIN + max(int(_draw_width(font, label)) for label in labels)
    canvas, draw = _canvas(image, title, bar_w + 3 * _MARGIN, font)
    left, top = image.width + 2 * _MARGIN, _title_height(font) + (image.height - bar_h) // 2
    canvas.paste(bar, (left, top))
    for fraction, label in zip((0.0, 0.5, 1.0), labels, strict=True):
        y = top + round(fraction * (bar_h - 1))
        draw.line([(left + 16, y), (left + 20, y)], fill="black")
        draw.text((left + 16 + _MARGIN, y), label, fill="black", font=font, anchor="lm")
    return _save(canvas, path)


def write_segmentation(
    classes_map: np.ndarray[Any, Any],
    class_names: Sequence[str],
    colors: dict[str, str],
    path: str | Path,
) -> Path:
    """The class map at thumbnail size, coloured by class (white: not classified), with legend."""
    palette = np.array([to_rgb(colors[n]) for n in class_names] + [(1.0, 1.0, 1.0)])
    palette = np.round(palette * 255).astype(np.uint8)
    image = Image.fromarray(palette[np.where(classes_map >= 0, classes_map, len(class_names))])
    font = _font()
    swatch = FONT_PX
    legend_w = swatch + _MARGIN + max(int(_draw_width(font, n)) for n in class_names)
    canvas, draw = _canvas(image, "segmentation (argmax per cell)", legend_w + 3 * _MARGIN, font)
    left, top = image.width + 2 * _MARGIN, _title_height(font)
    for row, name in enumerate(class_names):
        y = top + row * (swatch + _MARGIN // 2)
        draw.rectangle((left, y, left + swatch - 1, y + swatch - 1), fill=colors[name])
        draw.text((left + swatch + _MARGIN, y + swatch // 2), name, fill="black", font=font,
                  anchor="lm")  # fmt: skip
    return _save(canvas, path)


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_PX)


def _draw_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)


def _title_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return FONT_PX + 2 * _MARGIN


def _canvas(
    image: Image.Image,
    title: str,
    right_px: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A white canvas with ``image`` under a centred title and ``right_px`` free at its right."""
    top = _title_height(font)
    canvas = Image.new("RGB", (image.width + right_px, image.height + top), "white")
    canvas.paste(image, (0, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((image.width // 2, top // 2), title, fill="black", font=font, anchor="mm")
    return canvas, draw


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", compress_level=1)
    return path
