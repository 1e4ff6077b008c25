from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from skimage.data import immunohistochemistry

from oncoscope.errors import InvalidOptionError
from oncoscope.pathology.stain import StainAugment, StainNormalizer


@pytest.fixture(scope="module")
def tiles():
    """A real stained image (scikit-image's IHC sample): a target tile and the same tile
    re-stained, so the truth after normalisation is the target itself."""
    image = immunohistochemistry()
    target = image[:256, :256]
    source = target.astype(np.float64)
    # a different stain: stronger brown, bluer counterstain, brighter glass
    source = np.clip(source * np.array([0.8, 0.95, 1.15]) + 10, 0, 255).astype(np.uint8)
    return target, source


def _lab_stats(rgb):
    lab = rgb2lab(rgb).reshape(-1, 3)
    return np.concatenate([lab.mean(axis=0), lab.std(axis=0)])


def _optical_density_stats(rgb):
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / 256)
    tissue = od[(od > 0.15).any(axis=1)]
    return np.concatenate([tissue.mean(axis=0), np.percentile(tissue, 99, axis=0)])


@pytest.mark.parametrize(
    ("method", "stats"), [("reinhard", _lab_stats), ("macenko", _optical_density_stats)]
)
def test_normalised_tile_moves_to_the_targets_stain_statistics(tiles, method, stats):
    target, source = tiles
    normalised = StainNormalizer(method).fit(target)(source)
    assert normalised.shape == source.shape and normalised.dtype == np.uint8
    before = np.linalg.norm(stats(source) - stats(target))
    after = np.linalg.norm(stats(normalised) - stats(target))
    assert after < 0.6 * before
    error_before = np.abs(source.astype(float) - target).mean()
    assert np.abs(normalised.astype(float) - target).mean() < 0.6 * error_before


def test_unknown_method_is_refused():
    with pytest.raises(InvalidOptionError, match="macenko, reinhard"):
        StainNormalizer("vahadane")


def test_stain_augmentation_is_seeded_changes_stain_and_keeps_the_input_kind(tiles):
    _, source = tiles
    first = StainAugment(sigma1=0.3, sigma2=0.3, seed=5)(source)
    again = StainAugment(sigma1=0.3, sigma2=0.3, seed=5)(source)
    other = StainAugment(sigma1=0.3, sigma2=0.3, seed=6)(source)
    assert first.shape == source.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1
    tensor = torch.from_numpy(source).permute(2, 0, 1).float() / 255
    out = StainAugment(seed=1)(tensor)
    assert out.shape == tensor.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    blank = np.full((32, 32, 3), 255, np.uint8)
    np.testing.assert_array_equal(StainAugment(seed=0)(blank), blank)  # nothing to estimate
