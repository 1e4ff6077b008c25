"""``oncoscope slide`` over several slides: resume, and bad slides among good ones."""

from __future__ import annotations

import shutil
from pathlib import Path

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
