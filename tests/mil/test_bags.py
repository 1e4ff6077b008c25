"""The bag format: what write_bag writes is what read_bag reads, and bad bags are refused."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.mil.bags import BAG_ATTRS, find_bags, read_bag, read_bag_info, write_bag

SPEC = {"name": "toy", "feature_dim": 3}


def _bag(path: Path, n: int = 5, d: int = 3, encoder: str = "toy") -> Path:
    rng = np.random.default_rng(0)
    return write_bag(
        path,
        rng.normal(size=(n, d)),
        np.arange(2 * n).reshape(n, 2) * 224,
        slide="/data/slide.svs",
        tile_px=224,
        tile_px_level0=448,
        stride_px=224,
        mpp=0.5,
        magnification=20.0,
        encoder=encoder,
        encoder_spec=SPEC,
    )


def test_round_trip_keeps_arrays_dtypes_and_attributes(tmp_path: Path) -> None:
    path = _bag(tmp_path / "s1.h5")
    with h5py.File(path, "r") as handle:  # read with h5py itself, not our reader
        assert handle["features"].dtype == np.float32 and handle["features"].shape == (5, 3)
        assert handle["coords"].dtype == np.int64 and handle["coords"].shape == (5, 2)
        assert set(BAG_ATTRS) <= set(handle.attrs)
        assert json.loads(handle.attrs["encoder_spec"]) == SPEC
    features, coords, info = read_bag(path)
    expected = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(coords[:, 0], np.arange(0, 10, 2) * 224)
    assert (info.n_tiles, info.feature_dim, info.encoder) == (5, 3, "toy")
    assert info.attrs["tile_px_level0"] == 448 and info.attrs["mpp"] == 0.5
    assert info.slide == "/data/slide.svs"


def test_find_bags_maps_slide_stems(tmp_path: Path) -> None:
    _bag(tmp_path / "b.h5")
    _bag(tmp_path / "a.h5")
    (tmp_path / "notes.txt").write_text("x")
    assert list(find_bags(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("attribute", OncoscopeError, "missing encoder"),
        ("coords", OncoscopeError, "do not match"),
        ("garbage", CorruptFileError, "cannot read bag"),
    ],
)
def test_bad_bags_are_refused_naming_the_file(
    tmp_path: Path, damage: str, error: type[Exception], message: str
) -> None:
    path = _bag(tmp_path / "bad.h5")
    if damage == "garbage":
        path.write_bytes(b"not hdf5")
    else:
        with h5py.File(path, "a") as handle:
            if damage == "attribute":
                del handle.attrs["encoder"]
            else:
                del handle["coords"]
                handle["coords"] = np.zeros((4, 2), dtype=np.int64)
    with pytest.raises(error, match=message) as caught:
        read_bag_info(path)
    assert str(caught.value).startswith(str(path))


def test_write_bag_refuses_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(OncoscopeError, match="coords"):
        write_bag(
            tmp_path / "x.h5", np.zeros((4, 3)), np.zeros((5, 2)), slide="s", tile_px=1,
            tile_px_level0=1, stride_px=1, mpp=1.0, magnification=10.0, encoder="e",
            encoder_spec={},
        )  # fmt: skip
    assert not list(tmp_path.iterdir())
