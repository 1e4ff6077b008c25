"""``oncoscope slide`` over several slides: resume, and bad slides among good ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.io.slides import Resolution, Slide
from oncoscope.pathology.synthetic import write_synthetic_slide

from .conftest import TILE_PX

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


def test_auto_scale_searches_at_the_resolution_it_then_classifies_at(
    colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mpp and objective power disagree, as on many Aperio scans: 0.2527 um/px at x40. A
    # magnification M is read with downsample 40 / M (10 / M / 0.2527 would be 1 % finer).
    slide = write_synthetic_slide(
        tmp_path / "scan.svs", (1536, 1152), mpp=0.2527, magnification=40.0, vendor="aperio"
    ).path
    reads: list[Resolution] = []
    read_at = Slide.read_at

    def spy(
        self: Slide,
        location_xy: tuple[float, float],
        size_wh: tuple[int, int],
        target: Resolution,
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        if tuple(size_wh) == (TILE_PX, TILE_PX):  # crops and tiles, not the overviews
            reads.append(target)
        return read_at(self, location_xy, size_wh, target, out)

    monkeypatch.setattr(Slide, "read_at", spy)
    scales, points = [7, 13, 17, 27], 6  # none within 2 % of a pyramid level (1, 2, 4, 8)
    out = tmp_path / "out"
    code, output = _run(
        colour_checkpoint, slide, "--out", out, "--auto-scale", "--stride", "1",
        "--scales", ",".join(map(str, scales)), "--scale-points", str(points),
    )  # fmt: skip
    assert code == 0, output
    search, tiles = reads[: points * len(scales)], reads[points * len(scales) :]
    for i, scale in enumerate(scales):  # the search reads scale by scale
        for target in search[i * points : (i + 1) * points]:
            assert target.downsample == pytest.approx(40 / scale)
            assert target.mpp == pytest.approx(0.2527 * 40 / scale)
    winner = json.loads((out / "scan" / "scale.json").read_text())["winner"]
    searched = {t for t in search if t.magnification == pytest.approx(winner)}
    assert len(searched) == 1 and tiles and set(tiles) == searched
    summary = json.loads((out / "scan" / "summary.json").read_text())
    assert summary["mpp"] == pytest.approx(0.2527 * 40 / winner)


def test_auto_scale_keeps_the_scan_overrides(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.tif"  # level 0 only, no resolution tags, no objective power
    tifffile.imwrite(
        bare, tifffile.imread(small_slide), tile=(256, 256), photometric="rgb", metadata=None
    )
    code, output = _run(
        colour_checkpoint, bare, "--out", tmp_path / "out", "--auto-scale", "--stride", "1",
        "--scales", "10,20,40", "--scale-points", "4", "--mpp-of-scan", "0.25",
    )  # fmt: skip
    assert code == 0, output
    search = json.loads((tmp_path / "out" / "bare" / "scale.json").read_text())
    summary = json.loads((tmp_path / "out" / "bare" / "summary.json").read_text())
    assert search["slide_mpp"] == summary["slide_mpp"] == 0.25
    assert search["scales"] == [10, 20, 40]  # x40 is the scan's own, not dropped
    assert summary["mpp"] == pytest.approx(10 / search["winner"])
    assert np.load(tmp_path / "out" / "bare" / "probabilities.npy").shape[-1] == 4


def test_annotations_that_label_nothing_are_warned(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    code, output = _run(
        colour_checkpoint, small_slide, "--out", tmp_path / "out", "--magnification", "10",
        "--stride", "1", "--annotations", empty,
    )  # fmt: skip
    assert code == 0, output
    assert f"warning: {small_slide}: annotations {empty} has no features; no scores" in " ".join(
        output.split()
    )


def test_a_single_process_slide_run_does_not_import_lightning(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    """Lightning's import alone takes seconds: ``oncoscope slide`` without ``--devices`` runs
    the whole command (CLI, checkpoint, tiles, outputs) without it (issue 18); an fp32 run,
    which has no agreement check to pool, does not import ``scipy.stats`` (0.7 s)."""
    out = tmp_path / "out"
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from oncoscope.cli import app\n"
        f"r = CliRunner().invoke(app, ['slide', {str(colour_checkpoint)!r}, {str(small_slide)!r},"
        f" '--out', {str(out)!r}, '--magnification', '10', '--workers', '0',"
        " '--precision', 'fp32'])\n"
        "assert r.exit_code == 0, r.output\n"
        "roots = {'lightning', 'pytorch_lightning'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots or m == 'scipy.stats'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (out / "small" / "summary.json").is_file()
