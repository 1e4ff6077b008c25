"""``oncoscope slide`` run again into the same ``--out``, and a disk that fills up mid-batch."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.inference import heatmaps
from oncoscope.inference.status import STATUS_NAME, settings_differences
from oncoscope.io.atomic import atomic_path

from .conftest import CLASSES

FAST = ("--precision", "fp32", "--agreement-tiles", "0")


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["slide", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())  # unwrapped


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _renamed_checkpoint(source: Path, path: Path) -> Path:
    """The same weights with the tumour class called ``cancer``: another checkpoint."""
    checkpoint = torch.load(source, weights_only=True)
    spec = checkpoint["hyper_parameters"]["spec"]
    spec["classes"] = [*CLASSES[:-1], "cancer"]
    torch.save(checkpoint, path)
    return path


def test_a_rerun_with_other_settings_redoes_the_slide_and_says_what(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    out, folder = tmp_path / "out", tmp_path / "out" / small_slide.stem
    first = (colour_checkpoint, small_slide, "--out", out, "--magnification", "10", *FAST)
    code, output = _run(*first, "--stride", "1")
    assert code == 0, output
    coarse = np.load(folder / "probabilities.npy")

    code, output = _run(*first, "--stride", "0.5")
    assert code == 0, output
    assert "already done" not in output
    assert "stride 1.0 -> 0.5" in output and "redone" in output
    fine = np.load(folder / "probabilities.npy")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stride"] == 0.5
    # half the stride: twice the cells along each axis (up to the slide's edge)
    assert fine.shape[0] in (2 * coarse.shape[0] - 1, 2 * coarse.shape[0])
    assert fine.shape[1] in (2 * coarse.shape[1] - 1, 2 * coarse.shape[1])

    stamps = _stamps(folder)
    code, output = _run(*first, "--stride", "0.5")  # same settings: skipped, untouched
    assert code == 0 and "already done, skipped" in output
    assert _stamps(folder) == stamps

    other = _renamed_checkpoint(colour_checkpoint, tmp_path / "other.ckpt")
    code, output = _run(other, *first[1:], "--stride", "0.5")
    assert code == 0, output
    assert "checkpoint_sha256" in output and "redone" in output
    assert json.loads((folder / "summary.json").read_text())["class_names"][-1] == "cancer"

    code, output = _run(other, *first[1:], "--stride", "0.5", "--magnification", "5")
    assert "magnification 10.0 -> 5.0" in output and code == 0


def test_on_mismatch_error_refuses_and_keeps_the_old_outputs(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    out, folder = tmp_path / "out", tmp_path / "out" / small_slide.stem
    common = (colour_checkpoint, small_slide, "--out", out, "--stride", "1", *FAST)
    code, output = _run(*common, "--magnification", "10")
    assert code == 0, output
    stamps = _stamps(folder)
    code, output = _run(*common, "--magnification", "5", "--on-mismatch", "error")
    assert code == 2
    assert "magnification 10.0 -> 5.0" in output and "--on-mismatch redo" in output
    assert _stamps(folder) == stamps
    code, output = _run(*common, "--magnification", "10", "--on-mismatch", "error")
    assert code == 0 and "already done, skipped" in output  # same settings: no mismatch


def test_a_status_without_settings_counts_as_not_done(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    out, folder = tmp_path / "out", tmp_path / "out" / small_slide.stem
    args = (colour_checkpoint, small_slide, "--out", out, "--magnification", "10", "--stride", "1")
    code, output = _run(*args, *FAST)
    assert code == 0, output
    status = json.loads((folder / STATUS_NAME).read_text())
    del status["settings"]  # as an older oncoscope wrote it
    (folder / STATUS_NAME).write_text(json.dumps(status))
    code, output = _run(*args, *FAST)
    assert code == 0 and "no settings recorded" in output and "redone" in output
    assert "settings" in json.loads((folder / STATUS_NAME).read_text())


def test_settings_differences_name_each_change() -> None:
    recorded = {"stride": 0.5, "precision": "bf16", "checkpoint_sha256": "a" * 64}
    wanted = {"stride": 0.5, "precision": "fp32", "checkpoint_sha256": "b" * 64}
    assert settings_differences(recorded, wanted) == [
        'precision "bf16" -> "fp32"',
        f"checkpoint_sha256 {'a' * 12} -> {'b' * 12}",
    ]
    assert settings_differences(recorded, recorded) == []
    assert settings_differences(None, wanted) == ["no settings recorded"]


def _leftovers(out: Path) -> list[str]:
    return [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.startswith(".partial-") or p.name == ".work"
    ]


@pytest.fixture
def three_slides(small_slide: Path, tmp_path: Path) -> Path:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(small_slide, slides / f"{name}.tif")
    return slides


def test_a_full_disk_stops_the_batch_naming_the_file_and_leaves_nothing_half_written(
    three_slides: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_heatmap = heatmaps.write_heatmap

    def full_at_b(values: Any, thumbnail: Any, path: Path, title: str) -> Path:
        if path.parent.name != "b":
            return write_heatmap(values, thumbnail, path, title)
        with atomic_path(path) as temporary:  # half a file, then the disk is full
            temporary.write_bytes(b"\x89PNG" + b"\x00" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(heatmaps, "write_heatmap", full_at_b)
    args = (colour_checkpoint, three_slides, "--out", out, "--magnification", "10", *FAST)
    code, output = _run(*args, "--stride", "1")
    assert code == 2, output
    assert f"error: {out / 'b' / 'heatmap.png'}: No space left on device" in output
    assert "Traceback" not in output
    assert f"not done: {three_slides / 'c.tif'}" in output
    assert (out / "a" / STATUS_NAME).is_file()  # the slide before is kept, done
    assert not (out / "b").exists()  # nothing of b: no map without its figures
    assert not (out / "c").exists()  # never started
    assert _leftovers(out) == []

    monkeypatch.setattr(heatmaps, "write_heatmap", write_heatmap)  # space freed: resume
    code, output = _run(*args, "--stride", "1")
    assert code == 0, output
    assert f"{three_slides / 'a.tif'}: already done, skipped" in output
    assert all((out / n / STATUS_NAME).is_file() for n in "abc")


def test_a_full_disk_at_the_tile_map_names_it(
    three_slides: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory-mapped tile probabilities are reserved on disk first: a full disk is an
    error naming the file, not a SIGBUS when the pages are written back."""

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "out"
    code, output = _run(
        colour_checkpoint, three_slides, "--out", out, "--magnification", "10", *FAST
    )
    assert code == 2, output
    assert f"error: {out / 'a' / '.work' / 'tiles.npy'}: No space left on device" in output
    assert "2 slide(s) not done" in output
    assert not out.exists() or not any(out.iterdir())


def test_a_failed_redo_leaves_no_status_vouching_for_old_files(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, folder = tmp_path / "out", tmp_path / "out" / small_slide.stem
    common = (colour_checkpoint, small_slide, "--out", out, "--stride", "1", *FAST)
    assert _run(*common, "--magnification", "10")[0] == 0

    def no_space(*args: Any, **kwargs: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(heatmaps, "write_segmentation", no_space)
    code, output = _run(*common, "--magnification", "5")
    assert code == 2 and "segmentation.png: No space left on device" in output
    assert not (folder / STATUS_NAME).exists()
    assert _leftovers(out) == []
    monkeypatch.undo()
    code, output = _run(*common, "--magnification", "10")  # the old settings: done again
    assert code == 0 and "already done" not in output
