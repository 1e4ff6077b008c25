"""The MIL models: a bag is a set (tile order does not matter), attention is a distribution,
and CLAM-SB's instance loss follows its pseudo-labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from oncoscope.errors import UnknownModelError
from oncoscope.mil.models import MIL_MODELS, ClamSB, create_mil_model


@pytest.mark.parametrize("name", MIL_MODELS)
def test_bag_prediction_ignores_tile_order_and_attention_sums_to_one(name: str) -> None:
    torch.manual_seed(0)
    model = create_mil_model(name, in_dim=6, num_classes=3).eval()
    features = torch.randn(11, 6)
    order = torch.randperm(11)
    with torch.no_grad():
        logits, attention = model(features)
        shuffled_logits, shuffled_attention = model(features[order])
    assert logits.shape == (1, 3) and attention.shape == (11,)
    torch.testing.assert_close(attention.sum(), torch.tensor(1.0))
    assert bool((attention > 0).all())
    torch.testing.assert_close(shuffled_logits, logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shuffled_attention, attention[order])


def test_clam_instance_loss_is_cross_entropy_on_top_and_bottom_k() -> None:
    torch.manual_seed(0)
    model = ClamSB(in_dim=4, num_classes=2, hidden=8, k_sample=2, dropout=0.0).eval()
    h = torch.randn(6, 8)
    attention = torch.tensor([0.05, 0.4, 0.1, 0.02, 0.3, 0.13])
    loss = model.auxiliary_loss(h, attention, target=1)
    head = model.instance_classifiers[1]
    # top-2 attention: tiles 1 and 4 are "positive"; bottom-2: tiles 3 and 0 "negative"
    inputs = head(h[[1, 4, 3, 0]])
    expected = 0.3 * F.cross_entropy(inputs, torch.tensor([1, 1, 0, 0]))
    assert loss is not None
    torch.testing.assert_close(loss, expected)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(UnknownModelError, match="abmil, clam_sb"):
        create_mil_model("transmil", 4, 2)
