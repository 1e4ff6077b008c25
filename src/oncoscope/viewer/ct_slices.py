"""CT slices for the browser: windowed from the volume when it is at hand, masks as contours.

A patient's volume and label mask (LiTS labels: 1 liver, 2 tumour) are read once and kept, at
most :data:`OPEN_VOLUMES` patients at once. Slices are in oncoscope's canonical layout (anterior
up, the patient's right on the image's left; index 0 the most inferior), as ``ct prepare``
writes them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from oncoscope.ct.window import PRESETS, apply_window, parse_window, to_uint8
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.io.volumes import Volume, read_label_mask, read_volume

#: Patients whose volumes are kept in memory at once.
OPEN_VOLUMES = 2
#: Label of liver and of tumour in LiTS masks.
LIVER_LABEL, TUMOUR_LABEL = 1, 2
#: Contour colours of the masks shown (``#rrggbb``).
MASK_COLOURS = {"liver": "#2ecc71", "lesion": "#ff3b30"}


class VolumeCache:
    """Volumes and masks read on first use, the least recently used dropped beyond ``size``."""

    def __init__(self, size: int = OPEN_VOLUMES) -> None:
        self._size = size
        self._items: OrderedDict[Path, Volume] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, *, mask: bool = False) -> Volume:
        """The volume (HU) or label mask at ``path``.

        Raises:
            OncoscopeError: unreadable (see :func:`oncoscope.io.volumes.read_volume`).
        """
        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        volume = read_label_mask(path, max_label=2) if mask else read_volume(path)
        with self._lock:
            self._items[path] = volume
            while len(self._items) > self._size * 2:  # a volume and its mask per patient
                self._items.popitem(last=False)
        return volume


def slice_index_in(volume: Volume, index: int) -> int:
    """``index`` checked against the volume's slice count.

    Raises:
        InvalidOptionError: outside ``0..D-1``.
    """
    if not 0 <= index < volume.shape[0]:
        raise InvalidOptionError(f"slice {index} is not in 0..{volume.shape[0] - 1}")
    return index


def windowed_slice(volume: Volume, index: int, window: str) -> npt.NDArray[np.uint8]:
    """Slice ``index`` of a HU volume through a window (preset name or ``W/L``), ``(H, W) uint8``.

    Raises:
        InvalidOptionError: a bad window or slice index.
    """
    hu = volume.array[slice_index_in(volume, index)]
    return to_uint8(apply_window(hu, parse_window(window)))


def mask_slice(mask: Volume, index: int, kind: str) -> npt.NDArray[np.bool_]:
    """``liver`` (liver or tumour) or ``lesion`` (tumour) pixels of slice ``index``, ``(H, W)``.

    Raises:
        InvalidOptionError: an unknown kind or a bad slice index.
    """
    labels = mask.array[slice_index_in(mask, index)]
    if kind == "liver":
        return np.asarray(labels >= LIVER_LABEL)
    if kind == "lesion":
        return np.asarray(labels == TUMOUR_LABEL)
    raise InvalidOptionError(f"mask kind must be one of {', '.join(MASK_COLOURS)}, got {kind!r}")


def mask_from_png(path: Path) -> npt.NDArray[np.bool_]:
    """A mask PNG (any non-zero pixel is inside) as ``(H, W)`` bool.

    Raises:
        OncoscopeError: unreadable image.
    """
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except OSError as error:
        raise OncoscopeError(f"cannot read mask image: {error}", path) from None
    return np.asarray(pixels > 0)


def window_presets() -> list[dict[str, Any]]:
    """The window presets: name, width and level in HU."""
    return [
        {"name": name, "width_hu": w.width_hu, "level_hu": w.level_hu}
        for name, w in PRESETS.items()
    ]
