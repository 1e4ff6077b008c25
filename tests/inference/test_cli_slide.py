"""``oncoscope slide`` over several slides: resume, and bad slides among good ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_two_processes_through_lightning_ddp_give_the_single_process_maps(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    """``--devices 2 --accelerator cpu``: Lightning starts a second process (gloo) and shards
    the tiles; over two slides, every map equals the one-process map and only rank 0 speaks."""
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(small_slide, slides / "a.tif")
    write_synthetic_slide(slides / "b.tif", (1024, 1280))
    common = [str(colour_checkpoint), str(slides), "--magnification", "10", "--precision", "fp32"]
    code, output = _run(*common, "--out", tmp_path / "one")
    assert code == 0, output
    command = [sys.executable, "-m", "oncoscope", "slide", *common, "--out", str(tmp_path / "two")]
    done = subprocess.run(
        [*command, "--devices", "2", "--accelerator", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # two processes really ran
    assert "already done" not in done.stdout
    for name in ("a", "b"):
        assert f"{name}.tif:" in done.stdout
        single = np.load(tmp_path / "one" / name / "probabilities.npy")
        distributed = np.load(tmp_path / "two" / name / "probabilities.npy")
        np.testing.assert_array_equal(np.isnan(distributed), np.isnan(single))
        np.testing.assert_allclose(distributed, single, rtol=1e-5, atol=1e-6)
        assert not (tmp_path / "two" / name / ".work").exists()


def test_num_nodes_without_devices_is_refused(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    code, output = _run(colour_checkpoint, small_slide, "--out", tmp_path, "--num-nodes", "2")
    assert code == 2
    assert "--num-nodes needs --devices" in output
    assert not any(tmp_path.iterdir())
