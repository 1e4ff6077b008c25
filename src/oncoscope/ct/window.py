"""Hounsfield-unit windowing: presets, clinical width/level, and multi-window stacks.

A window maps the HU range ``[low, high]`` linearly onto ``[0, 1]`` and clips outside it. Clinical
practice names a window by its width and level (centre): ``low = level - width / 2``,
``high = level + width / 2``. Three windows stacked as channels give an ImageNet backbone a
3-channel input that keeps more of the HU range than one window does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from oncoscope.errors import InvalidOptionError


@dataclass(frozen=True)
class HUWindow:
    """A Hounsfield-unit window ``[low_hu, high_hu]``.

    Attributes:
        name: preset name or the ``W/L`` text it was parsed from.
        low_hu: HU mapped to 0.
        high_hu: HU mapped to 1.
    """

    name: str
    low_hu: float
    high_hu: float

    @property
    def width_hu(self) -> float:
        """Window width W in HU."""
        return self.high_hu - self.low_hu

    @property
    def level_hu(self) -> float:
        """Window level (centre) L in HU."""
        return (self.high_hu + self.low_hu) / 2

    @classmethod
    def from_width_level(cls, width_hu: float, level_hu: float, name: str = "") -> HUWindow:
        """Build a window from clinical width W and level L, both in HU."""
        if width_hu <= 0:
            raise InvalidOptionError(f"window width must be positive, got {width_hu} HU")
        low, high = level_hu - width_hu / 2, level_hu + width_hu / 2
        return cls(name or f"{width_hu:g}/{level_hu:g}", low, high)


#: Named windows. ``liver`` is the [-100, 200] HU window of LiTS-based liver studies (W300/L50).
PRESETS: dict[str, HUWindow] = {
    "liver": HUWindow("liver", -100.0, 200.0),
    "liver-narrow": HUWindow.from_width_level(150, 60, "liver-narrow"),
    "abdomen": HUWindow.from_width_level(400, 40, "abdomen"),
    "soft-tissue": HUWindow.from_width_level(350, 50, "soft-tissue"),
    "bone": HUWindow.from_width_level(1800, 400, "bone"),
    "lung": HUWindow.from_width_level(1500, -600, "lung"),
}

#: The default 3-channel stack for ImageNet backbones: liver, abdomen, narrow liver window.
MULTI_WINDOW_DEFAULT = ("liver", "abdomen", "liver-narrow")


def parse_window(text: str) -> HUWindow:
    """Parse one window: a preset name (see :data:`PRESETS`) or clinical ``W/L`` in HU.

    Examples: ``"liver"``, ``"abdomen"``, ``"400/40"`` (width 400 HU, level 40 HU).

    Raises:
        InvalidOptionError: unknown preset or malformed ``W/L``.
    """
    key = text.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    if "/" in key:
        width_text, _, level_text = key.partition("/")
        try:
            width, level = float(width_text), float(level_text)
        except ValueError:
            raise InvalidOptionError(f"window '{text}' is not W/L in HU (e.g. 400/40)") from None
        return HUWindow.from_width_level(width, level, key)
    raise InvalidOptionError(
        f"unknown window '{text}'; use one of {', '.join(PRESETS)} or W/L in HU such as 400/40"
    )


def parse_windows(text: str) -> tuple[HUWindow, ...]:
    """Parse a comma-separated list of one or three windows (``multi`` = the default stack).

    Raises:
        InvalidOptionError: a bad window, or a count other than 1 or 3.
    """
    names = MULTI_WINDOW_DEFAULT if text.strip().lower() == "multi" else text.split(",")
    windows = tuple(parse_window(name) for name in names)
    if len(windows) not in (1, 3):
        raise InvalidOptionError(
            f"give one window or three (one per RGB channel), got {len(windows)}: '{text}'"
        )
    return windows


def apply_window(hu: npt.ArrayLike, window: HUWindow) -> npt.NDArray[np.float32]:
    """Map HU linearly so that ``window.low_hu -> 0`` and ``window.high_hu -> 1``, clipped.

    Args:
        hu: array of any shape, in HU.
        window: the window.

    Returns:
        float32 array of the same shape with values in ``[0, 1]``.
    """
    values = np.asarray(hu, dtype=np.float32)
    scaled = (values - np.float32(window.low_hu)) / np.float32(window.width_hu)
    clipped: npt.NDArray[np.float32] = np.clip(scaled, 0.0, 1.0)
    return clipped


def window_stack(hu: npt.ArrayLike, windows: tuple[HUWindow, ...]) -> npt.NDArray[np.float32]:
    """Apply each window and stack them as the last axis: ``(..., len(windows))`` in ``[0, 1]``."""
    return np.stack([apply_window(hu, window) for window in windows], axis=-1)


def to_uint8(unit: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Quantise ``[0, 1]`` values to 8 bits (0..255, rounded to nearest)."""
    quantised: npt.NDArray[np.uint8] = np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    return quantised


def from_uint8(pixels: npt.ArrayLike, window: HUWindow) -> npt.NDArray[np.float32]:
    """Approximate HU of an 8-bit image windowed with ``window`` (inverse of the quantisation)."""
    unit = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    return (np.float32(window.low_hu) + unit * np.float32(window.width_hu)).astype(np.float32)
