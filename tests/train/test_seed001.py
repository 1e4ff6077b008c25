"""``--recipe seed001``: Inception-ResNet-v2 with the seed's settings, pretrained when weights are
found offline, else random weights that the run says it started from."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import oncoscope.train.run as run_module
from oncoscope.cli import app
from oncoscope.models import count_parameters
from oncoscope.models.weights import cached_timm_weights
from oncoscope.train.config import resolve_config
from oncoscope.train.run import initial_model


def test_seed001_resolves_to_inception_resnet_v2_with_the_seeds_settings():
    config = resolve_config(recipe="seed001", overrides={"data": "m.csv", "out": "run"})
    assert config.model == "inception_resnet_v2" and config.recipe == "seed001"
    assert (config.epochs, config.lr, config.scheduler) == (10, 1e-3, "none")  # the seed's log
    assert (config.optimizer, config.momentum, config.batch_size) == ("sgd", 0.9, 8)
    assert config.image_size == 299 and config.pretrained == "if-available"
    # Inception-ResNet-v2 is the 54.3 M-parameter network (counted on the meta device)
    assert 54.0e6 < count_parameters(config.model, num_classes=2) < 54.5e6
    flags = {"data": "m.csv", "out": "run", "pretrained": False, "epochs": 3}
    scratch = resolve_config(recipe="seed001", overrides=flags)
    assert scratch.pretrained is False and scratch.epochs == 3


def _fake_hub_cache(root: Path, repo: str, tensors: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub gives a downloaded file: blobs, a snapshot, refs/main."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in tensors.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_if_available_takes_timms_cached_weights_else_random_weights(tmp_path, monkeypatch):
    reference = timm.create_model("resnet18")
    torch.nn.init.normal_(reference.conv1.weight)  # not what a fresh model would draw
    repo = str(timm.models.get_pretrained_cfg("resnet18").hf_hub_id)
    cached = _fake_hub_cache(tmp_path / "hub", repo, reference.state_dict())
    assert cached_timm_weights("resnet18", cache_dir=tmp_path / "hub") == cached
    config = resolve_config(
        overrides={"data": "m.csv", "out": "r", "model": "resnet18", "pretrained": "if-available"}
    )
    lookup = partial(cached_timm_weights, cache_dir=tmp_path / "hub")
    monkeypatch.setattr(run_module, "cached_timm_weights", lookup)
    model, note = initial_model(config, num_classes=2, in_chans=3, kwargs={})
    assert note == f"pretrained from {cached}"
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    empty = partial(cached_timm_weights, cache_dir=tmp_path / "empty")
    monkeypatch.setattr(run_module, "cached_timm_weights", empty)
    model, note = initial_model(config, num_classes=2, in_chans=3, kwargs={})
    assert note.startswith("random weights: no pretrained weights for resnet18")
    assert not torch.equal(model.conv1.weight, reference.conv1.weight)


def test_the_recipe_trains_from_random_weights_without_any_and_says_so(patches, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train", "--data", str(patches), "--recipe", "seed001", "--model", "simple_cnn",
            "--image-size", "32", "--epochs", "1", "--workers", "0", "--precision", "fp32",
            "--out", str(tmp_path / "run"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["initial_weights"].startswith("random weights: no pretrained weights")
    assert "from random weights: no pretrained weights for simple_cnn" in result.output
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "recipe: seed001" in config and "pretrained: if-available" in config


@pytest.mark.parametrize("value", ["maybe", 3])
def test_pretrained_takes_true_false_or_if_available(value):
    from oncoscope.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="pretrained"):
        resolve_config(overrides={"data": "m.csv", "out": "r", "pretrained": value})


def test_if_available_finds_a_front_end_models_backbone_weights():
    """``sa_efficientnet_lite0`` wraps EfficientNet-Lite0, whose ImageNet weights ship in a
    package: ``if-available`` must start its kept stages from them, not from random weights."""
    from oncoscope.models import create_model
    from oncoscope.models.sa_efficientnet import CONFIGS

    imagenet = dict(create_model("efficientnet_lite0", pretrained=True).named_parameters())
    config = resolve_config(
        overrides={
            "data": "m.csv",
            "out": "r",
            "model": "sa_efficientnet_lite0_pairwise",
            "pretrained": "if-available",
        }
    )
    model, note = initial_model(config, num_classes=2, in_chans=3, kwargs={})
    assert not note.startswith("random weights"), note
    stage = CONFIGS["sa_efficientnet_lite0_pairwise"].feed_stage
    key = next(k for k in imagenet if k.startswith(f"blocks.{stage}.") and k.endswith("weight"))
    kept = dict(model.backbone.named_parameters())[key]
    assert torch.equal(kept, imagenet[key])


def test_the_run_says_which_file_a_cam_head_models_weights_came_from():
    """``cam_efficientnet_lite0`` keeps no timm config of its own: run.json must still name
    the weight package's file, not a vague "timm"."""
    from oncoscope.models.weights import package_weights

    config = resolve_config(recipe="ct-cam", overrides={"data": "m.csv", "out": "r"})
    _, note = initial_model(config, num_classes=2, in_chans=1, kwargs={})
    found = package_weights("efficientnet_lite0")
    assert found is not None and note == f"pretrained from {found[0]}"
