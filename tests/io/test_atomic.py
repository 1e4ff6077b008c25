from __future__ import annotations

import pytest

from oncoscope.io.atomic import atomic_path


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_folder_replaces_the_old_folder_whole(tmp_path):
    target = tmp_path / "slices"
    target.mkdir()
    (target / "stale.png").write_text("x")
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "new.png").write_text("y")
        assert not (target / "new.png").exists()  # not visible before completion
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]
