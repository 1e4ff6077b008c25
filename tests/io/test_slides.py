from __future__ import annotations

import ctypes
from fractions import Fraction

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image
from skimage.transform import resize

from oncoscope.errors import (
    CorruptFileError,
    InvalidOptionError,
    MissingMetadataError,
    UnsupportedFormatError,
)
from oncoscope.io import slides as slides_module
from oncoscope.io.slides import Slide, open_slide, pooled_slide


def test_generic_tiff_reports_pyramid_mpp_from_resolution_tags_and_derived_magnification(
    generic_slide,
):
    with open_slide(generic_slide.path) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.dimensions == generic_slide.size_wh
        assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        assert slide.mpp == pytest.approx(0.25, abs=1e-12)
        assert slide.mpp_source == "tiff-resolution"
        assert slide.magnification == pytest.approx(40.0)  # 10 / 0.25, no objective power


def test_aperio_svs_reports_vendor_mpp_and_appmag(aperio_slide):
    with open_slide(aperio_slide.path) as slide:
        assert slide.vendor == "aperio"
        assert slide.properties["aperio.AppMag"] == "40"
        assert slide.mpp == pytest.approx(0.2525)
        assert slide.magnification == 40.0
        # x20 on a x40 scan is downsample 2, whatever the exact mpp: mpp recorded is 2 x scan's
        target = slide.resolution(magnification=20)
        assert target.downsample == 2.0 and target.mpp == pytest.approx(0.505)
        assert target.level == 1


@pytest.mark.parametrize(
    ("magnification", "level", "x", "y"),
    [(17, 1, 600, 500), (9, 2, 600, 500), (40, 0, 600, 500), (20, 1, 600, 500), (9, 2, 603, 501)],
)
def test_read_at_any_magnification_equals_resized_level0_region(
    generic_slide, magnification, level, x, y
):
    out = 128
    with open_slide(generic_slide.path) as slide:
        target = slide.resolution(magnification=magnification)
        assert target.level == level  # coarsest level at or above the target resolution
        tile = slide.read((x, y), (out, out), magnification=magnification)
        extent = out * 40 / magnification
        raw = openslide.OpenSlide(generic_slide.path)
        region = raw.read_region((x, y), 0, (round(extent), round(extent))).convert("RGB")
        raw.close()
    expected = resize(np.asarray(region), (out, out), anti_aliasing=True, preserve_range=True)
    difference = np.abs(tile.astype(float) - expected)
    assert tile.shape == (out, out, 3) and tile.dtype == np.uint8
    assert difference.mean() < 3.0
    assert np.percentile(difference, 95) < 12


def test_magnification_above_the_scans_is_refused(generic_slide):
    with open_slide(generic_slide.path) as slide, pytest.raises(InvalidOptionError, match="x40"):
        slide.read((0, 0), (64, 64), magnification=60)


def test_not_a_slide_and_truncated_slide_are_clear_errors(generic_slide, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.tif"):
        Slide(text)
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(generic_slide.path.read_bytes()[:3000])
    with pytest.raises((CorruptFileError, UnsupportedFormatError), match=r"cut\.tif"):
        Slide(truncated).read((0, 0), (512, 512))


def _plain_tiff(path, resolution=None):
    image = np.full((512, 512, 3), 200, np.uint8)
    kwargs = {"resolution": resolution, "resolutionunit": "CENTIMETER"} if resolution else {}
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", metadata=None, **kwargs)


def test_slide_without_mpp_or_magnification_names_the_flags_and_accepts_an_override(tmp_path):
    path = tmp_path / "bare.tif"
    _plain_tiff(path)
    with pytest.raises(MissingMetadataError, match="--mpp-of-scan or --magnification-of-scan"):
        Slide(path)
    slide = Slide(path, magnification=20)
    assert slide.mpp == 0.5 and slide.mpp_source == "magnification"
    assert Slide(path, mpp=0.3).magnification == pytest.approx(10 / 0.3)


def test_tiff_resolution_is_read_as_an_exact_rational(tmp_path):
    path = tmp_path / "rational.tif"
    _plain_tiff(path, resolution=((30000, 7), (30000, 7)))  # 30000/7 px per cm
    assert Slide(path).mpp == float(Fraction(10000 * 7, 30000))


class _BoundedSlide(openslide.ImageSlide):
    """An in-memory slide with OpenSlide bounds, as MIRAX or Hamamatsu files have."""

    @property
    def properties(self):
        return {
            openslide.PROPERTY_NAME_BOUNDS_X: "100",
            openslide.PROPERTY_NAME_BOUNDS_Y: "50",
            openslide.PROPERTY_NAME_BOUNDS_WIDTH: "300",
            openslide.PROPERTY_NAME_BOUNDS_HEIGHT: "200",
            openslide.PROPERTY_NAME_MPP_X: "0.5",
        }


def test_coordinates_start_at_the_bounds_corner_as_in_qupath():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (400, 500, 3), dtype=np.uint8)
    slide = Slide("memory.mrxs", handle=_BoundedSlide(Image.fromarray(pixels)))
    assert slide.dimensions == (300, 200) and slide.bounds_xy == (100, 50)
    np.testing.assert_array_equal(slide.read((10, 20), (30, 40)), pixels[70:110, 110:140])


def test_pool_reuses_open_slides_and_closes_the_least_recent(
    generic_slide, aperio_slide, monkeypatch
):
    monkeypatch.setattr(slides_module, "POOL_SIZE", 1)
    slides_module.close_pool()
    first = pooled_slide(generic_slide.path)
    assert pooled_slide(generic_slide.path) is first
    pooled_slide(aperio_slide.path)
    assert len(slides_module._POOL) == 1
    with pytest.raises(ctypes.ArgumentError, match="closed"):
        first.read((0, 0), (8, 8))  # closed when evicted
    slides_module.close_pool()


def test_thumbnail_read_in_bands_equals_one_read(generic_slide, monkeypatch):
    with open_slide(generic_slide.path) as slide:
        whole, downsample = slide.thumbnail(600)
        monkeypatch.setattr(slides_module, "BAND_PIXELS", 50_000)  # many small bands
        banded, same = slide.thumbnail(600)
    assert whole.shape == (450, 600, 3) and downsample == same
    assert np.abs(whole.astype(int) - banded).mean() < 1.0


def _level_rgb(path: object, level: int) -> np.ndarray:
    """A whole pyramid level read by OpenSlide itself, flattened over white (the truth)."""
    handle = openslide.OpenSlide(path)  # type: ignore[arg-type]
    rgba = np.asarray(handle.read_region((0, 0), level, handle.level_dimensions[level]))
    handle.close()
    return rgba[..., :3].copy()


def test_overview_reads_the_level_that_fits_without_resampling(generic_slide) -> None:  # type: ignore[no-untyped-def]
    # levels of the 4096 x 3072 slide at 0.25 um/px: 4096 (1x), 2048 (2x), 1024 (4x), 512 (8x)
    with open_slide(generic_slide.path) as slide:
        image, downsample = slide.overview(1500)  # finest level at most 1500 px: 1024 (4x)
        assert downsample == 4 and image.shape == (768, 1024, 3)
        np.testing.assert_array_equal(image, _level_rgb(generic_slide.path, 2))
        # coarsest level with pixels at most 1.5 um: 4x (1 um); 8x (2 um) is too coarse
        image, downsample = slide.overview(4096, mpp=1.5)
        assert downsample == 4 and image.shape == (768, 1024, 3)
        # pixels finer than any fitting level asks for: the finest that fits
        image, downsample = slide.overview(600, mpp=0.1)
        assert downsample == 8
        np.testing.assert_array_equal(image, _level_rgb(generic_slide.path, 3))
        # no level small enough: a resampled thumbnail of that size
        image, downsample = slide.overview(256)
        assert max(image.shape[:2]) == 256 and downsample == pytest.approx(16)


def test_read_into_a_given_array_gives_the_same_pixels(generic_slide) -> None:  # type: ignore[no-untyped-def]
    with open_slide(generic_slide.path) as slide:
        for magnification in (40, 15):  # a level read as it is, and a resampled one
            target = slide.resolution(magnification=magnification)
            expected = slide.read_at((1000.5, 900.0), (48, 40), target)
            out = np.zeros((2, 40, 48, 3), np.uint8)
            returned = slide.read_at((1000.5, 900.0), (48, 40), target, out[1])
            assert returned.base is out or returned is out[1] or np.shares_memory(returned, out)
            np.testing.assert_array_equal(out[1], expected)
            assert not out[0].any()
