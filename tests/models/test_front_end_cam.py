"""The localising SA model: a class map on the front end's stride-8 output, pooled into the
logits, with side class maps that training adds to the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from oncoscope.errors import OncoscopeError
from oncoscope.models import create_model
from oncoscope.models.class_heads import class_heads
from oncoscope.models.san import LocalAttention2d
from oncoscope.models.spec import ModelSpec
from oncoscope.train.module import LitClassifier
from oncoscope.train.warm_start import replaced_stages


def _model(**kwargs):
    torch.manual_seed(0)
    return create_model("sa_cam_efficientnet_lite0", num_classes=2, in_chans=1, **kwargs)


def _trained_heads(model):
    """Non-zero class maps (they start from zero, where every map is flat)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in [model.classifier, *model.side]:
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator))
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator))
    return model


@pytest.mark.parametrize(("kept", "stride", "channels"), [(0, 8, 40), (1, 16, 80)])
def test_the_class_map_is_read_at_the_front_ends_stride_or_a_kept_stages(kept, stride, channels):
    model = _model(kept_stages=kept).eval()
    features = model.forward_features(torch.randn(2, 1, 96, 96))
    assert tuple(features.shape) == (2, channels, 96 // stride, 96 // stride)
    assert model.stride == stride
    # 2 x 2 max pooling per halving: cell 0 covers pixels 0 .. stride - 1
    assert model.cam_origin_px == (stride - 1) / 2


def test_the_logits_are_the_class_map_pooled_and_the_sides_come_from_the_same_pass():
    model = _trained_heads(_model()).eval()
    images = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)
        supervised, sides = model.forward_deep_supervision(images)
    weights, bias = model.classifier.weight, model.classifier.bias
    by_hand = torch.einsum("kc,bchw->bk", weights, features) / features[0, 0].numel() + bias
    torch.testing.assert_close(logits, by_hand)
    torch.testing.assert_close(supervised, logits)
    assert len(sides) == 2 and all(s.shape == (3, 2) for s in sides)
    # the stride-2 side head reads the front end's first stage: its mean over positions
    first = model.front.stages[0](model.front.stem(images))
    head = model.side[0]
    expected = first.mean(dim=(2, 3)) @ head.weight.T + head.bias
    torch.testing.assert_close(sides[0], expected.detach(), atol=1e-5, rtol=1e-4)


def test_training_adds_each_side_loss_to_the_main_one_and_every_part_learns():
    model = _trained_heads(_model(pretrained=True))
    spec = ModelSpec.from_dict(
        {
            "model": "sa_cam_efficientnet_lite0",
            "classes": ["healthy", "tumour"],
            "in_chans": 1,
            "image_size": 64,
            "mean": [0.5],
            "std": [0.5],
        }
    )
    optim = {"label_smoothing": 0.0}
    module = LitClassifier(model, spec.to_dict(), optim)
    images, labels = torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 0, 1])
    module.eval()  # dropout and batch statistics fixed, so both passes see the same model
    module.log = lambda *args, **kwargs: None  # no trainer attached
    loss = module.training_step((images, labels), 0)
    logits, sides = model.forward_deep_supervision(images)
    by_hand = sum(F.cross_entropy(out, labels) for out in [logits, *sides])
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    for part in (model.side[0], model.side[1], model.classifier, model.front.stages[0]):
        assert any(float(p.grad.abs().sum()) > 0 for p in part.parameters())


def test_heads_start_from_zero_and_the_front_end_can_be_warm_started():
    model = _model(pretrained=True)
    assert replaced_stages(model) is not None  # the stem and stages the front end replaces
    for head in [model.classifier, *model.side]:
        assert not head.weight.any() and not head.bias.any()
    model.reset_classifier(3)  # new heads, from zero, for three classes
    logits, sides = model.forward_deep_supervision(torch.randn(1, 1, 64, 64))
    assert logits.shape == (1, 3) and [s.shape for s in sides] == [(1, 3), (1, 3)]
    assert not any(h.weight.any() for h in [model.classifier, *model.side])


def test_a_whole_model_weight_file_reloads_the_same_model(tmp_path):
    model = _trained_heads(_model(side_stages=(1, 3))).eval()
    torch.save(model.state_dict(), tmp_path / "whole.pt")
    torch.manual_seed(5)
    loaded = create_model(
        "sa_cam_efficientnet_lite0",
        num_classes=2,
        in_chans=1,
        side_stages=(1, 3),
        weights=tmp_path / "whole.pt",
    ).eval()
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert replaced_stages(loaded) is None  # the front end came with the file


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"side_stages": (4,)}, "side stages must be in 1..3"),
        ({"kept_stages": 9}, "kept_stages must be in 0..4"),
        ({"pool": "median"}, "pool must be"),
    ],
)
def test_a_layout_the_model_cannot_take_is_one_error_naming_the_backbone(kwargs, message):
    with pytest.raises(OncoscopeError, match=f"efficientnet_lite0: {message}"):
        _model(**kwargs)


def test_its_class_heads_are_the_main_and_side_class_maps_and_nothing_else():
    model = _model()
    heads = {id(p) for head in class_heads(model) for p in head.parameters()}
    named = {name for name, p in model.named_parameters() if id(p) in heads}
    # by name: the main class map's layer and each side class map's, weight and bias
    assert named == {"classifier.weight", "classifier.bias"} | {
        f"side.{i}.{k}" for i in range(2) for k in ("weight", "bias")
    }


@pytest.mark.parametrize(
    ("name", "relation"),
    [
        ("sa_cam_efficientnet_lite0", "dot"),
        ("sa_cam_efficientnet_lite0_pairwise", "pairwise"),
        ("sa_cam_efficientnet_lite0_patchwise", "patchwise"),
    ],
)
def test_each_relation_has_its_named_localising_model(name, relation):
    """The seed-000 comparison trains the localising SA model once per relation by name
    (`train --model a,b,c`); every attention layer of each must use that relation."""
    model = create_model(name, num_classes=2, in_chans=1)
    layers = [m for m in model.modules() if isinstance(m, LocalAttention2d)]
    assert layers and {layer.relation for layer in layers} == {relation}
    logits, sides = model.forward_deep_supervision(torch.randn(1, 1, 64, 64))
    assert logits.shape == (1, 2) and len(sides) == 2
