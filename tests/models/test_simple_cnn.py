from __future__ import annotations

import pytest
import torch
from torch import nn

from oncoscope.models.simple_cnn import SimpleCNN


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_every_primer_hyperparameter_shapes_the_network(activation, pooling):
    model = SimpleCNN(
        num_classes=4,
        in_chans=1,
        input_size=48,
        channels=(6, 12),
        kernel_size=5,
        stride=1,
        padding=2,
        pooling=pooling,
        pool_size=2,
        activation=activation,
        hidden=(32, 16),
        dropout=0.25,
        batch_norm=False,
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [6, 12]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    pool_type = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
    assert sum(isinstance(m, pool_type) for m in model.modules()) == 2
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    # 48 -> 24 -> 12 after two 2x2 poolings: 12 * 12 * 12 inputs to the first FC layer
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(1728, 32), (32, 16), (16, 4)]
    assert all(d.p == 0.25 for d in model.modules() if isinstance(d, nn.Dropout))
    expected_act = {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
    }[activation]
    assert sum(isinstance(m, expected_act) for m in model.modules()) == 4
    assert model(torch.randn(3, 1, 48, 48)).shape == (3, 4)


def test_stride_shrinks_the_maps():
    model = SimpleCNN(input_size=64, channels=(4,), stride=2, padding=1, hidden=())
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 16, 16)


def test_bad_primer_settings_are_refused():
    with pytest.raises(ValueError, match="activation"):
        SimpleCNN(activation="swish")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shrinks"):
        SimpleCNN(input_size=8, channels=(4, 4, 4, 4))


@pytest.mark.parametrize("global_pool", ["max", "avg", "lse"])
def test_global_pool_scores_every_position_and_pools_them(global_pool):
    torch.manual_seed(0)
    model = SimpleCNN(2, 1, input_size=64, channels=(4, 8), hidden=(6,), global_pool=global_pool)
    model.eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)  # (B, 6, 16, 16): hidden layer at every position
        linear = model.get_classifier()
        scores = torch.einsum("kc,bchw->bkhw", linear.weight, features) + linear.bias[:, None, None]
        logits = model(x)
    assert features.shape == (3, 6, 16, 16)
    flat = scores.flatten(2)
    low, high = flat.mean(-1), flat.amax(-1)
    expected = {"max": high, "avg": low}.get(global_pool)
    if expected is not None:
        torch.testing.assert_close(logits, expected)
    else:  # log-sum-exp lies between the mean and the maximum
        assert bool((logits >= low - 1e-5).all() and (logits <= high + 1e-5).all())


def test_global_pool_keeps_location_within_the_receptive_field():
    torch.manual_seed(0)
    model = SimpleCNN(2, 1, input_size=64, channels=(4, 8), global_pool="max", hidden=())
    model.eval()
    x = torch.zeros(1, 1, 64, 64)
    y = x.clone()
    y[0, 0, 2:6, 2:6] = 5.0  # a bright spot in the top-left corner
    with torch.no_grad():
        change = (model.forward_features(y) - model.forward_features(x)).abs().sum(1)[0]
    # two 3x3 conv + 2x2 pool blocks: a position's receptive field is 10 px wide, at stride 4
    assert change[0, 0] > 0
    assert torch.all(change[4:, :] == 0) and torch.all(change[:, 4:] == 0)


def test_unknown_global_pool_is_refused():
    with pytest.raises(ValueError, match="global_pool"):
        SimpleCNN(global_pool="median")  # type: ignore[arg-type]
