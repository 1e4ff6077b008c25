"""Fixtures: small synthetic slides, the colour checkpoint of ``tests/inference`` and a tiny
timm ResNet checkpoint with BatchNorm statistics that are not the identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oncoscope.models import create_model
from oncoscope.pathology.synthetic import write_synthetic_slide
from oncoscope.train.checkpoint import write_checkpoint
from tests.inference.conftest import write_colour_checkpoint

#: Input side of the ResNet checkpoint.
RESNET_PX = 64


@pytest.fixture(scope="session")
def colour_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_checkpoint(tmp_path_factory.mktemp("ckpt") / "colour.ckpt")


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1536 x 1152 synthetic slide at 0.25 um/px (x40) with the default regions."""
    folder = tmp_path_factory.mktemp("small")
    return write_synthetic_slide(folder / "small.tif", (1536, 1152)).path


def resnet_model() -> torch.nn.Module:
    """timm's ``test_resnet`` with seeded weights and BatchNorm running statistics."""
    torch.manual_seed(7)
    model = create_model("test_resnet", num_classes=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {
        "model": "test_resnet",
        "model_kwargs": {},
        "classes": ["normal", "tumour"],
        "in_chans": 3,
        "image_size": RESNET_PX,
        "mean": [0.7, 0.5, 0.7],
        "std": [0.2, 0.25, 0.2],
        "preprocessing": {"magnification": 10},
    }
    path = tmp_path_factory.mktemp("resnet") / "resnet.ckpt"
    return write_checkpoint(resnet_model(), spec, path)
