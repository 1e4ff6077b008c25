"""The stride-16 CAM model: where it is cut, and that its CAM is what its classifier averaged."""

from __future__ import annotations

import torch

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
