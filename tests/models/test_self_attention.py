from __future__ import annotations

import pytest
import torch

from oncoscope.models import create_model
from oncoscope.models.self_attention import LocalSelfAttention2d, SelfAttentionFrontEnd


@pytest.mark.parametrize("mode", ["pairwise", "patchwise"])
def test_attention_is_a_softmax_over_the_neighbourhood(mode):
    layer = LocalSelfAttention2d(8, kernel_size=5, mode=mode, groups=2)
    out = layer(torch.randn(2, 8, 12, 10))
    assert out.shape == (2, 8, 12, 10)
    attention = layer.last_attention
    assert attention.shape == (2, 2, 25, 12, 10)
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(2, 2, 12, 10))
    assert (attention >= 0).all()


def test_uniform_attention_averages_the_neighbourhood():
    layer = LocalSelfAttention2d(4, kernel_size=3, groups=1)
    for conv in (layer.gamma[-1],):  # zero logits -> uniform weights
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    torch.nn.init.eye_(layer.beta.weight.view(4, 4))
    torch.nn.init.zeros_(layer.beta.bias)
    layer.eval()
    x = torch.randn(1, 4, 9, 9)
    expected = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
    torch.testing.assert_close(layer(x), expected)
    received = layer.attention_map()
    torch.testing.assert_close(received[0, 1:-1, 1:-1], torch.ones(7, 7))  # away from the border


def test_front_end_starts_as_identity_and_gradients_reach_the_attention():
    front = SelfAttentionFrontEnd(in_chans=1, embed_chans=8, kernel_size=3)
    x = torch.randn(2, 1, 16, 16)
    y = front(x)
    assert (y - x).abs().max() < 1e-2 * x.abs().max()
    y.square().sum().backward()
    assert float(front.attend.gamma[0].weight.grad.abs().sum()) > 0
    assert float(front.project.weight.grad.abs().sum()) > 0


def test_sa_efficientnet_behaves_as_its_backbone_at_step_zero_and_shows_attention():
    torch.manual_seed(0)
    model = create_model(
        "sa_residual_efficientnet", num_classes=2, backbone="efficientnet_b0", kernel_size=3
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        direct = model.backbone(x)
        through = model(x)
    torch.testing.assert_close(through, direct, atol=5e-3, rtol=0)
    assert model.attention_map().shape == (2, 64, 64)
    assert model.pretrained_cfg["input_size"][0] == 3 and model.feature_info


def test_bad_attention_arguments():
    with pytest.raises(ValueError, match="odd"):
        LocalSelfAttention2d(8, kernel_size=4)
    with pytest.raises(ValueError, match="divisible"):
        LocalSelfAttention2d(6, groups=4)
