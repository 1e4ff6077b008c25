"""Feature bags: one HDF5 file per slide, the seam between ``oncoscope features`` and MIL.

``<bags>/<slide stem>.h5`` holds

- ``features``: float32 ``(n, d)``, one row per tile;
- ``coords``: int64 ``(n, 2)``, level-0 ``(x, y)`` of each tile's top-left corner (rounded to
  the pixel);

and the attributes of :data:`BAG_ATTRS`, which every bag carries: ``slide`` (the slide's path
as given), ``tile_px`` (tile side at the read resolution, px), ``tile_px_level0`` (tile side in
level-0 pixels, rounded), ``stride_px`` (step between tiles at the read resolution, px), ``mpp``
and ``magnification`` (the read resolution), ``encoder`` (the encoder's id), ``encoder_spec``
(JSON: ``name``, ``kwargs``, ``image_size``, ``mean``, ``std``, ``feature_dim``, ...) and
``oncoscope_version``. ``oncoscope features`` adds ``slide_name``, ``slide_bytes`` (the slide's
identity, as ``oncoscope slide`` records it) and, for re-runs, ``settings`` (JSON: what
determines the bag, compared by :func:`oncoscope.inference.status.settings_differences`) and
``summary`` (JSON: tiles, seconds, precision, fp32 agreement). A bag is written under a
temporary name and renamed when complete, so a bag that exists is whole.

:func:`write_bag` writes a bag; :func:`read_bag_info` reads its shape and attributes,
:func:`read_bag` its arrays too; :func:`find_bags` lists a folder's bags by slide stem.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oncoscope import __version__
from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.io.atomic import atomic_path

#: File suffix of a bag.
BAG_SUFFIX = ".h5"
#: Attributes every bag carries (see the module docstring).
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
#: Rows copied into the HDF5 file at a time (and its chunk length).
WRITE_ROWS = 4096
#: Attributes stored as JSON strings (and read back as the values they encode).
JSON_ATTRS = ("encoder_spec", "settings", "summary")


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds, read without its features.

    Attributes:
        path: the bag file.
        n_tiles: rows of ``features``.
        feature_dim: columns of ``features``.
        encoder: the id of the encoder the features were made with.
        slide: the slide's path as the bag records it.
        attrs: every attribute as plain Python values (those of :data:`JSON_ATTRS` decoded).
    """

    path: Path
    n_tiles: int
    feature_dim: int
    encoder: str
    slide: str
    attrs: dict[str, Any]


def bag_path(out: str | Path, slide: str | Path) -> Path:
    """``out/<slide stem>.h5``."""
    return Path(out) / f"{Path(slide).stem}{BAG_SUFFIX}"


def bag_attributes(
    *,
    slide: str | Path,
    tile_px: int,
    tile_px_level0: int,
    stride_px: int,
    mpp: float,
    magnification: float,
    encoder: str,
    encoder_spec: Mapping[str, Any] | str,
) -> dict[str, Any]:
    """The attributes of :data:`BAG_ATTRS` as :func:`write_bag` takes them (this version's
    ``oncoscope_version`` added).

    Args:
        slide: the slide the tiles come from.
        tile_px, tile_px_level0, stride_px: tile side at the read resolution and at level 0,
            and the step between tiles at the read resolution (px).
        mpp, magnification: the read resolution.
        encoder: the encoder's id; ``encoder_spec`` its spec (a mapping or JSON text).
    """
    return {
        "slide": str(slide),
        "tile_px": int(tile_px),
        "tile_px_level0": int(tile_px_level0),
        "stride_px": int(stride_px),
        "mpp": float(mpp),
        "magnification": float(magnification),
        "encoder": str(encoder),
        "encoder_spec": encoder_spec if isinstance(encoder_spec, str) else dict(encoder_spec),
        "oncoscope_version": __version__,
    }


def write_bag(
    path: str | Path,
    features: np.ndarray[Any, Any],
    coords: np.ndarray[Any, Any],
    attrs: Mapping[str, Any],
) -> Path:
    """Write a bag atomically (temporary name, then rename), copying ``features`` in chunks
    of :data:`WRITE_ROWS` rows (so a memory-mapped array is never read whole).

    Args:
        path: the ``.h5`` file to write.
        features: ``(n, d)``, stored as float32.
        coords: ``(n, 2)`` level-0 ``(x, y)``, stored as int64.
        attrs: the attributes, at least those of :data:`BAG_ATTRS` (:func:`bag_attributes`);
            dicts and lists are stored as JSON strings, None as an empty string.

    Raises:
        OncoscopeError: ``features`` not ``(n, d)`` or ``coords`` not ``(n, 2)`` for the same
            ``n``; an attribute of :data:`BAG_ATTRS` missing. Nothing is written.
        OSError: the file cannot be written.
    """
    import h5py

    path = Path(path)
    n = len(coords)
    if features.ndim != 2 or len(features) != n or coords.shape != (n, 2):
        raise OncoscopeError(
            f"a bag needs features (n, d) and coords (n, 2), got {features.shape} and "
            f"{coords.shape}",
            path,
        )
    missing = [k for k in BAG_ATTRS if k not in attrs]
    if missing:
        raise OncoscopeError(f"a bag needs the attributes {', '.join(missing)}", path)
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
            store.attrs[key] = _stored(value)
    return path


def read_bag_info(path: str | Path, *, required: Sequence[str] = BAG_ATTRS) -> BagInfo:
    """The shape and attributes of a bag, without reading its features.

    Args:
        required: the attributes the bag must carry; ``()`` reads any HDF5 file with
            ``features`` and ``coords`` (``encoder`` and ``slide`` then ``""`` when absent).

    Raises:
        CorruptFileError: not an HDF5 file h5py can read.
        OncoscopeError: ``features``, ``coords`` or a ``required`` attribute missing, or shapes
            that do not match.
    """
    path = Path(path)
    with _opened(path) as store:
        return _info(path, store, required)


def read_bag_attrs(path: str | Path) -> dict[str, Any]:
    """A bag's attributes (JSON ones decoded), without reading its arrays; any HDF5 file with
    ``features`` and ``coords`` is read, whatever attributes it carries.

    Raises:
        CorruptFileError, OncoscopeError: see :func:`read_bag_info`.
    """
    return read_bag_info(path, required=()).attrs


def read_bag(
    path: str | Path, *, required: Sequence[str] = BAG_ATTRS
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]], BagInfo]:
    """``(features (n, d) float32, coords (n, 2) int64 level-0 x, y, info)`` of a bag.

    Raises:
        CorruptFileError, OncoscopeError: see :func:`read_bag_info`.
    """
    path = Path(path)
    with _opened(path) as store:
        info = _info(path, store, required)
        features = np.asarray(store["features"][()], dtype=np.float32)
        coords = np.asarray(store["coords"][()], dtype=np.int64)
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


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The HDF5 file at ``path``, open for reading; an unreadable one as CorruptFileError."""
    import h5py

    try:
        store = h5py.File(path, "r")
    except OSError as error:
        raise CorruptFileError(f"cannot read bag ({error})", path) from None
    with store:
        yield store


def _info(path: Path, store: Any, required: Sequence[str]) -> BagInfo:
    missing = [k for k in ("features", "coords") if k not in store]
    missing += [k for k in required if k not in store.attrs]
    if missing:
        raise OncoscopeError(f"not a feature bag: missing {', '.join(missing)}", path)
    features, coords = store["features"], store["coords"]
    if features.ndim != 2 or coords.shape != (features.shape[0], 2):
        raise OncoscopeError(
            f"features {features.shape} and coords {coords.shape} do not match; a bag needs "
            "features (n, d) and coords (n, 2)",
            path,
        )
    attrs = {key: _python(value) for key, value in store.attrs.items()}
    for key in JSON_ATTRS:
        if isinstance(attrs.get(key), str) and attrs[key]:
            with contextlib.suppress(ValueError):  # kept as the string it is
                attrs[key] = json.loads(attrs[key])
    n, d = features.shape
    encoder, slide = str(attrs.get("encoder", "")), str(attrs.get("slide", ""))
    return BagInfo(path, int(n), int(d), encoder, slide, attrs)


def _stored(value: Any) -> Any:
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
