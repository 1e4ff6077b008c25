"""Pictures of a map: the heat map over the image, optionally with ground-truth contours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
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


def save_png(picture: npt.NDArray[np.uint8], path: Path) -> Path:
    """Write an RGB or grey uint8 picture as PNG (atomically); parent folders are created."""
    with atomic_path(path) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG")
    return path
