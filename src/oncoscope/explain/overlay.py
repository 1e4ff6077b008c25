"""Pictures of a map: the heat map over the image, optionally with ground-truth contours, and
the figure that makes it readable (colour bar with its label, caption with the truth)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from pytorch_grad_cam.utils.image import show_cam_on_image
from skimage.measure import find_contours

from oncoscope.io.atomic import atomic_path


def overlay(
    pixels: npt.NDArray[np.uint8],
    heat: npt.NDArray[np.floating[Any]],
    *,
    contours: npt.NDArray[np.bool_] | None = None,
    boxes: list[tuple[int, int, int, int]] | None = None,
    image_weight: float = 0.5,
) -> npt.NDArray[np.uint8]:
    """The map as a jet heat map blended over the image (pytorch-grad-cam's ``show_cam_on_image``).

    Args:
        pixels: ``(H, W)`` or ``(H, W, 3)`` uint8 image.
        heat: ``(H, W)`` map in ``0..1``.
        contours: ``(H, W)`` mask whose outline is drawn in white (e.g. the true lesions).
        boxes: ``(row0, col0, row1, col1)`` boxes (end exclusive) drawn in green.
        image_weight: share of the image in the blend.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = np.asarray(pixels, np.float32) / 255.0
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    blended = show_cam_on_image(
        rgb, np.clip(heat, 0, 1).astype(np.float32), use_rgb=True, image_weight=image_weight
    )
    if contours is None and not boxes:
        return np.asarray(blended, np.uint8)
    picture = Image.fromarray(np.asarray(blended, np.uint8))
    draw = ImageDraw.Draw(picture)
    if contours is not None and contours.any():
        padded = np.pad(contours.astype(np.float32), 1)
        for line in find_contours(padded, 0.5):
            draw.line([(float(c) - 1, float(r) - 1) for r, c in line], fill=(255, 255, 255))
    for row0, col0, row1, col1 in boxes or []:
        draw.rectangle((col0, row0, col1 - 1, row1 - 1), outline=(0, 255, 0))
    return np.asarray(picture, np.uint8)


#: Names of the CAM methods as printed on figures.
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM",
    "cam": "CAM",
    "attention": "Attention",
    "smoothgrad": "SmoothGrad",
    "guided": "SmoothGrad x CAM",
}
#: Smallest long side of a figure's image part, in pixels (small tiles are enlarged).
FIGURE_MIN_SIDE_PX = 256
_BAR_WIDTH_PX = 14
_FONT_PX = 12


def jet_rgb(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """The colours :func:`overlay` gives map values ``0..1`` (OpenCV's jet, as RGB).

    Args:
        values: any shape, in ``0..1``.

    Returns:
        ``values.shape + (3,)`` uint8 RGB.

    Example:
        >>> jet_rgb(np.array([0.0, 1.0])).tolist()
        [[0, 0, 128], [128, 0, 0]]
    """
    import cv2

    levels = np.uint8(np.round(255 * np.clip(values, 0, 1)))
    bgr = cv2.applyColorMap(np.atleast_2d(levels), cv2.COLORMAP_JET)
    return np.asarray(bgr[..., ::-1].reshape(*np.shape(values), 3), np.uint8)


def figure(
    picture: npt.NDArray[np.uint8],
    *,
    bar_label: str,
    caption: Sequence[str] = (),
    min_side_px: int = FIGURE_MIN_SIDE_PX,
) -> npt.NDArray[np.uint8]:
    """An overlay made readable: the picture (enlarged by a whole factor, nearest neighbour,
    when its long side is under ``min_side_px``), a colour bar of the map's scale from 0
    (bottom) to 1 (top) with ``bar_label`` beside it, and ``caption`` lines below.

    Args:
        picture: ``(H, W, 3)`` uint8, from :func:`overlay`.
        bar_label: what the colours measure, e.g. ``"Grad-CAM for tumour"``.
        caption: text lines under the picture (true label, prediction, outline legend).
        min_side_px: smallest long side of the picture part, in pixels.

    Returns:
        ``(H', W', 3)`` uint8 RGB on white; the picture fills its top-left
        ``(H * k, W * k)`` corner, ``k`` the enlargement factor.
    """
    rows, cols = picture.shape[:2]
    factor = max(1, -(-min_side_px // max(rows, cols)))
    image = Image.fromarray(picture).resize((cols * factor, rows * factor), Image.NEAREST)
    font = ImageFont.load_default(size=_FONT_PX)
    height, width = image.height, image.width
    line_px = _FONT_PX + 4
    ticks_px = 30
    label = Image.new("RGB", (height, line_px), "white")
    ImageDraw.Draw(label).text((2, 1), bar_label, fill="black", font=font)
    label = label.rotate(90, expand=True)
    bar_left = width + 8
    canvas_width = bar_left + _BAR_WIDTH_PX + ticks_px + label.width
    canvas = Image.new("RGB", (canvas_width, height + 6 + line_px * len(caption)), "white")
    canvas.paste(image, (0, 0))
    scale = jet_rgb(np.linspace(1.0, 0.0, height))  # top = 1
    bar = np.repeat(scale[:, None, :], _BAR_WIDTH_PX, axis=1)
    canvas.paste(Image.fromarray(bar), (bar_left, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((bar_left, 0, bar_left + _BAR_WIDTH_PX - 1, height - 1), outline="black")
    for value in (1.0, 0.5, 0.0):
        y = round((1 - value) * (height - 1))
        draw.line((bar_left + _BAR_WIDTH_PX, y, bar_left + _BAR_WIDTH_PX + 3, y), fill="black")
        top = min(max(y - _FONT_PX // 2, 0), height - _FONT_PX - 2)
        draw.text((bar_left + _BAR_WIDTH_PX + 5, top), f"{value:g}", fill="black", font=font)
    canvas.paste(label, (bar_left + _BAR_WIDTH_PX + ticks_px, 0))
    for number, line in enumerate(caption):
        draw.text((2, height + 4 + number * line_px), line, fill="black", font=font)
    return np.asarray(canvas, np.uint8)


def save_png(
    picture: npt.NDArray[np.uint8], path: Path, text: Mapping[str, str] | None = None
) -> Path:
    """Write an RGB or grey uint8 picture as PNG (atomically); parent folders are created.

    Args:
        picture: ``(H, W)`` or ``(H, W, 3)`` uint8.
        path: the PNG file.
        text: PNG text chunks (e.g. ``{"truth": "tumour"}``), readable as ``Image.open(path).text``.
    """
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG", pnginfo=info)
    return path
