"""Feature bags: one HDF5 file per slide, the seam between ``oncoscope features`` and MIL.

A bag ``<bags>/<slide stem>.h5`` holds

- ``features``: ``(n, d) float32``, one row per tile;
- ``coords``: ``(n, 2) int64``, level-0 ``(x, y)`` of each tile's top-left corner;

and the attributes of :data:`BAG_ATTRS`: ``slide`` (the slide's path), ``tile_px`` (tile side
at the read resolution, px), ``tile_px_level0`` (tile side at level 0, px), ``stride_px``
(step between tiles at the read resolution, px), ``mpp`` and ``magnification`` (the read
resolution), ``encoder`` (the encoder's id), ``encoder_spec`` (JSON text) and
``oncoscope_version``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from oncoscope import __version__
from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.io.atomic import atomic_path

#: File suffix of a bag.
BAG_SUFFIX = ".h5"
#: Attributes every bag carries.
BAG_ATTRS = (
    "slide",
    "tile_px",
    "tile_px_level0",
    "stride_px",
    "mpp",
    "magnification",
    "encoder",
    "encoder_spec",
    "oncoscope_version",
)


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds, read without its features.

    Attributes:
        path: the bag file.
        n_tiles: rows of ``features``.
        feature_dim: columns of ``features``.
        attrs: the attributes of :data:`BAG_ATTRS` as plain Python values.
    """

    path: Path
    n_tiles: int
    feature_dim: int
    attrs: dict[str, Any]

    @property
    def encoder(self) -> str:
        """The encoder id the features were made with."""
        return str(self.attrs["encoder"])

    @property
    def slide(self) -> str:
        """The slide's path as the bag records it."""
        return str(self.attrs["slide"])


def write_bag(
    path: str | Path,
    features: np.ndarray[Any, Any],
    coords: np.ndarray[Any, Any],
    *,
    slide: str | Path,
    tile_px: int,
    tile_px_level0: int,
    stride_px: int,
    mpp: float,
    magnification: float,
    encoder: str,
    encoder_spec: dict[str, Any] | str,
) -> Path:
    """Write one bag (atomically); see the module docstring for the layout.

    Args:
        path: the ``.h5`` file to write.
        features: ``(n, d)`` tile features (stored as float32).
        coords: ``(n, 2)`` level-0 ``(x, y)`` of each tile's top-left corner (stored as int64).
        slide: the slide the tiles come from.
        tile_px, tile_px_level0, stride_px: tile side at the read resolution and at level 0,
            and the step between tiles at the read resolution (px).
        mpp, magnification: the read resolution.
        encoder: the encoder's id; ``encoder_spec`` its spec (a mapping or JSON text).

    Raises:
        OncoscopeError: ``features`` not 2-D, or ``coords`` not ``(n, 2)`` for the same ``n``.
    """
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int64)
    if features.ndim != 2 or coords.shape != (len(features), 2):
        raise OncoscopeError(
            f"a bag needs features (n, d) and coords (n, 2), got {features.shape} and "
            f"{coords.shape}",
            path,
        )
    spec = encoder_spec if isinstance(encoder_spec, str) else json.dumps(encoder_spec)
    attrs = {
        "slide": str(slide),
        "tile_px": int(tile_px),
        "tile_px_level0": int(tile_px_level0),
        "stride_px": int(stride_px),
        "mpp": float(mpp),
        "magnification": float(magnification),
        "encoder": str(encoder),
        "encoder_spec": spec,
        "oncoscope_version": __version__,
    }
    path = Path(path)
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
        handle.create_dataset("features", data=features)
        handle.create_dataset("coords", data=coords)
        handle.attrs.update(attrs)
    return path


def read_bag_info(path: str | Path) -> BagInfo:
    """The shape and attributes of a bag, without reading its features.

    Raises:
        CorruptFileError: not an HDF5 file h5py can read.
        OncoscopeError: ``features``, ``coords`` or an attribute of :data:`BAG_ATTRS` missing,
            or shapes that do not match.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            return _info(path, handle)
    except OSError as error:
        raise CorruptFileError(f"cannot read bag ({error})", path) from None


def read_bag(
    path: str | Path,
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]], BagInfo]:
    """``(features (n, d) float32, coords (n, 2) int64 level-0 x, y, info)`` of a bag.

    Raises:
        CorruptFileError, OncoscopeError: see :func:`read_bag_info`.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            info = _info(path, handle)
            features = np.asarray(handle["features"][()], dtype=np.float32)
            coords = np.asarray(handle["coords"][()], dtype=np.int64)
    except OSError as error:
        raise CorruptFileError(f"cannot read bag ({error})", path) from None
    return features, coords, info


def find_bags(folder: str | Path) -> dict[str, Path]:
    """``{slide stem: bag path}`` of the bags in ``folder`` (not recursive).

    Raises:
        OncoscopeError: ``folder`` is not a folder, or holds no bag.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OncoscopeError("bags folder does not exist", folder)
    bags = {p.stem: p for p in sorted(folder.glob(f"*{BAG_SUFFIX}")) if p.is_file()}
    if not bags:
        raise OncoscopeError(
            f"no bags (*{BAG_SUFFIX}) in this folder; make them with oncoscope features", folder
        )
    return bags


def _info(path: Path, handle: h5py.File) -> BagInfo:
    missing = [k for k in ("features", "coords") if k not in handle]
    missing += [k for k in BAG_ATTRS if k not in handle.attrs]
    if missing:
        raise OncoscopeError(f"not a feature bag: missing {', '.join(missing)}", path)
    features, coords = handle["features"], handle["coords"]
    if features.ndim != 2 or coords.shape != (features.shape[0], 2):
        raise OncoscopeError(
            f"features {features.shape} and coords {coords.shape} do not match; a bag needs "
            "features (n, d) and coords (n, 2)",
            path,
        )
    attrs = {k: _plain(handle.attrs[k]) for k in BAG_ATTRS}
    return BagInfo(path, int(features.shape[0]), int(features.shape[1]), attrs)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if hasattr(value, "item") else value
