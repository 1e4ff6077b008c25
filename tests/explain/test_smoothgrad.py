"""``smoothgrad``: the map peaks on the pixels the decision depends on, and is reproducible."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from oncoscope.explain.cam import explain_batch
from oncoscope.explain.smoothgrad import smoothgrad_maps


class _ReadsOneSquare(nn.Module):
    """Two-class logits that depend only on the pixels of one square (rows and columns 40-55 of
    a 96-px image): (-s, s) with s the mean of the square times a weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 3.0 * torch.tanh(x[:, :, 40:56, 40:56].mean(dim=(1, 2, 3)))
        return torch.stack([-score, score], dim=1)


def test_the_map_peaks_inside_the_region_the_decision_reads() -> None:
    torch.manual_seed(0)
    images = torch.randn(3, 3, 96, 96)
    batch = explain_batch(_ReadsOneSquare(), images, "smoothgrad", targets=[1, 1, 0])
    assert batch.maps.shape == (3, 96, 96)
    assert batch.maps.min() >= 0 and np.allclose(batch.maps.max(axis=(1, 2)), 1.0)
    for one in batch.maps:
        row, col = np.unravel_index(one.argmax(), one.shape)
        assert 40 <= row < 56 and 40 <= col < 56
        assert one[:20, :20].max() < 0.05  # far from the square: (almost) nothing


def test_the_same_map_every_time_and_the_global_random_state_untouched() -> None:
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = explain_batch(_ReadsOneSquare(), images, "smoothgrad", targets=[1, 1]).maps
    assert torch.rand(1) == expected_next  # the noise came from its own seed
    second = explain_batch(_ReadsOneSquare(), images, "smoothgrad", targets=[1, 1]).maps
    np.testing.assert_array_equal(first, second)


def test_an_image_gets_the_same_map_alone_as_in_any_batch() -> None:
    # a model whose input gradient moves with the noise (ReLU, max pooling), so that a map made
    # with other noise than the image's own would differ (checked at the end)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(4),
        nn.Flatten(),
        nn.Linear(64, 2),
    )
    images = torch.randn(5, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    targets = [1, 0, 1, 1, 0]
    together = smoothgrad_maps(model, images, targets)
    for index in range(5):
        alone = smoothgrad_maps(model, images[index : index + 1], [targets[index]])[0]
        np.testing.assert_allclose(together[index], alone, atol=1e-5)
    order = [4, 2, 0, 3, 1]
    shuffled = smoothgrad_maps(model, images[order], [targets[i] for i in order])
    np.testing.assert_allclose(shuffled, together[order], atol=1e-5)
    other_noise = smoothgrad_maps(model, images, targets, seed=1)
    assert np.abs(other_noise - together).max() > 0.05
