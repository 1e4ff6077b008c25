"""``oncoscope slide`` over several slides: resume, and bad slides among good ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.pathology.synthetic import write_synthetic_slide

OUTPUTS = (
    "probabilities.npy",
    "probabilities.tif",
    "heatmap.png",
    "segmentation.png",
    "regions.geojson",
    "summary.json",
    "status.json",
)


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["slide", *map(str, args)])
    return result.exit_code, result.output


def test_bad_slides_are_reported_and_the_good_ones_done_then_resumed(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(small_slide, slides / "good.tif")
    (slides / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    write_synthetic_slide(slides / "blank.tif", (1024, 768), regions=[])
    out = tmp_path / "out"
    args = (colour_checkpoint, slides, "--out", out, "--magnification", "10", "--stride", "1")
    code, output = _run(*args)
    assert code == 2, output
    assert "2 slide(s) failed" in output
    assert "corrupt.tif" in output and "blank.tif: no tissue" in output
    for name in OUTPUTS:
        assert (out / "good" / name).is_file(), name
    assert not (out / "corrupt" / "status.json").exists()
    stamps = {name: (out / "good" / name).stat().st_mtime_ns for name in OUTPUTS}

    # resume: the finished slide is skipped, nothing of it is rewritten
    (slides / "corrupt.tif").unlink()
    (slides / "blank.tif").unlink()
    code, output = _run(*args)
    assert code == 0, output
    assert "already done, skipped" in output
    assert stamps == {name: (out / "good" / name).stat().st_mtime_ns for name in OUTPUTS}


def test_auto_scale_classifies_at_the_scale_search_winner(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = _run(
        colour_checkpoint,
        small_slide,
        "--out",
        out,
        "--auto-scale",
        "--scales",
        "5,10,20,60",
        "--scale-points",
        "8",
        "--stride",
        "1",
    )
    assert code == 0, output
    folder = out / small_slide.stem
    summary = json.loads((folder / "summary.json").read_text())
    search = json.loads((folder / "scale.json").read_text())
    # x60 is finer than the x40 scan: not tried, and said so.
    assert search["scales"] == [5, 10, 20]
    assert "x60" in output
    assert sum(search["histogram"].values()) == 8
    assert summary["magnification"] == pytest.approx(search["winner"])
    assert summary["scale_search"]["winner"] == search["winner"]
    assert (folder / "scale_histogram.png").stat().st_size > 0


def test_auto_scale_with_a_magnification_is_refused(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    code, output = _run(
        colour_checkpoint, small_slide, "--out", tmp_path, "--auto-scale", "--magnification", "10"
    )
    assert code == 2
    assert "not both" in output
    assert not (tmp_path / small_slide.stem / "summary.json").exists()
