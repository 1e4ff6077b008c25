"""Many slides in one ``slide`` run: the same maps as one-slide runs, the fp32 check spread over
the run and reported per slide and pooled, and a slide that cannot be read failing alone."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch

from oncoscope.inference.slide_inference import (
    SlideOptions,
    infer_slide,
    infer_slides,
    load_classifier,
)
from oncoscope.pathology.synthetic import write_synthetic_slide

OPTIONS = SlideOptions(magnification=10, stride=0.5, precision="fp32", batch_size=8)


def _maps(folder: Path, slides: list[Path]) -> list[np.ndarray]:
    return [np.load(folder / s.stem / "probabilities.npy") for s in slides]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_over_many_slides_gives_the_maps_of_one_slide_runs(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path, workers: int
) -> None:
    options = replace(OPTIONS, workers=workers)
    report = infer_slides(colour_checkpoint, tray, tmp_path / "batch", options)
    assert report.failures == [] and report.not_done == []
    assert [o.slide for o in report.outcomes] == tray  # in the order given
    classifier = load_classifier(colour_checkpoint)
    for slide in tray:
        infer_slide(classifier, slide, tmp_path / "alone", OPTIONS)
    batch, alone = _maps(tmp_path / "batch", tray), _maps(tmp_path / "alone", tray)
    for together, apart in zip(batch, alone, strict=True):
        assert together.shape == apart.shape
        np.testing.assert_array_equal(together, apart)  # bit for bit, NaN cells included
    assert len({m.shape for m in batch}) == 3  # three different slides, not one map thrice
    assert report.tiles == sum(
        json.loads((tmp_path / "alone" / s.stem / "summary.json").read_text())["tiles"]
        for s in tray
    )
    assert not any((tmp_path / "batch").rglob(".work"))


@pytest.mark.parametrize("batch_size", [8, 2])
def test_the_fp32_check_is_spread_over_the_run_and_reported_per_slide(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path, batch_size: int
) -> None:
    """Checked tiles wait for a batch's worth (or the slide's end) before their fp32 run: with
    batch 8 they are run at each slide's end, with batch 2 every two tiles."""
    options = replace(OPTIONS, precision="bf16", batch_size=batch_size)
    report = infer_slides(colour_checkpoint, tray, tmp_path, options)
    summaries = report.summaries
    assert len(summaries) == 3
    for summary in summaries:
        tiles = summary["tiles"]
        # 1% of the slide's tiles, and at least its third of the run's 16: ceil(16 / 3) = 6
        expected = min(tiles, max(6, math.ceil(tiles / 100)))
        assert summary["precision_agreement"]["tiles"] == expected
        # the colour model's logits are exact in bf16 on every CPU (tests/inference/conftest.py)
        assert summary["precision_agreement"]["argmax_agreement"] == 1.0
        # ... and its probabilities differ from fp32's only by the inputs' rounding to bf16
        # (0.0098 here): a reference filed under another tile (another colour) is 0.2-1 off
        assert summary["precision_agreement"]["max_abs_difference"] < 0.05
        assert summary["phase_seconds"]["precision_agreement"] > 0
    pooled = report.agreement()
    assert pooled is not None
    assert pooled["slides"] == 3
    assert pooled["tiles"] == sum(s["precision_agreement"]["tiles"] for s in summaries) >= 16
    assert pooled["argmax_agreement"] == 1.0
    low, high = pooled["argmax_agreement_ci95"]
    assert 0.7 < low < 1.0 and high == pytest.approx(1.0)  # Wilson, 18 of 18 tiles
    assert pooled["slides_with_disagreement"] == []


def test_a_slide_is_written_while_the_next_one_runs(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model does not wait for a slide's outputs: the first slide's writing cannot end
    before the second slide has started through the model (in line, it would wait in vain)."""
    from oncoscope.inference import slide_batch

    second_started = threading.Event()
    waited: list[bool] = []
    finish = slide_batch.finish_slide

    def finish_after_the_next_starts(*args: Any) -> Any:
        if not waited:
            waited.append(second_started.wait(timeout=30))
        return finish(*args)

    def on_slide(path: Path, slides: int) -> None:
        if path == tray[1]:
            second_started.set()

    monkeypatch.setattr(slide_batch, "finish_slide", finish_after_the_next_starts)
    report = infer_slides(colour_checkpoint, tray, tmp_path / "out", OPTIONS, on_slide=on_slide)
    assert waited == [True]
    assert [o.slide for o in report.outcomes] == tray and report.failures == []
    for slide in tray:  # every slide written in full, the first included
        assert (tmp_path / "out" / slide.stem / "status.json").is_file()


def _break_level0_tiles(path: Path) -> None:
    """Overwrite every tile of the full-resolution page with bytes no decoder reads; the
    smaller pages (where the tissue mask is made) stay intact."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    with path.open("r+b") as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b"\x00" * count)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_slide_whose_tiles_cannot_be_read_fails_alone(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path, workers: int
) -> None:
    broken = write_synthetic_slide(tmp_path / "broken.tif", (1536, 1152)).path
    _break_level0_tiles(broken)
    slides = [tray[0], broken, tray[1]]
    options = replace(OPTIONS, magnification=40, stride=1.0, workers=workers)
    report = infer_slides(colour_checkpoint, slides, tmp_path / "out", options)
    assert [o.slide for o in report.outcomes] == [tray[0], tray[1]]
    assert all(o.summary is not None for o in report.outcomes)
    assert [path for path, _ in report.failures] == [str(broken)]
    assert not (tmp_path / "out" / "broken").exists()  # nothing half-written left
    for slide in (tray[0], tray[1]):
        assert (tmp_path / "out" / slide.stem / "status.json").is_file()


def test_the_command_ends_with_the_run_and_its_pooled_check(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from oncoscope.cli import app

    args = ["slide", str(colour_checkpoint), *map(str, tray), "--out", str(tmp_path)]
    args += ["--magnification", "10", "--precision", "bf16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summaries = [json.loads((tmp_path / s.stem / "summary.json").read_text()) for s in tray]
    tiles = sum(s["tiles"] for s in summaries)
    checked = sum(s["precision_agreement"]["tiles"] for s in summaries)
    assert f"run: 3 slides, {tiles} tiles in " in result.output
    assert (
        f"fp32 check over the run: 100.0% argmax agreement on {checked} tiles of 3 slides"
        in result.output
    )


def test_a_compiled_run_gives_the_maps_of_the_eager_run(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    """``--compile``: one graph for the run (its smaller last batches padded to the batch
    size, the padding's outputs dropped); the maps agree with the eager run's to the float
    rounding of inductor's fused kernels (about 1e-5 on probabilities here), at fp32."""
    from torch._dynamo.utils import counters

    eager = infer_slides(colour_checkpoint, tray, tmp_path / "eager", OPTIONS)
    torch._dynamo.reset()
    counters.clear()
    compiled = infer_slides(
        colour_checkpoint, tray, tmp_path / "compiled", replace(OPTIONS, compile=True)
    )
    assert compiled.failures == [] and compiled.tiles == eager.tiles
    assert any(s["tiles"] % OPTIONS.batch_size for s in eager.summaries)  # a padded batch
    assert counters["stats"]["unique_graphs"] == 1  # compiled, and once for all batch sizes
    for a, b in zip(
        _maps(tmp_path / "eager", tray), _maps(tmp_path / "compiled", tray), strict=True
    ):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4, equal_nan=True)


def test_compile_is_refused_where_lightning_runs_the_model(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    from oncoscope.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="--compile"):
        infer_slides(colour_checkpoint, tray, tmp_path, replace(OPTIONS, compile=True, devices=2))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
