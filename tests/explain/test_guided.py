"""``guided``: SmoothGrad where the class map points, not where the gradient is largest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from oncoscope.errors import InvalidOptionError
from oncoscope.explain.cam import explain_batch
from oncoscope.explain.guided import guided_maps

#: Rows and columns (of a 96-px image) of the two squares the model reads.
SQUARE_A = slice(16, 32)  # rows and columns 16-31: where the class map says "tumour"
SQUARE_B = slice(64, 80)  # rows and columns 64-79: read five times as strongly, against it


class _TwoSquares(nn.Module):
    """A class-map model on a stride-8 grid (12 x 12 cells of a 96-px image): feature 0 is the
    image's mean over each cell inside square A, feature 1 five times that inside square B;
    the tumour class weighs them +1 and -1, the healthy class 0; logits are the class map's
    mean. So the tumour score's gradient is five times larger on B, while the class map is
    positive on A and negative on B."""

    cam_origin_px = 3.5

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(2, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
            self.classifier.bias.zero_()
        cells = torch.zeros(2, 12, 12)
        cells[0, 2:4, 2:4] = 1.0  # square A: cells 2-3 (pixels 16-31)
        cells[1, 8:10, 8:10] = 5.0  # square B: cells 8-9 (pixels 64-79)
        self.register_buffer("cells", cells)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), 8)
        return pooled * self.cells

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.classifier(self.forward_features(x).permute(0, 2, 3, 1))
        return scores.mean(dim=(1, 2))


def _images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 1.0 + 0.1 * torch.randn(count, 1, 96, 96, generator=generator)


def _peak(heat: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(heat.argmax()), heat.shape)
    return int(row), int(col)


def test_the_guided_map_peaks_where_the_class_map_points_not_where_the_gradient_peaks():
    model, images = _TwoSquares(), _images(2)
    smooth = explain_batch(model, images, "smoothgrad", targets=[1, 1]).maps
    guided = explain_batch(model, images, "guided", targets=[1, 1])
    assert guided.maps.shape == (2, 96, 96)
    assert guided.maps.min() >= 0 and np.allclose(guided.maps.max(axis=(1, 2)), 1.0)
    for gradient_only, product in zip(smooth, guided.maps, strict=True):
        row, col = _peak(gradient_only)
        assert SQUARE_B.start <= row < SQUARE_B.stop and SQUARE_B.start <= col < SQUARE_B.stop
        row, col = _peak(product)
        assert SQUARE_A.start <= row < SQUARE_A.stop and SQUARE_A.start <= col < SQUARE_A.stop
        # square B, where the class map is below its median, is gone from the product
        assert product[SQUARE_B, SQUARE_B].max() == 0.0


def test_a_flat_class_map_leaves_the_smoothgrad_map():
    model, images = _TwoSquares(), _images(1)
    with torch.no_grad():
        model.classifier.weight.zero_()  # every cell scores the same
    smooth = explain_batch(model, images, "smoothgrad", targets=[1]).maps
    np.testing.assert_allclose(guided_maps(model, images, [1]), smooth, atol=1e-6)


def test_the_class_map_of_the_sa_cam_model_guides_its_maps():
    from oncoscope.models import create_model

    torch.manual_seed(0)
    model = create_model("sa_cam_efficientnet_lite0", num_classes=2, in_chans=1).eval()
    with torch.no_grad():
        model.classifier.weight.normal_()
    maps = explain_batch(model, torch.randn(2, 1, 64, 64), "guided", targets=[1, 0]).maps
    assert maps.shape == (2, 64, 64) and np.allclose(maps.max(axis=(1, 2)), 1.0)


def test_an_even_box_and_a_model_without_a_class_map_are_refused():
    with pytest.raises(ValueError, match="box_cells must be odd"):
        guided_maps(_TwoSquares(), _images(1), [1], box_cells=6)

    class _NoHead(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3))] * 2, dim=1)

    with pytest.raises(InvalidOptionError, match="method guided needs forward_features"):
        explain_batch(_NoHead(), _images(1), "guided", targets=[1])


def test_a_gradient_zero_everywhere_leaves_the_class_map_above_its_median():
    class _Flat(_TwoSquares):
        """The same class map, but logits that do not depend on the image."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 2) + 0.0 * x.sum()

    maps = guided_maps(_Flat(), _images(1), [1])[0]
    # the class map is positive on square A only; the 7-cell box spreads it into a plateau
    # over A's cells and three cells around them, so all of A is at the top
    np.testing.assert_allclose(maps[SQUARE_A, SQUARE_A], 1.0, rtol=1e-5)
    assert maps[SQUARE_B, SQUARE_B].max() == 0.0


def test_a_class_map_pointing_outside_the_foreground_leaves_smoothgrad_inside_it():
    # the body is the image's lower right part, away from square A where the class map points
    # (the 7-cell box spreads A's cells 2-3 over cells 0-6, pixels 0-55): as on a tumour slice
    # the model calls healthy, whose class map is highest in the air around the patient
    model, images = _TwoSquares(), _images(1)
    body = np.zeros((1, 96, 96), dtype=bool)
    body[0, 56:, 56:] = True
    maps = guided_maps(model, images, [1], foreground=body)[0]
    assert maps[~body[0]].max() == 0.0
    smooth = explain_batch(model, images, "smoothgrad", targets=[1]).maps[0] * body[0]
    np.testing.assert_allclose(maps, smooth / smooth.max(), atol=1e-6)
    row, col = _peak(maps)
    assert SQUARE_B.start <= row < SQUARE_B.stop and SQUARE_B.start <= col < SQUARE_B.stop
    # a foreground holding the whole image changes nothing; one of another shape is refused
    everywhere = np.ones((1, 96, 96), dtype=bool)
    np.testing.assert_array_equal(
        guided_maps(model, images, [1], foreground=everywhere), guided_maps(model, images, [1])
    )
    with pytest.raises(ValueError, match="foreground of shape"):
        guided_maps(model, images, [1], foreground=everywhere[:, :48])


def test_a_foreground_cuts_the_product_where_it_leaves_the_image_and_keeps_the_rest():
    # the foreground holds the left 40 columns: part of square A's plateau (pixels 0-55)
    model, images = _TwoSquares(), _images(1)
    body = np.zeros((1, 96, 96), dtype=bool)
    body[0, :, :40] = True
    unrestricted = guided_maps(model, images, [1])[0]
    maps = guided_maps(model, images, [1], foreground=body)[0]
    assert maps[:, 40:].max() == 0.0
    kept = unrestricted * body[0]
    np.testing.assert_allclose(maps, kept / kept.max(), atol=1e-6)
    row, col = _peak(maps)
    assert SQUARE_A.start <= row < SQUARE_A.stop and SQUARE_A.start <= col < SQUARE_A.stop
