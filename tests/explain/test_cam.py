"""CAM maps: per-image targets, plain CAM by hand, hooks released, layers from feature_info."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oncoscope.errors import InvalidOptionError
from oncoscope.explain.cam import METHODS, explain_batch, plain_cam
from oncoscope.explain.layers import target_layers
from oncoscope.models import create_model
from tests.explain.conftest import TinyGapNet, hooks_left

BRIGHT_DARK = TinyGapNet([1.0, -1.0], [[1.0, 0.0], [0.0, 1.0]])


def bright_left_dark_right() -> torch.Tensor:
    """An 8x8 image: +1 block on the left (class 0's evidence), -1 block on the right."""
    image = torch.zeros(1, 8, 8)
    image[:, 2:5, 1:3] = 1.0
    image[:, 3:6, 5:7] = -1.0
    return image


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "cam"])
def test_each_image_of_a_batch_is_explained_for_its_own_target(method):
    batch = torch.stack([bright_left_dark_right()] * 2)
    result = explain_batch(BRIGHT_DARK, batch, method, targets=[0, 1])
    assert result.targets == [0, 1]
    # class 0 looks at the bright block, class 1 at the dark block
    np.testing.assert_allclose(result.maps[0][2:5, 1:3], 1.0, atol=1e-5)
    np.testing.assert_allclose(result.maps[1][3:6, 5:7], 1.0, atol=1e-5)
    assert result.maps[0][:, 4:].max() < 1e-5 and result.maps[1][:, :4].max() < 1e-5


def test_default_target_is_each_images_prediction():
    image = bright_left_dark_right()
    batch = torch.stack([image, -image])  # the second image's evidence is reversed
    result = explain_batch(BRIGHT_DARK, batch, "gradcam")
    # image 0: bright area 6 px, dark 6 px -> tie broken by argmax (class 0); make it unequal
    assert result.targets == [int(p) for p in result.probs.argmax(axis=1)]
    assert result.probs.shape == (2, 2) and np.allclose(result.probs.sum(axis=1), 1.0)


def test_plain_cam_equals_weights_times_feature_map():
    model = TinyGapNet([2.0, 0.5, -1.0], [[0.3, -0.2, 0.7], [1.0, 0.4, -0.5]])
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 8 - 1
    x = image[0, 0].numpy()
    channels = np.stack([np.maximum(2 * x, 0), np.maximum(0.5 * x, 0), np.maximum(-x, 0)])
    for target, weights in enumerate(([0.3, -0.2, 0.7], [1.0, 0.4, -0.5])):
        expected = np.maximum(np.tensordot(np.array(weights), channels, axes=1), 0)
        got = plain_cam(model, image, [target])[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class EveryFourthPixel(TinyGapNet):
    """Feature cell ``(i, j)`` reads input pixel ``(4i, 4j)`` only, so it is centred there."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(x)[:, :, ::4, ::4]


def test_a_model_stating_its_feature_grid_gets_its_cam_where_its_cells_read():
    model = EveryFourthPixel([1.0], [[1.0], [-1.0]])
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, 12, 20] = 1.0  # read by cell (3, 5) only
    model.cam_origin_px = 0.0
    heat = explain_batch(model, image, "cam", targets=[0]).maps[0]
    assert np.unravel_index(np.argmax(heat), heat.shape) == (12, 20)
    # bilinear between cell centres 4 px apart: half way at 2 px, nothing at the next cell
    np.testing.assert_allclose(
        [heat[12, 22], heat[10, 20], heat[12, 24], heat[16, 20]], [0.5, 0.5, 0.0, 0.0], atol=1e-6
    )
    del model.cam_origin_px  # an image resize puts the cell's value on pixels 12..15 instead
    resized = explain_batch(model, image, "cam", targets=[0]).maps[0]
    assert np.unravel_index(np.argmax(resized), resized.shape) in {
        (13, 21),
        (13, 22),
        (14, 21),
        (14, 22),
    }


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_hooks_are_released_after_every_batch(method):
    model = create_model("simple_cnn", num_classes=2, in_chans=1, input_size=16, channels=(4, 4))
    images = torch.rand(3, 1, 16, 16)
    for _ in range(3):
        explain_batch(model, images, method, layers=["features.2", "features.6"])
        assert hooks_left(model) == 0
        assert all(p.grad is None for p in model.parameters())


def test_hooks_are_released_when_the_explainer_fails():
    with pytest.raises(InvalidOptionError, match="target class"):
        explain_batch(BRIGHT_DARK, torch.zeros(1, 1, 8, 8), "gradcam", targets=[5])
    assert hooks_left(BRIGHT_DARK) == 0


def test_layers_come_from_feature_info_and_can_be_named_or_earlier():
    model = create_model("simple_cnn", num_classes=2, in_chans=1, input_size=16, channels=(4, 4))
    assert [n for n, _ in target_layers(model)] == ["features.6"]
    assert [n for n, _ in target_layers(model, stage=-2)] == ["features.2"]
    with pytest.raises(InvalidOptionError, match=r"did you mean features\.2"):
        target_layers(model, ["features.22"])
    with pytest.raises(InvalidOptionError, match="out of range"):
        target_layers(model, stage=5)
    earlier = explain_batch(model, torch.rand(2, 1, 16, 16), "gradcam", stage=-2)
    assert earlier.layer == "features.2" and earlier.maps.shape == (2, 16, 16)


def test_sa_efficientnet_layers_and_its_own_attention_map():
    model = create_model(
        "sa_efficientnet",
        num_classes=2,
        in_chans=1,
        backbone="test_efficientnet",
        feed_stage=2,
        widths=(8, 16),
        depths=(1, 1),
        kernel_sizes=(3, 3),
    )
    name, module = target_layers(model)[0]
    assert name.startswith("backbone.") and dict(model.named_modules())[name] is module
    for method in ("attention", "gradcam"):
        result = explain_batch(model, torch.rand(2, 1, 32, 32), method)
        assert result.maps.shape == (2, 32, 32)
        assert result.maps.min() >= 0.0 and result.maps.max() <= 1.0 + 1e-6
    assert hooks_left(model) == 0


def test_methods_a_model_cannot_use_are_clear_errors():
    cnn = create_model("simple_cnn", num_classes=2, in_chans=1, input_size=16, channels=(4, 4))
    with pytest.raises(InvalidOptionError, match="use gradcam"):
        explain_batch(cnn, torch.rand(1, 1, 16, 16), "cam")
    with pytest.raises(InvalidOptionError, match="sa_efficientnet"):
        explain_batch(cnn, torch.rand(1, 1, 16, 16), "attention")
    with pytest.raises(InvalidOptionError, match="unknown method"):
        explain_batch(cnn, torch.rand(1, 1, 16, 16), "gradcam+++")
    assert "scorecam" in METHODS
