from __future__ import annotations

from pathlib import Path

import pytest

from oncoscope.dataset.manifest import read_manifest, write_manifest
from oncoscope.errors import ManifestError

COLUMNS = ("path", "group", "label", "split")


def test_round_trip_resolves_paths_against_the_manifest_folder(tmp_path):
    rows = [
        {"path": "a/1.png", "group": "007", "label": "tumour", "split": "train"},
        {"path": "b/2.png", "group": "012", "label": "healthy", "split": "test"},
    ]
    write_manifest(rows, tmp_path / "manifest.csv", COLUMNS)
    frame = read_manifest(tmp_path / "manifest.csv")
    assert list(frame["path"]) == [str(tmp_path / "a/1.png"), str(tmp_path / "b/2.png")]
    assert list(frame["group"]) == ["007", "012"]  # ids stay text: leading zeros kept
    assert not list(tmp_path.glob(".partial*"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label,split\nx.png,tumour,train\n", r"missing columns \['group'\]"),
        ("path,group,label,split\n", "no rows"),
        ("path,group,label,split\nx.png,1,tumour,training\n", r"\['training'\]"),
        # an empty cell: the row is named by its line in the file
        ("path,group,label,split\nx.png,1,tumour,train\n,2,tumour,val\n", r"empty path.*line 3"),
        ("path,group,label,split\nx.png,1,,train\n", r"empty label.*line 2"),
        ("path,group,label,split\nx.png,1,tumour,\ny.png,1,tumour,\n", r"empty split.*lines 2, 3"),
    ],
)
def test_bad_manifests_are_named_and_explained(tmp_path, text, message):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message) as caught:
        read_manifest(path)
    assert str(path) in str(caught.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_rows_missing_a_value_are_refused(tmp_path):
    with pytest.raises(ManifestError, match="split"):
        write_manifest([{"path": "x", "group": "1", "label": "t"}], tmp_path / "m.csv", COLUMNS)
    assert not Path(tmp_path / "m.csv").exists()
