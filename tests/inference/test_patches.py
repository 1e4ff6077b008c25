from __future__ import annotations

import numpy as np
import openslide
import pytest
import torch

from oncoscope.errors import InvalidOptionError
from oncoscope.inference.patches import TileDataset
from oncoscope.inference.predict_tiles import tile_loader
from oncoscope.io.slides import close_pool, open_slide


def _no_openslide(*args, **kwargs):
    raise AssertionError("read through OpenSlide, not from the TIFF tiles")


def test_dataloader_workers_read_the_tiles_openslide_reads(generic_slide, monkeypatch):
    # 224-px tiles at level 0 and at level 1 (x20 on the x40 scan: downsample 2, even
    # level-0 positions), some past the slide's right and bottom edges
    with open_slide(generic_slide.path) as slide:
        targets = [slide.resolution(magnification=m) for m in (40, 20)]
    w, h = generic_slide.size_wh
    positions = np.array([(0, 0), (448, 224), (1000, 2000), (w - 200, h - 100), (w - 448, 0)])
    handle = openslide.OpenSlide(generic_slide.path)  # the truth: OpenSlide's own reads
    expected = {
        target.level: [
            np.asarray(handle.read_region((int(x), int(y)), target.level, (224, 224)))
            for x, y in positions
        ]
        for target in targets
    }
    handle.close()
    # forked workers inherit the patch: every tile must come from the TIFF tiles
    monkeypatch.setattr(openslide.OpenSlide, "read_region", _no_openslide)
    for target in targets:
        close_pool()
        dataset = TileDataset(generic_slide.path, positions, 224, target)
        tiles = torch.cat([b for b, _ in tile_loader(dataset, 2, 2, torch.device("cpu"))])
        for tile, rgba in zip(tiles.numpy(), expected[target.level], strict=True):
            flat = np.where(rgba[..., 3:] == 255, rgba[..., :3], 255)
            np.testing.assert_array_equal(tile, flat)
    close_pool()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_resolution_that_is_not_a_finite_positive_number_is_refused(small_slide, value):
    with open_slide(small_slide) as slide:
        for given in ({"mpp": value}, {"magnification": value}):
            with pytest.raises(InvalidOptionError, match="finite number above 0"):
                slide.resolution(**given)
