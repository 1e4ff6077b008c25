"""Which files are slides: ``find_slides`` over files and folders, with their annotations."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncoscope.errors import OncoscopeError
from oncoscope.io.slide_files import find_slides


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_a_folder_gives_its_slides_by_suffix_in_name_order_and_files_are_taken_as_given(
    tmp_path: Path,
) -> None:
    _touch(tmp_path / "in", "b.tiff", "a.svs", "c.NDPI", ".hidden.svs", "notes.txt", "d.h5")
    _touch(tmp_path, "e.custom")
    jobs = find_slides([tmp_path / "in", tmp_path / "e.custom"])
    assert [(j.slide_id, j.path.name, j.annotations) for j in jobs] == [
        ("a", "a.svs", None),
        ("b", "b.tiff", None),
        ("c", "c.NDPI", None),
        ("e", "e.custom", None),
    ]


def test_each_slide_gets_its_own_annotations_from_a_folder(tmp_path: Path) -> None:
    _touch(tmp_path / "slides", "a.svs", "b.svs", "c.svs")
    _touch(tmp_path / "notes", "a.geojson", "b.png", "z.geojson")
    jobs = find_slides([tmp_path / "slides"], tmp_path / "notes")
    found = {j.slide_id: j.annotations.name if j.annotations else None for j in jobs}
    assert found == {"a": "a.geojson", "b": "b.png", "c": None}


def test_one_annotation_file_goes_with_one_slide(tmp_path: Path) -> None:
    _touch(tmp_path, "a.svs", "a-regions.geojson")
    (job,) = find_slides([tmp_path / "a.svs"], tmp_path / "a-regions.geojson")
    assert job.annotations == tmp_path / "a-regions.geojson"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no slides (.svs, .tif"),
        ("same stem", "two slides named 'a'"),
        ("one file, two slides", "one annotation file given for several slides"),
        ("missing annotations", "annotations do not exist"),
    ],
)
def test_bad_inputs_are_refused_naming_the_file(tmp_path: Path, case: str, message: str) -> None:
    _touch(tmp_path / "x", "a.svs")
    _touch(tmp_path / "y", "a.tif", "b.svs")
    _touch(tmp_path / "empty", "notes.txt")
    _touch(tmp_path, "regions.geojson")
    inputs, annotations, named = {
        "missing": ([tmp_path / "gone.svs"], None, tmp_path / "gone.svs"),
        "empty": ([tmp_path / "empty"], None, tmp_path / "empty"),
        "same stem": ([tmp_path / "x", tmp_path / "y"], None, tmp_path / "y" / "a.tif"),
        "one file, two slides": (
            [tmp_path / "y"],
            tmp_path / "regions.geojson",
            tmp_path / "regions.geojson",
        ),
        "missing annotations": ([tmp_path / "x"], tmp_path / "nothing", tmp_path / "nothing"),
    }[case]
    with pytest.raises(OncoscopeError) as raised:
        find_slides(inputs, annotations)
    assert message in raised.value.message and raised.value.path == named
