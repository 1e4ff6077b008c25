"""A model oncoscope no longer builds: its name, and checkpoints holding it, say why in a line."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from oncoscope.cli import app
from oncoscope.errors import UnknownModelError
from oncoscope.models import check_model_name, create_model
from oncoscope.train.checkpoint import load_model, write_checkpoint
from tests.models.test_spec import OLD_CT_SPEC


def test_the_residual_variants_name_says_it_was_removed_and_what_replaces_it():
    for ask in (check_model_name, create_model):
        with pytest.raises(UnknownModelError) as caught:
            ask("sa_residual_efficientnet")
        assert str(caught.value).startswith("model 'sa_residual_efficientnet' is no longer built")
        assert "sa_cam_efficientnet_lite0" in str(caught.value)


def _residual_layout() -> nn.Module:
    """Weights named as the residual variant's were (``front.embed``, ``front.attend``)."""
    front = nn.Module()
    front.embed = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))
    model = nn.Module()
    model.front = front
    return model


@pytest.mark.parametrize("name", ["sa_residual_efficientnet", "sa_efficientnet"])
def test_a_checkpoint_of_the_removed_variant_is_refused_naming_the_file(name, tmp_path):
    spec = {**OLD_CT_SPEC, "model": name}
    path = write_checkpoint(_residual_layout(), spec, tmp_path / "a.ckpt")
    with pytest.raises(UnknownModelError) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "residual SA-EfficientNet" in str(caught.value)
    result = CliRunner().invoke(
        app, ["explain", str(path), str(path), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    (line,) = [row for row in result.output.splitlines() if row.startswith("error:")]
    assert line.startswith(f"error: {path}: ") and "residual SA-EfficientNet" in line
    assert not (tmp_path / "x").exists()


def test_todays_sa_efficientnet_has_none_of_the_keys_that_mark_the_removed_variant():
    with torch.device("meta"):  # the paper-size model: 73.7M parameters, no memory here
        keys = create_model("sa_efficientnet", num_classes=2, in_chans=1).state_dict()
    assert "front.embed.0.weight" not in keys and "front.stem.0.weight" in keys
