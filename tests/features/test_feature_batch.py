"""``oncoscope features`` over many slides in one run: the bags of one-slide runs, and the fp32
check spread over the run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from oncoscope.features.bags import read_bag
from oncoscope.features.encoders import load_encoder
from oncoscope.features.extract import FeatureOptions, extract_slide, extract_slides


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_over_many_slides_gives_the_bags_of_one_slide_runs(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path, workers: int
) -> None:
    encoder = load_encoder(str(colour_checkpoint))
    options = FeatureOptions(magnification=10, precision="fp32", batch_size=8, workers=workers)
    report = extract_slides(encoder, tray, tmp_path / "batch", options)
    assert report.failures == [] and [o.slide for o in report.outcomes] == tray
    alone = FeatureOptions(magnification=10, precision="fp32", batch_size=8)
    for slide in tray:
        extract_slide(encoder, slide, tmp_path / "alone", alone)
    lengths = set()
    for slide in tray:
        together = read_bag(tmp_path / "batch" / f"{slide.stem}.h5")
        apart = read_bag(tmp_path / "alone" / f"{slide.stem}.h5")
        np.testing.assert_array_equal(together[0], apart[0])  # features, bit for bit
        np.testing.assert_array_equal(together[1], apart[1])  # coords
        lengths.add(len(together[0]))
    assert len(lengths) == 3
    assert not any(p.name.startswith(".work") for p in (tmp_path / "batch").iterdir())


def test_the_fp32_check_is_spread_over_the_run(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    encoder = load_encoder(str(colour_checkpoint))
    options = FeatureOptions(magnification=10, precision="bf16", batch_size=8)
    report = extract_slides(encoder, tray, tmp_path, options)
    for outcome in report.outcomes:
        summary = outcome.summary
        assert summary is not None
        tiles = summary["tiles"]
        assert summary["precision_agreement"]["tiles"] == min(
            tiles, max(math.ceil(16 / 3), math.ceil(tiles / 100))
        )
        assert 0.99 < summary["precision_agreement"]["cosine_min"] <= 1.0 + 1e-9
