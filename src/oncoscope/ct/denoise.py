"""Noise injection and median-filter denoising of CT slices (the seed-001 chain).

Noise is injected to test a pipeline's robustness and to show what the median filter removes;
both work in Hounsfield units and leave their input unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from oncoscope.errors import InvalidOptionError

NoiseKind = Literal["none", "gaussian", "salt-pepper"]
NOISE_KINDS: tuple[str, ...] = ("none", "gaussian", "salt-pepper")


def add_noise(
    hu: npt.NDArray[np.floating],
    kind: NoiseKind,
    amount: float,
    *,
    low_hu: float = -1000.0,
    high_hu: float = 1000.0,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """Return a noisy copy of an HU image.

    Args:
        hu: image of any shape, in HU.
        kind: ``"gaussian"`` (``amount`` = standard deviation in HU), ``"salt-pepper"``
            (``amount`` = fraction of pixels set to ``low_hu`` or ``high_hu``, half each), or
            ``"none"``.
        amount: see ``kind``; must be >= 0 (and <= 1 for salt-pepper).
        low_hu: value of "pepper" pixels.
        high_hu: value of "salt" pixels.
        seed: seed of the noise; the same seed gives the same noise.

    Raises:
        InvalidOptionError: unknown kind or amount out of range.
    """
    values = np.array(hu, dtype=np.float32, copy=True)
    rng = np.random.default_rng(seed)
    if kind == "none":
        return values
    if amount < 0 or (kind == "salt-pepper" and amount > 1):
        raise InvalidOptionError(f"noise amount {amount} out of range for {kind} noise")
    if kind == "gaussian":
        return values + rng.normal(0.0, amount, size=values.shape).astype(np.float32)
    if kind == "salt-pepper":
        draw = rng.random(values.shape)
        values[draw < amount / 2] = low_hu
        values[(draw >= amount / 2) & (draw < amount)] = high_hu
        return values
    raise InvalidOptionError(f"unknown noise kind '{kind}'; use one of {', '.join(NOISE_KINDS)}")


def check_median_size(size_px: int, name: str = "median filter size") -> None:
    """Check a median window size in pixels: odd and at least 1.

    Raises:
        InvalidOptionError: ``<name> must be an odd number >= 1, got <size_px>``.
    """
    if size_px < 1 or size_px % 2 == 0:
        raise InvalidOptionError(f"{name} must be an odd number >= 1, got {size_px}")


def median_denoise(hu: npt.NDArray[np.floating], size_px: int = 3) -> npt.NDArray[np.float32]:
    """Median-filter an image with a ``size_px`` x ``size_px`` window (edges reflected).

    Args:
        hu: ``(H, W)`` image (or ``(D, H, W)``: each slice filtered in-plane).
        size_px: odd window size in pixels, >= 1 (1 leaves the image as is).

    Raises:
        InvalidOptionError: an even or non-positive size.
    """
    check_median_size(size_px)
    values = np.asarray(hu, dtype=np.float32)
    footprint = (1,) * (values.ndim - 2) + (size_px, size_px)
    return np.asarray(ndimage.median_filter(values, size=footprint, mode="reflect"), np.float32)
