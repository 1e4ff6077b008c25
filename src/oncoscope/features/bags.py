"""Feature bags: one HDF5 file per slide, the contract between ``features`` and ``mil``.

``<out>/<slide stem>.h5`` holds

- ``features``: float32 ``(n, d)``, one row per tile;
- ``coords``: int64 ``(n, 2)``, level-0 ``(x, y)`` of each tile's top-left corner (rounded to
  the pixel);

and the attributes ``slide`` (the path as given), ``slide_name``, ``slide_bytes`` (the slide's
identity, as ``oncoscope slide`` records it), ``tile_px`` (tile side at the read resolution),
``tile_px_level0`` (tile side in level-0 pixels, rounded), ``stride_px`` (step at the read
resolution), ``mpp`` and ``magnification`` (the read resolution), ``encoder`` (the encoder's
id), ``encoder_spec`` (JSON: ``name``, ``kwargs``, ``image_size``, ``mean``, ``std``,
``feature_dim``, ...), ``oncoscope_version``; and, for re-runs, ``settings`` (JSON: what
determines the bag, compared by :func:`oncoscope.inference.status.settings_differences`) and
``summary`` (JSON: tiles, seconds, precision, fp32 agreement). A bag is written under a
temporary name and renamed when complete, so a bag that exists is whole.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from oncoscope.errors import OncoscopeError
from oncoscope.io.atomic import atomic_path

BAG_SUFFIX = ".h5"
#: Rows copied into the HDF5 file at a time (and its chunk length).
WRITE_ROWS = 4096
#: Attributes stored as JSON strings.
JSON_ATTRS = ("encoder_spec", "settings", "summary")


def bag_path(out: str | Path, slide: str | Path) -> Path:
    """``out/<slide stem>.h5``."""
    return Path(out) / f"{Path(slide).stem}{BAG_SUFFIX}"


def write_bag(
    path: str | Path,
    features: np.ndarray[Any, Any],
    coords: np.ndarray[Any, Any],
    attrs: Mapping[str, Any],
) -> Path:
    """Write a bag atomically (temporary name, then rename), copying ``features`` in chunks
    of :data:`WRITE_ROWS` rows (so a memory-mapped array is never read whole).

    Args:
        features: ``(n, d)``, stored as float32.
        coords: ``(n, 2)`` level-0 ``(x, y)``, stored as int64.
        attrs: the attributes; dicts and lists (``encoder_spec``, ``settings``, ``summary``)
            are stored as JSON strings, None as an empty string.

    Raises:
        ValueError: ``features`` and ``coords`` of other shapes.
        OSError: the file cannot be written.
    """
    import h5py

    path = Path(path)
    n = len(coords)
    if features.ndim != 2 or len(features) != n or coords.shape != (n, 2):
        raise ValueError(f"features {features.shape} and coords {coords.shape} do not match")
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as store:
        chunk = (max(1, min(WRITE_ROWS, n)), features.shape[1])
        data = store.create_dataset(
            "features", shape=features.shape, dtype=np.float32, chunks=chunk if n else None
        )
        for start in range(0, n, WRITE_ROWS):
            data[start : start + WRITE_ROWS] = np.asarray(
                features[start : start + WRITE_ROWS], dtype=np.float32
            )
        store.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
        for key, value in attrs.items():
            store.attrs[key] = _attr(value)
    return path


def read_bag_attrs(path: str | Path) -> dict[str, Any]:
    """A bag's attributes (JSON ones decoded), without reading its arrays.

    Raises:
        OncoscopeError: the file is not an HDF5 file with ``features`` and ``coords``.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as store:
            if "features" not in store or "coords" not in store:
                raise OncoscopeError("not a feature bag (no features/coords datasets)", path)
            attrs = {key: _python(value) for key, value in store.attrs.items()}
    except OSError as error:
        raise OncoscopeError(f"not a readable HDF5 file ({error})", path) from None
    for key in JSON_ATTRS:
        if isinstance(attrs.get(key), str) and attrs[key]:
            with contextlib.suppress(ValueError):  # kept as the string it is
                attrs[key] = json.loads(attrs[key])
    return attrs


def read_bag(
    path: str | Path,
) -> tuple[
    np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]], dict[str, Any]
]:
    """``(features, coords, attrs)`` of a bag (see :func:`read_bag_attrs`).

    Raises:
        OncoscopeError: not a feature bag.
    """
    import h5py

    attrs = read_bag_attrs(path)
    with h5py.File(path, "r") as store:
        features = np.asarray(store["features"][:], dtype=np.float32)
        coords = np.asarray(store["coords"][:], dtype=np.int64)
    return features, coords, attrs


def _attr(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
