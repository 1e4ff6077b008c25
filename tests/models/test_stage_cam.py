"""The stride-16 CAM model: where it is cut, and that its CAM is what its classifier averaged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oncoscope.errors import OncoscopeError
from oncoscope.explain.cam import plain_cam
from oncoscope.models.registry import create_model


def test_the_backbone_is_cut_at_stride_16_and_loads_the_packaged_imagenet_weights():
    torch.manual_seed(0)
    model = create_model("cam_efficientnet_lite0", num_classes=2, pretrained=True, in_chans=1)
    features = model.forward_features(torch.zeros(1, 1, 224, 224))
    assert tuple(features.shape) == (1, 112, 14, 14)  # EfficientNet-Lite0's stride-16 stage
    random = create_model("cam_efficientnet_lite0", num_classes=2, pretrained=False, in_chans=1)
    # the stem's ImageNet filters (summed over RGB for one channel) differ from a random init
    assert not torch.allclose(
        model.state_dict()["backbone.conv_stem.weight"],
        random.state_dict()["backbone.conv_stem.weight"],
    )


def test_the_cam_averaged_over_positions_is_the_classifiers_logit_less_its_bias():
    torch.manual_seed(0)
    model = create_model("cam_efficientnet_lite0", num_classes=2, in_chans=1, stage=2).eval()
    images = torch.randn(3, 1, 96, 96)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)
    assert features.shape[-1] == 12  # stage 2: stride 8
    weights = model.get_classifier().weight.detach()
    # by hand: the class score at every position, then the mean over positions
    by_hand = torch.einsum("kc,bchw->bkhw", weights, features).mean(dim=(2, 3))
    torch.testing.assert_close(by_hand + model.get_classifier().bias.detach(), logits)
    cam = plain_cam(model, images, [1, 1, 1])  # clamped at 0, so its mean bounds the score
    assert cam.shape == (3, 12, 12)
    assert (cam.mean(axis=(1, 2)) >= by_hand[:, 1].numpy() - 1e-5).all()


def _class_map_by_hand(model, features):
    """``w_k . A[:, i, j] + b_k`` at every position, from the classifier's parameters."""
    classifier = model.get_classifier()
    weights, bias = classifier.weight.detach(), classifier.bias.detach()
    return torch.einsum("kc,bchw->bkhw", weights, features) + bias[None, :, None, None]


@pytest.mark.parametrize("pool", ["lse", "max"])
def test_a_location_keeping_head_pools_the_class_map_it_exposes(pool):
    torch.manual_seed(0)
    model = create_model(
        "cam_efficientnet_lite0", num_classes=2, in_chans=1, output_stride=8, pool=pool
    ).eval()
    images = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)
        exposed = model.class_map(features)
    assert tuple(features.shape) == (2, 112, 12, 12)  # the stride-16 stage on a stride-8 grid
    scores = _class_map_by_hand(model, features).double()
    torch.testing.assert_close(exposed.double(), scores, rtol=1e-5, atol=1e-5)
    flat = scores.flatten(2)
    if pool == "max":
        expected = flat.max(dim=-1).values
    else:  # (1/r) log mean exp(r s), written out
        r = 5.0
        expected = torch.log(torch.exp(r * flat).mean(dim=-1)) / r
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits.double(), flat.mean(dim=-1))  # not the mean
    # the plain CAM is the class map of the explained class, less its bias, clamped at 0
    cam = torch.from_numpy(plain_cam(model, images, [1, 0]))
    bias = model.get_classifier().bias.detach()
    for b, k in enumerate((1, 0)):
        torch.testing.assert_close(
            cam[b].double(), (scores[b, k] - bias[k]).clamp(min=0), rtol=1e-4, atol=1e-4
        )


def test_gradients_reach_the_backbone_through_the_pooled_class_map():
    torch.manual_seed(0)
    model = create_model("cam_efficientnet_lite0", num_classes=2, in_chans=1, pool="lse")
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 64, 64)), torch.tensor([0, 1]))
    loss.backward()
    for name in ("backbone.conv_stem.weight", "classifier.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_an_unknown_pooling_is_an_error_naming_the_backbone():
    with pytest.raises(OncoscopeError, match="efficientnet_lite0: pool must be"):
        create_model("cam_efficientnet_lite0", num_classes=2, in_chans=1, pool="median")


def test_two_stages_give_the_fine_stage_beside_the_coarse_one_on_its_grid():
    def make(**kwargs):  # the same packaged ImageNet weights in each, in eval mode
        return create_model("cam_efficientnet_lite0", 2, True, in_chans=1, **kwargs).eval()

    fine_only, coarse_only, both = make(stage=2), make(), make(fine_stage=2)
    images = torch.randn(1, 1, 96, 96)
    with torch.no_grad():
        fine = fine_only.forward_features(images)  # (1, 40, 12, 12), stride 8
        coarse = coarse_only.forward_features(images)  # (1, 112, 6, 6), stride 16
        joined = both.forward_features(images)
    assert tuple(joined.shape) == (1, 152, 12, 12)
    assert both.get_classifier().in_features == 152
    torch.testing.assert_close(joined[:, :40], fine)
    # coarse cell j is centred where fine cell 2j is; fine cell 2j+1 lies half way between
    torch.testing.assert_close(joined[:, 40:, ::2, ::2], coarse)
    torch.testing.assert_close(joined[:, 40:, 2, 3], (coarse[:, :, 1, 1] + coarse[:, :, 1, 2]) / 2)
    torch.testing.assert_close(joined[:, 40:, 11, 11], coarse[:, :, 5, 5])  # past the last cell
