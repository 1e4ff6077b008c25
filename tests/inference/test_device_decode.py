"""JPEG tiles decoded where the model runs (``--decode device``), checked on the CPU.

On a CPU device the path runs torchvision's libjpeg-turbo in the model's process. The truth is
OpenSlide reading the same windows (its RGBA ``read_region`` over white), computed without
oncoscope's readers; libjpeg-turbo decodes the same streams to the same pixels, so tiles are
compared for equality. On a GPU nvJPEG may differ from libjpeg by a level or two (its IDCT and
chroma upsampling); that is measured when a GPU is lent, not asserted here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
import torch
from torchvision.io import decode_jpeg

from oncoscope.errors import InvalidOptionError
from oncoscope.inference.device_decode import resolve_decode, tiles_on_device
from oncoscope.inference.patches import TileDataset
from oncoscope.inference.slide_inference import SlideOptions, infer_slides
from oncoscope.io.slides import open_slide
from oncoscope.io.tiff_tiles import complete_jpeg
from oncoscope.pathology.synthetic import write_synthetic_slide

CPU = torch.device("cpu")
OPTIONS = SlideOptions(magnification=10, stride=0.5, precision="fp32", batch_size=8)


def _openslide_rgb(path: Path, xy: tuple[int, int], level: int, side: int) -> np.ndarray:
    handle = openslide.OpenSlide(path)
    rgba = np.asarray(handle.read_region(xy, level, (side, side))).astype(np.float64)
    handle.close()
    alpha = rgba[..., 3:] / 255
    return np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


@pytest.mark.parametrize("vendor", ["generic-tiff", "aperio"])
def test_tiles_decoded_on_the_device_are_openslides_tiles(tmp_path: Path, vendor: str) -> None:
    suffix = ".svs" if vendor == "aperio" else ".tif"
    path = write_synthetic_slide(
        tmp_path / f"odd{suffix}", (1000, 700), tile_px=256, vendor=vendor
    ).path
    side = 224
    with open_slide(path, mpp=0.25) as slide:
        for level in (0, 1):
            downsample = slide.level_downsamples[level]
            target = slide.resolution(mpp=0.25 * downsample)
            assert target.level == level
            w, h = slide.level_dimensions[level]
            corners = [(0, 0), (37, 101), (200, 180), (w - 100, h - 60), (-20, -30)]
            positions = np.array([(x * downsample, y * downsample) for x, y in corners])
            tiles = TileDataset(path, positions, side, target, slide=slide)
            encoded = tiles.read_encoded(np.arange(len(corners)))
            # each stored tile sent once, however many of the batch's tiles share it
            assert 0 < len(encoded.lengths) < len(encoded.placements)
            got = tiles_on_device(encoded, CPU).numpy()
            for slot, (x, y) in enumerate(corners):
                xy0 = (int(x * downsample), int(y * downsample))
                expected = _openslide_rgb(path, xy0, level, side)
                np.testing.assert_array_equal(got[slot], expected, err_msg=f"{level} {x} {y}")


def test_a_read_that_resizes_is_decoded_by_the_reader(tmp_path: Path) -> None:
    path = write_synthetic_slide(tmp_path / "s.tif", (1000, 700), tile_px=256).path
    with open_slide(path, mpp=0.25) as slide:
        target = slide.resolution(mpp=0.3)  # between levels: read from level 0 and resized
        positions = np.array([(0.0, 0.0), (100.0, 50.0)])
        tiles = TileDataset(path, positions, 64, target, slide=slide)
        encoded = tiles.read_encoded(np.arange(2))
        assert len(encoded.lengths) == 0  # nothing left to the device
        expected = np.empty((2, 64, 64, 3), np.uint8)
        tiles.read_into(np.arange(2), expected)
        np.testing.assert_array_equal(tiles_on_device(encoded, CPU).numpy(), expected)


def _abbreviated(stream: bytes) -> tuple[bytes, bytes]:
    """A whole JPEG split as TIFF stores it: the tables (DQT, DHT) in a stream of their own
    (the JPEGTables tag) and the tile without them."""
    tables, frame, at = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while stream[at : at + 2] != b"\xff\xda":  # up to the start of scan
        marker = stream[at + 1]
        length = int.from_bytes(stream[at + 2 : at + 4], "big")
        segment = stream[at : at + 2 + length]
        (tables if marker in (0xDB, 0xC4) else frame).append(segment)
        at += 2 + length
    return b"".join(tables) + b"\xff\xd9", b"".join(frame) + stream[at:]


def test_a_tile_stored_without_its_tables_decodes_with_them_merged_in() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    whole = imagecodecs.jpeg8_encode(image, level=80)
    tables, tile = _abbreviated(bytes(whole))
    assert b"\xff\xdb" not in tile[:200] and b"\xff\xc4" not in tile[:200]
    merged = complete_jpeg(tables, tile)
    assert merged is not None
    by_imagecodecs = imagecodecs.jpeg8_decode(tile, tables=tables)  # its own tables handling
    by_torchvision = decode_jpeg(torch.frombuffer(bytearray(merged), dtype=torch.uint8))
    np.testing.assert_array_equal(by_torchvision.permute(1, 2, 0).numpy(), by_imagecodecs)
    assert complete_jpeg(tables, tile[:-2]) is None  # cut short
    assert complete_jpeg(tables[:-2], tile) is None  # tables cut short


def test_a_run_decoding_on_the_device_gives_the_maps_of_the_reader_decoded_run(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    readers = infer_slides(colour_checkpoint, tray, tmp_path / "cpu", OPTIONS)
    for workers in (0, 2):
        options = replace(OPTIONS, decode="device", workers=workers)
        device = infer_slides(colour_checkpoint, tray, tmp_path / f"device{workers}", options)
        assert device.failures == [] and device.tiles == readers.tiles > 0
        for slide in tray:
            a = np.load(tmp_path / "cpu" / slide.stem / "probabilities.npy")
            b = np.load(tmp_path / f"device{workers}" / slide.stem / "probabilities.npy")
            np.testing.assert_array_equal(b, a)


def _garble_tiles(path: Path) -> None:
    """Keep each level-0 tile's start and end-of-image markers, zero what is between: a stream
    that passes for whole until a decoder reads its headers."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    with path.open("r+b") as handle:
        for offset, count in spans:
            handle.seek(offset + 2)
            handle.write(b"\x00" * (count - 4))


def test_a_slide_the_device_cannot_decode_fails_alone(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    broken = write_synthetic_slide(tmp_path / "garbled.tif", (1536, 1152)).path
    _garble_tiles(broken)
    slides = [tray[0], broken, tray[1]]
    options = replace(OPTIONS, magnification=40, stride=1.0, decode="device")
    report = infer_slides(colour_checkpoint, slides, tmp_path / "out", options)
    assert [o.slide for o in report.outcomes] == [tray[0], tray[1]]
    assert [path for path, _ in report.failures] == [str(broken)]
    assert not (tmp_path / "out" / "garbled").exists()


def test_decode_choices_are_checked(
    tray: list[Path], colour_checkpoint: Path, tmp_path: Path
) -> None:
    assert resolve_decode("auto", CPU) == "cpu"  # the readers decode on a CPU-only run
    assert resolve_decode("device", CPU) == "device"
    with pytest.raises(InvalidOptionError, match="--decode"):
        resolve_decode("gpu", CPU)
    with pytest.raises(InvalidOptionError, match="--decode"):
        infer_slides(colour_checkpoint, tray, tmp_path, replace(OPTIONS, decode="nvjpeg"))
    lightning = replace(OPTIONS, decode="device", devices=2)
    with pytest.raises(InvalidOptionError, match="--decode device"):
        infer_slides(colour_checkpoint, tray, tmp_path, lightning)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
