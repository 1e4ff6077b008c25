"""Open a manifest's image, whether a file or a tile inside an HDF5/zarr store.

``wsi tile --format hdf5|zarr`` writes paths like ``slide/tiles.h5#17``: tile 17 of the
``tiles`` array (``(N, H, W, 3)`` uint8) in that store. Stores stay open per process (a small,
bounded cache), so reading many tiles does not reopen the file each time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

STORE_SUFFIXES = (".h5", ".hdf5", ".zarr")
#: File suffixes read as images (by PIL).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def split_store_path(path: str) -> tuple[Path, int] | None:
    """``(store, index)`` for ``store.h5#index`` or ``store.zarr#index``; None for a file."""
    head, sep, tail = str(path).rpartition("#")
    if not sep or not tail.isdigit() or not head.lower().endswith(STORE_SUFFIXES):
        return None
    return Path(head), int(tail)


def image_exists(path: str) -> bool:
    """True when the image file (or the store and its tile index) exists."""
    inside = split_store_path(path)
    if inside is None:
        return Path(path).is_file()
    store, index = inside
    return store.exists() and 0 <= index < int(_tiles(str(store)).shape[0])


def open_image(path: str) -> Image.Image:
    """The image as PIL (lazy for files: only the header is read until the pixels are used).

    Raises:
        OSError: an unreadable file (PIL's error), or a tile index outside its store.
    """
    inside = split_store_path(path)
    if inside is None:
        return Image.open(path)
    store, index = inside
    tiles = _tiles(str(store))
    if not 0 <= index < int(tiles.shape[0]):
        raise OSError(f"tile {index} is outside {store} ({tiles.shape[0]} tiles)")
    return Image.fromarray(np.asarray(tiles[index]))


@lru_cache(maxsize=16)
def _tiles(store: str) -> Any:
    if store.lower().endswith(".zarr"):
        import zarr

        return zarr.open_group(store, mode="r")["tiles"]
    import h5py

    return h5py.File(store, "r")["tiles"]
