"""Direct tiled-TIFF reads (oncoscope.io.tiff_tiles) against OpenSlide's own read_region.

The truth is OpenSlide reading the same file: its RGBA ``read_region`` flattened over white in
NumPy. The decoders agree exactly (libjpeg-turbo in both, same colour space and upsampling), so
pixels are compared for equality, not within a tolerance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from oncoscope.errors import CorruptFileError
from oncoscope.io import slides as slides_module
from oncoscope.io.slides import Slide, open_slide, pooled_slide
from oncoscope.io.tiff_tiles import DecodedTileCache
from oncoscope.pathology.synthetic import write_synthetic_slide

TILE = 256
ODD_WH = (1000, 700)  # not a multiple of the 256-px TIFF tile: partial tiles at the edges


def _openslide_rgb(path: Path, xy: tuple[int, int], level: int, size: tuple[int, int]):
    """OpenSlide's read_region over white (transparent outside the slide)."""
    handle = openslide.OpenSlide(path)
    rgba = np.asarray(handle.read_region(xy, level, size)).astype(np.float64)
    handle.close()
    alpha = rgba[..., 3:] / 255
    return np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _no_openslide(*args, **kwargs):
    raise AssertionError("read through OpenSlide, not from the TIFF tiles")


@pytest.fixture(scope="module")
def odd_slides(tmp_path_factory) -> dict[str, Path]:
    """Small generic TIFF and Aperio SVS slides whose sizes are not multiples of the tile."""
    folder = tmp_path_factory.mktemp("odd")
    return {
        "generic": write_synthetic_slide(folder / "odd.tif", ODD_WH, tile_px=TILE).path,
        "aperio": write_synthetic_slide(
            folder / "odd.svs", ODD_WH, tile_px=TILE, vendor="aperio"
        ).path,
    }


def _regions(level_wh: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Level-pixel (x, y) and (w, h): aligned, unaligned, across tile borders, at and past the
    right/bottom edges, before the top-left corner, and wholly outside."""
    w, h = level_wh
    return [
        ((0, 0), (TILE, TILE)),  # one whole tile, aligned
        ((TILE, 0), (64, 48)),  # aligned corner, part of a tile
        ((37, 101), (224, 224)),  # unaligned, across four tiles
        ((TILE - 5, TILE - 3), (10, 7)),  # tiny, straddling a tile corner
        ((w - 100, h - 60), (224, 224)),  # over the right and bottom edges
        ((w - 1, 0), (3, h + 5)),  # the last column and past it
        ((-20, -30), (64, 64)),  # before the top-left corner
        ((w + 10, h + 10), (32, 32)),  # wholly outside
    ]


@pytest.mark.parametrize("kind", ["generic", "aperio"])
def test_tile_reads_equal_openslide_at_every_level_and_edge(odd_slides, kind):
    path = odd_slides[kind]
    with open_slide(path, mpp=0.25) as slide:
        assert slide.tiff_tiles is not None
        slide.handle.read_region = _no_openslide  # would fail if any read fell back
        for level, level_wh in enumerate(slide.level_dimensions):
            downsample = slide.level_downsamples[level]
            for (x, y), size in _regions(level_wh):
                xy0 = (int(x * downsample), int(y * downsample))
                target = slides_module.Resolution(downsample, 0.25 * downsample, 40, level)
                got = slide.read_at(xy0, size, target)
                expected = _openslide_rgb(path, xy0, level, size)
                np.testing.assert_array_equal(got, expected, err_msg=f"{level} {x} {y} {size}")


def test_tile_reads_equal_openslide_on_the_shared_fixture_slides(generic_slide, aperio_slide):
    # 4096 x 3072: tiles that fit exactly at level 0, a partial row at level 3 (384 px high)
    for synthetic in (generic_slide, aperio_slide):
        with open_slide(synthetic.path) as slide:
            assert slide.tiff_tiles is not None
            assert all(slide.tiff_tiles.serves(level) for level in range(4))
            for level in range(4):
                w, h = slide.level_dimensions[level]
                for x, y in ((300, 200), (w - 150, h - 90)):
                    xy0 = (x * 2**level, y * 2**level)
                    out = np.zeros((180, 250, 3), np.uint8)
                    assert slide.tiff_tiles.read(xy0, level, out)
                    expected = _openslide_rgb(synthetic.path, xy0, level, (250, 180))
                    np.testing.assert_array_equal(out, expected)


def _random_pyramid(
    path: Path, compression: str, photometric: str = "rgb", seed: int = 7
) -> np.ndarray:
    """A 2-level tiled TIFF of random pixels (exact codecs; RGB, or grey with
    ``photometric="minisblack"``), level 0 returned."""
    rng = np.random.default_rng(seed)
    shape = (600, 900, 3) if photometric == "rgb" else (600, 900)
    level0 = rng.integers(0, 256, shape, dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for index, image in enumerate((level0, level0[::2, ::2])):
            tif.write(
                np.ascontiguousarray(image),
                tile=(TILE, TILE),
                photometric=photometric,
                compression=compression,
                subfiletype=1 if index else 0,
                metadata=None,
            )
    return level0


@pytest.mark.parametrize("compression", ["zlib", "lzw", "none"])
def test_deflate_lzw_and_uncompressed_tiles_are_read_exactly(tmp_path, compression):
    path = tmp_path / f"random-{compression}.tif"
    level0 = _random_pyramid(path, compression)
    with Slide(path, mpp=0.5) as slide:
        assert slide.vendor == "generic-tiff" and slide.tiff_tiles is not None
        slide.handle.read_region = _no_openslide
        tile = slide.read((250, 500), (300, 200))
        np.testing.assert_array_equal(tile[:100], level0[500:600, 250:550])
        assert (tile[100:] == 255).all()  # past the bottom edge: white
        coarse = slide.read((2, 4), (100, 80), mpp=1.0)  # level 1 at level pixel (1, 2)
        np.testing.assert_array_equal(coarse, level0[::2, ::2][2:82, 1:101])


class _Spy:
    """Counts OpenSlide read_region calls and passes them on."""

    def __init__(self, handle: openslide.OpenSlide) -> None:
        self.calls = 0
        self._read = handle.read_region

    def __call__(self, *args, **kwargs) -> Image.Image:
        self.calls += 1
        return self._read(*args, **kwargs)


def test_a_file_it_cannot_serve_is_read_by_openslide(tmp_path, odd_slides):
    # greyscale pages: OpenSlide reads them through libtiff as grey RGB, the tile path does not
    path = tmp_path / "grey.tif"
    level0 = _random_pyramid(path, "zlib", photometric="minisblack", seed=3)
    with Slide(path, mpp=0.5) as slide:
        assert slide.vendor == "generic-tiff" and slide.tiff_tiles is None
        spy = slide.handle.read_region = _Spy(slide.handle)
        grey = slide.read((10, 20), (64, 32))
        np.testing.assert_array_equal(grey, np.repeat(level0[20:52, 10:74, None], 3, axis=2))
        assert spy.calls == 1
    # a served slide still goes to OpenSlide for a window at a fraction of a level pixel
    with open_slide(odd_slides["generic"], mpp=0.25) as slide:
        spy = slide.handle.read_region = _Spy(slide.handle)
        target = slide.resolution(mpp=0.5)  # level 1, downsample 2
        slide.read_at((101, 40), (32, 32), target)  # x = 50.5 level pixels
        assert spy.calls == 1
        slide.read_at((100, 40), (32, 32), target)
        assert spy.calls == 1


def test_decoded_tile_cache_stays_under_its_byte_bound(odd_slides, monkeypatch):
    tile_bytes = TILE * TILE * 3
    monkeypatch.setattr(slides_module, "CACHE_BYTES", 3 * tile_bytes + 100)
    path = odd_slides["generic"]
    with open_slide(path, mpp=0.25) as slide:
        assert slide.tiff_tiles is not None
        cache = slide.tiff_tiles.cache
        for y in range(0, ODD_WH[1], 100):
            for x in range(0, ODD_WH[0], 150):
                tile = slide.read((x, y), (150, 100))
                assert cache.nbytes <= 3 * tile_bytes + 100
                np.testing.assert_array_equal(tile, _openslide_rgb(path, (x, y), 0, (150, 100)))
        assert len(cache) == 3 and cache.nbytes == 3 * tile_bytes


def test_cache_drops_the_least_recently_used_tile_first():
    cache = DecodedTileCache(3 * 100)
    tiles = {key: np.full((10, 10, 1), i, np.uint8) for i, key in enumerate("abcd")}
    for key in "abc":
        cache.put(key, tiles[key])
    assert cache.get("a") is tiles["a"]  # now the most recent: "b" goes first
    cache.put("d", tiles["d"])
    assert [cache.get(k) is not None for k in "abcd"] == [True, False, True, True]
    cache.put("big", np.zeros((400,), np.uint8))  # larger than the whole bound: not kept
    assert cache.get("big") is None and cache.nbytes == 300


def test_pooled_slides_share_one_decoded_tile_cache(generic_slide, aperio_slide):
    slides_module.close_pool()
    first, second = pooled_slide(generic_slide.path), pooled_slide(aperio_slide.path)
    assert first.tiff_tiles is not None and second.tiff_tiles is not None
    assert first.tiff_tiles.cache is second.tiff_tiles.cache
    assert first.tiff_tiles.cache.max_bytes == slides_module.CACHE_BYTES
    first.read((0, 0), (64, 64))
    assert len(first.tiff_tiles.cache) == 1
    slides_module.close_pool()  # closing forgets the slide's tiles
    assert len(first.tiff_tiles.cache) == 0


def _corrupt_tile(source: Path, target: Path, how: str) -> None:
    """Copy the slide and spoil level 0's tile 1 (OpenSlide hashes only the smallest level's
    tiles, so the file still opens)."""
    shutil.copy(source, target)
    with tifffile.TiffFile(source) as tif:
        offset, count = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    with target.open("r+b") as file:
        if how == "cut short":  # its second half lost (zeros), end marker included
            file.seek(offset + count // 2)
            file.write(bytes(count - count // 2))
        elif how == "broken header":
            file.seek(offset + 2)
            file.write(bytes(38))
        else:
            file.seek(offset)
            file.write(bytes(count))


@pytest.mark.parametrize("how", ["cut short", "broken header", "zeroed"])
def test_a_corrupt_tile_is_a_one_line_error_naming_the_file(odd_slides, tmp_path, how):
    path = tmp_path / "spoilt.tif"
    _corrupt_tile(odd_slides["generic"], path, how)
    with Slide(path, mpp=0.25) as slide:
        assert slide.tiff_tiles is not None
        np.testing.assert_array_equal(  # tile 0 is fine and read from the TIFF
            slide.read((0, 0), (TILE, TILE)), _openslide_rgb(path, (0, 0), 0, (TILE, TILE))
        )
        with pytest.raises(CorruptFileError, match=r"spoilt\.tif: cannot read region") as error:
            slide.read((TILE + 10, 0), (64, 64))
        assert "\n" not in str(error.value)
