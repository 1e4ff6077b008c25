from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import oncoscope.train.data as training_data
from oncoscope.errors import CorruptFileError, ManifestError
from oncoscope.train.data import EpochSampler, load_training_data
from tests.train.conftest import write_patches


def _edit(manifest: Path, change) -> Path:
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    rows = change(rows)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_a_good_manifest_gives_classes_channels_and_size(patches):
    data = load_training_data(patches)
    assert data.classes == ["adenoma", "well differentiated"]
    assert (data.in_chans, data.image_size, data.group_column) == (3, 64, "slide")
    assert data.class_counts() == [16, 16]


def _missing_file(rows):
    rows[3]["path"] = "gone.png"
    return rows


def _unknown_label(rows):
    next(r for r in rows if r["split"] == "test")["label"] = "carcinoma"
    return rows


def _one_class(rows):
    return [r for r in rows if r["label"] == "adenoma"]


def _no_val(rows):
    return [r for r in rows if r["split"] != "val"]


def _slide_in_two_splits(rows):
    next(r for r in rows if r["split"] == "val")["slide"] = "train-1"
    return rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_missing_file, r"1 image file.*missing.*gone\.png"),
        (_unknown_label, r"\['carcinoma'\] appear in val/test but never in train"),
        (_one_class, "one class only"),
        (_no_val, "the val split is empty"),
        (_slide_in_two_splits, r"slide train-1 is in both train and val"),
    ],
)
def test_bad_manifests_stop_before_training(tmp_path, change, message):
    manifest = _edit(write_patches(tmp_path, {"train": 8, "val": 4, "test": 4}), change)
    with pytest.raises(ManifestError, match=message):
        load_training_data(manifest)


def test_images_of_different_sizes_need_image_size(tmp_path):
    manifest = write_patches(tmp_path, {"train": 8, "val": 4})
    write_patches(tmp_path / "big", {"train": 2}, size=96)
    _edit(
        manifest,
        lambda rows: [
            *rows,
            {"path": "big/train_000.png", "label": "adenoma", "split": "train", "slide": "x"},
        ],
    )
    with pytest.raises(ManifestError, match=r"differ in size.*--image-size"):
        load_training_data(manifest)
    assert load_training_data(manifest, image_size=32).image_size == 32


def test_greyscale_patches_have_one_channel(tmp_path):
    manifest = write_patches(tmp_path, {"train": 4, "val": 2}, mode="L")
    assert load_training_data(manifest).in_chans == 1


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(20, seed=3), EpochSampler(20, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    assert sorted(i for i, _ in a) == list(range(20)) and {e for _, e in a} == {4}
    b.set_epoch(5)
    assert list(a) != list(b)
    halves = [list(EpochSampler(20, 3, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(i for half in halves for i, _ in half) == list(range(20))


@pytest.mark.parametrize(("size", "world_size"), [(7, 2), (10, 3), (5, 4), (2, 3)])
def test_every_process_gets_as_many_items_and_together_they_cover_the_epoch(size, world_size):
    """DDP waits at every step for every process: with shares of unequal length the longer one
    would wait for ever. Each share is ceil(size / world_size) long and the shares cover every
    item."""
    shares = [list(EpochSampler(size, 1, rank=r, world_size=world_size)) for r in range(world_size)]
    length = -(-size // world_size)
    assert [len(share) for share in shares] == [length] * world_size
    assert [
        len(EpochSampler(size, 1, rank=r, world_size=world_size)) for r in range(world_size)
    ] == [length] * world_size
    assert {i for share in shares for i, _ in share} == set(range(size))


def test_balanced_sampling_draws_classes_evenly():
    weights = [1 / 18] * 18 + [1 / 2] * 2  # 18 of class 0, 2 of class 1
    sampler = EpochSampler(20, 0, weights)
    drawn = torch.tensor([i for e in range(50) for i, _ in (sampler.set_epoch(e), sampler)[1]])
    assert 0.4 < float((drawn >= 18).float().mean()) < 0.6


@pytest.mark.parametrize("tile_format", ["hdf5", "zarr"])
def test_tiles_stored_in_hdf5_or_zarr_train_like_png_files(generic_slide, tmp_path, tile_format):
    import numpy as np
    import pandas as pd

    from oncoscope.dataset.images import open_image
    from oncoscope.pathology.tile_dataset import TileOptions, tile_slides

    common = {"size_px": 64, "magnification": 10, "overlap": 0.0, "ratio": (1, 0, 0)}
    stored = tile_slides(
        [generic_slide.path], tmp_path / "h", TileOptions(**common, tile_format=tile_format)
    )
    files = tile_slides([generic_slide.path], tmp_path / "p", TileOptions(**common))
    assert stored.rows and len(stored.rows) == len(files.rows)
    for a, b in zip(stored.rows[:5], files.rows[:5], strict=True):
        assert "#" in a["path"] and (a["x"], a["y"]) == (b["x"], b["y"])
        np.testing.assert_array_equal(
            np.asarray(open_image(str(tmp_path / "h" / a["path"]))),
            np.asarray(open_image(str(tmp_path / "p" / b["path"]))),
        )
    manifest = pd.read_csv(tmp_path / "h" / "manifest.csv")
    manifest.loc[1::3, "split"] = "val"
    manifest.loc[1::3, "group"] = "held-out"  # one slide's tiles may not span train and val
    manifest.loc[::2, "label"] = "other"
    manifest.to_csv(tmp_path / "h" / "manifest.csv", index=False)
    data = load_training_data(tmp_path / "h" / "manifest.csv")
    assert (data.in_chans, data.image_size) == (3, 64)


def truncate(image: Path) -> Path:
    """Cut a PNG in half: its header still reads, its pixels do not decode."""
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    return image


def test_a_truncated_image_is_found_before_training(tmp_path):
    manifest = write_patches(tmp_path, {"train": 8, "val": 4})
    bad = truncate(tmp_path / "val_002.png")
    with pytest.raises(CorruptFileError, match="cannot decode image") as caught:
        load_training_data(manifest)
    assert str(caught.value).startswith(str(bad))


def test_check_images_decodes_every_image_not_only_a_sample(tmp_path, monkeypatch):
    manifest = write_patches(tmp_path, {"train": 8, "val": 4})
    monkeypatch.setattr(training_data, "DECODE_SAMPLE", 0)  # the sample misses every image
    bad = [truncate(tmp_path / "train_005.png"), truncate(tmp_path / "val_001.png")]
    with pytest.raises(CorruptFileError, match=r"cannot decode image.*1 more") as caught:
        load_training_data(manifest, check_images=True)
    assert str(caught.value).startswith(str(bad[0]))
