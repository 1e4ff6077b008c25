"""The bag format: what write_bag writes is what read_bag reads, and bad bags are refused."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.features.bags import (
    BAG_ATTRS,
    bag_attributes,
    find_bags,
    read_bag,
    read_bag_info,
    write_bag,
)

SPEC = {"name": "toy", "feature_dim": 3}


def _bag(path: Path, n: int = 5, d: int = 3, encoder: str = "toy") -> Path:
    rng = np.random.default_rng(0)
    attrs = bag_attributes(
        slide="/data/slide.svs",
        tile_px=224,
        tile_px_level0=448,
        stride_px=224,
        mpp=0.5,
        magnification=20.0,
        encoder=encoder,
        encoder_spec=SPEC,
    )
    return write_bag(path, rng.normal(size=(n, d)), np.arange(2 * n).reshape(n, 2) * 224, attrs)


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
    attrs = bag_attributes(
        slide="s", tile_px=1, tile_px_level0=1, stride_px=1, mpp=1.0, magnification=10.0,
        encoder="e", encoder_spec={},
    )  # fmt: skip
    with pytest.raises(OncoscopeError, match="coords"):
        write_bag(tmp_path / "x.h5", np.zeros((4, 3)), np.zeros((5, 2)), attrs)
    assert not list(tmp_path.iterdir())


def test_a_bag_written_before_the_single_writer_still_reads(tmp_path: Path) -> None:
    """A bag as the earlier MIL writer made it (contiguous arrays, the spec as JSON text)."""
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    coords = np.arange(8, dtype=np.int64).reshape(4, 2)
    with h5py.File(tmp_path / "old.h5", "w") as handle:
        handle.create_dataset("features", data=features)
        handle.create_dataset("coords", data=coords)
        handle.attrs.update(
            {"slide": "s.svs", "tile_px": 224, "tile_px_level0": 448, "stride_px": 224,
             "mpp": 0.5, "magnification": 20.0, "encoder": "toy",
             "encoder_spec": json.dumps(SPEC), "oncoscope_version": "0.1.0"}
        )  # fmt: skip
    read_features, read_coords, info = read_bag(tmp_path / "old.h5")
    np.testing.assert_array_equal(read_features, features)
    np.testing.assert_array_equal(read_coords, coords)
    assert (info.encoder, info.slide, info.n_tiles, info.feature_dim) == ("toy", "s.svs", 4, 3)
    assert info.attrs["encoder_spec"] == SPEC and info.attrs["tile_px"] == 224


def test_write_bag_refuses_a_bag_without_its_attributes(tmp_path: Path) -> None:
    attrs = {"slide": "s.svs", "encoder": "toy"}
    with pytest.raises(OncoscopeError, match="tile_px"):
        write_bag(tmp_path / "x.h5", np.zeros((2, 3)), np.zeros((2, 2)), attrs)
    assert not list(tmp_path.iterdir())
