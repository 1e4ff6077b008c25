"""``smoothgrad``: the map peaks on the pixels the decision depends on, and is reproducible."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from oncoscope.explain.cam import explain_batch


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
