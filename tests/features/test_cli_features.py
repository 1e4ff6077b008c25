"""``oncoscope features``: bags over the tiles ``slide`` classifies, with the model's own
penultimate features; re-runs, bad slides among good ones."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import openslide
import pytest
import torch
from torchvision.transforms.functional import InterpolationMode, resize
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.features import extract as extract_module
from oncoscope.features.bags import read_bag
from oncoscope.inference.patches import TileDataset
from oncoscope.io.atomic import atomic_path
from oncoscope.models.spec import ModelSpec
from oncoscope.pathology.synthetic import write_synthetic_slide
from oncoscope.train.checkpoint import load_model

from .conftest import RESNET_PX, resnet_model


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["features", *map(str, args)])
    return result.exit_code, result.output


def _read_level(slide: Path, xy: tuple[int, int], level: int, side: int) -> np.ndarray:
    """The tile as OpenSlide reads it from a pyramid level (no resampling)."""
    with openslide.OpenSlide(str(slide)) as handle:
        region = handle.read_region(xy, level, (side, side)).convert("RGB")
    return np.asarray(region)


def _penultimate(model: torch.nn.Module, tiles: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Pre-logits features of uint8 ``(n, H, W, 3)`` tiles, by hand: 0..1, mean/std, fp32."""
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        features: torch.Tensor = model.forward_head(model.forward_features(x), pre_logits=True)
    return features.numpy()


def test_bag_coords_are_the_tiles_slide_classifies(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same checkpoint, resolution and stride: the bag holds one row per tile ``slide`` reads,
    at the level-0 place ``slide`` reads it, in the same order."""
    read: list[np.ndarray] = []
    original = TileDataset.read_into

    def recording(self: TileDataset, indices: np.ndarray, out: np.ndarray) -> None:
        read.append(self.positions[indices].copy())
        original(self, indices, out)

    monkeypatch.setattr(TileDataset, "read_into", recording)
    options = ("--magnification", "10", "--stride", "0.5", "--precision", "fp32")
    maps = ["slide", str(colour_checkpoint), str(small_slide), "--out", str(tmp_path / "maps")]
    result = CliRunner().invoke(app, [*maps, *options])
    assert result.exit_code == 0, result.output
    classified = np.concatenate(read)
    code, output = _run(colour_checkpoint, small_slide, "--out", tmp_path / "bags", *options)
    assert code == 0, output
    features, coords, info = read_bag(tmp_path / "bags" / "small.h5")
    attrs = info.attrs
    assert len(classified) > 20
    np.testing.assert_array_equal(coords, np.rint(classified).astype(np.int64))
    assert coords.dtype == np.int64 and features.dtype == np.float32
    assert features.shape == (len(coords), 3)  # the colour model's pooled colour channels
    # x10 on an x40 scan: 32-px tiles cover 128 level-0 px, stepped by half a tile
    assert (attrs["tile_px"], attrs["tile_px_level0"], attrs["stride_px"]) == (32, 128, 16)
    assert attrs["mpp"] == pytest.approx(1.0) and attrs["magnification"] == pytest.approx(10.0)
    assert attrs["slide"] == str(small_slide)
    assert attrs["encoder"].startswith("checkpoint:")
    assert attrs["encoder_spec"]["feature_dim"] == 3
    assert attrs["encoder_spec"]["image_size"] == 32
    assert attrs["oncoscope_version"]
    assert set(np.unique(coords % 64)) == {0}  # a 16-px step at x10 is 64 level-0 px


def test_features_are_the_checkpoints_penultimate_output(
    small_slide: Path, resnet_checkpoint: Path, tmp_path: Path
) -> None:
    """A ResNet with BatchNorm (folded for speed by ``features``): each row equals the
    unfolded model's pre-logits output on the tile read straight from the x10 pyramid level.
    The resolution is the checkpoint's training one (x10) when none is given."""
    code, output = _run(resnet_checkpoint, small_slide, "--out", tmp_path, "--precision", "fp32")
    assert code == 0, output
    features, coords, info = read_bag(tmp_path / "small.h5")
    attrs = info.attrs
    assert attrs["magnification"] == pytest.approx(10.0)
    model, spec = load_model(resnet_checkpoint)
    chosen = [0, len(coords) // 2, len(coords) - 1]
    tiles = np.stack(
        [_read_level(small_slide, tuple(coords[i]), 2, RESNET_PX) for i in chosen]
    )  # level 2 of the x40/x20/x10/x5 pyramid is x10
    expected = _penultimate(model, tiles, spec)
    assert features.shape[1] == expected.shape[1] == 96  # test_resnet: 96 channels
    np.testing.assert_allclose(features[chosen], expected, atol=1e-4, rtol=1e-4)


def test_timm_model_with_a_weights_file_and_resized_tiles(
    small_slide: Path, tmp_path: Path
) -> None:
    """A timm name with ``--weights``: 48-px tiles are resized (bilinear, antialiased) to the
    model's 160-px input; the rows equal the model on torchvision's resize of the tiles read
    from the x10 pyramid level."""
    model = resnet_model()
    weights = tmp_path / "resnet.pth"
    torch.save(model.state_dict(), weights)
    code, output = _run(
        "test_resnet", small_slide, "--weights", weights, "--out", tmp_path / "bags",
        "--magnification", "10", "--tile-px", "48", "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, output
    features, coords, info = read_bag(tmp_path / "bags" / "small.h5")
    attrs = info.attrs
    assert attrs["tile_px"] == 48 and attrs["tile_px_level0"] == 192
    spec = attrs["encoder_spec"]
    assert spec["image_size"] == 160 and spec["weights"] == str(weights)
    assert attrs["encoder"].startswith("timm:test_resnet:")
    chosen = [0, len(coords) - 1]
    tiles = np.stack([_read_level(small_slide, tuple(coords[i]), 2, 48) for i in chosen])
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["std"]).view(
        1, 3, 1, 1
    )
    x = resize(x, [160, 160], InterpolationMode.BILINEAR, antialias=True)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(features[chosen], expected, atol=1e-4, rtol=1e-4)


def test_reruns_skip_the_same_settings_and_redo_others(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bags"
    args = (colour_checkpoint, small_slide, "--out", out, "--magnification", "10")
    code, output = _run(*args)
    assert code == 0, output
    bag = out / "small.h5"
    stamp = bag.stat().st_mtime_ns
    tiles = len(read_bag(bag)[1])

    code, output = _run(*args)
    assert code == 0 and "already done, skipped" in output
    assert bag.stat().st_mtime_ns == stamp

    code, output = _run(*args, "--stride", "0.5", "--on-mismatch", "error")
    assert code == 2 and "stride 1.0 -> 0.5" in output
    assert bag.stat().st_mtime_ns == stamp

    code, output = _run(*args, "--stride", "0.5")
    assert code == 0 and "(stride 1.0 -> 0.5); redone" in output
    assert len(read_bag(bag)[1]) > 2 * tiles  # half-tile steps: about four times the tiles
    assert not list(out.glob(".*"))  # no work folder or temporary file left


def test_a_file_not_made_by_features_is_not_overwritten(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    with h5py.File(tmp_path / "small.h5", "w") as store:
        store["features"] = np.zeros((2, 4), np.float32)
        store["coords"] = np.zeros((2, 2), np.int64)
    args = (colour_checkpoint, small_slide, "--out", tmp_path, "--magnification", "10")
    code, output = _run(*args)
    assert code == 2 and "not made by oncoscope features" in output
    assert read_bag(tmp_path / "small.h5", required=())[0].shape == (2, 4)
    code, output = _run(*args, "--overwrite")
    assert code == 0, output
    assert read_bag(tmp_path / "small.h5")[0].shape[1] == 3


def test_bad_slides_are_reported_and_the_good_ones_done(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(small_slide, slides / "good.tif")
    (slides / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    write_synthetic_slide(slides / "blank.tif", (1024, 768), regions=[])
    out = tmp_path / "out"
    code, output = _run(colour_checkpoint, slides, "--out", out, "--magnification", "10")
    assert code == 2, output
    assert "2 slide(s) failed" in output
    assert "corrupt.tif" in output and "blank.tif: no tissue" in output
    assert sorted(p.name for p in out.iterdir()) == ["good.h5"]


def test_a_full_disk_stops_the_batch_naming_the_bag_and_leaves_nothing_half_written(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in "abc":
        shutil.copy(small_slide, slides / f"{name}.tif")
    out = tmp_path / "out"
    write_bag = extract_module.write_bag

    def full_at_b(path: Path, *args: Any, **kwargs: Any) -> Path:
        if path.name != "b.h5":
            return write_bag(path, *args, **kwargs)
        with atomic_path(path) as temporary:  # half a file, then the disk is full
            temporary.write_bytes(b"\x89HDF" + b"\x00" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(extract_module, "write_bag", full_at_b)
    args = (colour_checkpoint, slides, "--out", out, "--magnification", "10", "--precision", "fp32")
    code, output = _run(*args)
    assert code == 2, output
    assert f"error: {out / 'b.h5'}: No space left on device" in output
    assert "nothing of b.tif was kept" in output
    assert f"not done: {slides / 'c.tif'}" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in out.iterdir()) == ["a.h5"]  # no b, no work files

    monkeypatch.setattr(extract_module, "write_bag", write_bag)  # space freed: resume
    code, output = _run(*args)
    assert code == 0, output
    assert "a.tif: already done, skipped" in output
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "c.h5"]


def test_bf16_is_checked_against_fp32_by_cosine_similarity(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    code, output = _run(
        colour_checkpoint, small_slide, "--out", tmp_path, "--magnification", "10",
        "--precision", "bf16", "--agreement-tiles", "8",
    )  # fmt: skip
    assert code == 0, output
    summary = read_bag(tmp_path / "small.h5")[2].attrs["summary"]
    assert summary["precision"] == "bf16"
    check = summary["precision_agreement"]
    assert check["tiles"] == 8
    assert 0.99 < check["cosine_min"] <= check["cosine_mean"] <= 1.0 + 1e-9
    assert "fp32 cosine min" in output


def _features_in_processes(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m oncoscope features ARGS --devices 2 --accelerator cpu``: Lightning starts a
    second process (gloo)."""
    command = [sys.executable, "-m", "oncoscope", "features", *map(str, args)]
    return subprocess.run(
        [*command, "--devices", "2", "--accelerator", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_processes_share_the_slides_and_give_the_single_process_bags(
    small_slide: Path, colour_checkpoint: Path, tmp_path: Path
) -> None:
    """``--devices 2``: each slide is encoded by one of the two ranks, both ranks work, every
    bag equals the one-process bag, and only rank 0 speaks. A re-run after a bag is lost (a
    lost node) encodes only that slide."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(small_slide, slides / f"{name}.tif")
    common = [colour_checkpoint, slides, "--magnification", "10", "--precision", "fp32"]
    common += ["--stride", "0.5"]
    code, output = _run(*common, "--out", tmp_path / "one")
    assert code == 0, output
    done = _features_in_processes(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # two processes really ran
    ranks = []
    for name in ("a", "b", "c"):
        assert done.stdout.count(f"{name}.tif:") == 1, done.stdout
        single, single_coords, _ = read_bag(tmp_path / "one" / f"{name}.h5")
        distributed, coords, info = read_bag(tmp_path / "two" / f"{name}.h5")
        np.testing.assert_array_equal(coords, single_coords)
        np.testing.assert_allclose(distributed, single, rtol=1e-5, atol=1e-6)
        assert info.attrs["summary"]["world_size"] == 2
        ranks.append(info.attrs["summary"]["rank"])
    assert sorted(ranks) in ([0, 0, 1], [0, 1, 1])  # each slide on one rank, both ranks used
    assert not list((tmp_path / "two").glob(".*"))

    (tmp_path / "two" / "b.h5").unlink()
    again = _features_in_processes(*common, "--out", tmp_path / "two")
    assert again.returncode == 0, again.stderr[-2000:]
    said = " ".join(again.stdout.split())
    assert "a.tif: already done, skipped" in said and "c.tif: already done, skipped" in said
    assert said.count("b.tif:") == 1 and "b.tif: already" not in said, said
    redone, _, info = read_bag(tmp_path / "two" / "b.h5")
    single = read_bag(tmp_path / "one" / "b.h5")[0]
    np.testing.assert_allclose(redone, single, rtol=1e-5, atol=1e-6)
    assert info.attrs["summary"]["rank"] == 0  # the one missing slide is dealt to rank 0
