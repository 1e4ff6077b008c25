from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oncoscope.dataset.imagefolder import imagefolder_rows
from oncoscope.errors import InvalidOptionError, OncoscopeError


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)


def test_classes_from_folders_and_groups_from_names_never_cross_splits(tmp_path):
    for patient in range(10):
        for label in ("normal", "tumour"):
            for k in range(2):
                _image(tmp_path / label / f"P{patient:02d}_{k}.png")
    (tmp_path / "tumour" / "notes.txt").write_text("not an image")
    rows = imagefolder_rows(tmp_path, group_pattern=r"^(P\d+)_", seed=1)
    assert len(rows) == 40 and {r["label"] for r in rows} == {"normal", "tumour"}
    splits_of = {}
    for row in rows:
        splits_of.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert sorted(
        sum(1 for s in splits_of.values() if split in s) for split in ("train", "val", "test")
    ) == [2, 2, 6]


def test_presplit_folders_keep_their_split(tmp_path):
    _image(tmp_path / "train" / "a" / "1.png")
    _image(tmp_path / "val" / "b" / "2.png")
    rows = imagefolder_rows(tmp_path)
    assert {(r["path"], r["label"], r["split"]) for r in rows} == {
        ("train/a/1.png", "a", "train"),
        ("val/b/2.png", "b", "val"),
    }


def test_bad_folders(tmp_path):
    with pytest.raises(OncoscopeError, match="no images"):
        imagefolder_rows(tmp_path)
    _image(tmp_path / "a" / "x.png")
    with pytest.raises(InvalidOptionError, match=r"does not match x\.png"):
        imagefolder_rows(tmp_path, group_pattern=r"P\d+")
