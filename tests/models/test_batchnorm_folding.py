"""Folding BatchNorm into the preceding convolution changes nothing but the speed."""

from __future__ import annotations

import torch
from torch import nn

from oncoscope.models import create_model
from oncoscope.models.batchnorm_folding import fold_batch_norms


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))


def _count_norms(model: nn.Module) -> int:
    return sum(type(m) is nn.BatchNorm2d for m in model.modules())


def test_resnet_is_folded_and_gives_the_same_probabilities() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3).eval()
    _randomise_norms(model)
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    folded = fold_batch_norms(model, x[:1])
    assert _count_norms(model) == 20  # the original is untouched
    assert _count_norms(folded) == 0
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.softmax(1), expected.softmax(1), rtol=1e-4, atol=1e-5)


class _DataDependent(nn.Module):
    """A conv + BatchNorm whose forward branches on the data: FX cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.bn(self.conv(x)).mean((2, 3))
        return y if y.sum() > 0 else -y


def test_a_model_fx_cannot_trace_is_returned_as_it_is() -> None:
    model = _DataDependent()
    assert fold_batch_norms(model, torch.randn(1, 3, 8, 8)) is model
    assert not model.training


def test_norms_that_also_apply_an_activation_are_not_folded() -> None:
    # timm's BatchNormAct2d (a BatchNorm2d subclass with its activation inside) must stay:
    # replacing it by the convolution would drop the activation.
    model = create_model("efficientnet_lite0", num_classes=2).eval()
    assert fold_batch_norms(model, torch.randn(1, 3, 64, 64)) is model
