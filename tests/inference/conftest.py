"""A deterministic colour classifier whose answer on the synthetic slides is known exactly.

The model is the registry's ``simple_cnn`` reduced to a 1x1 identity convolution, a global
average pool and a linear layer set to the nearest-centroid rule on the tile's mean colour:
``logit_c = T * (2 mu_c . x - |mu_c|^2)`` (``-|x - mu_c|^2`` up to a term shared by all
classes), with the centroids ``mu_c`` the synthetic slide's class colours (white = background),
all in colours centred on the centroids' mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from oncoscope.models import create_model
from oncoscope.pathology.synthetic import BACKGROUND, CLASS_COLOURS, write_synthetic_slide
from oncoscope.train.checkpoint import write_checkpoint

CLASSES = ["background", "normal", "stroma", "tumour"]
TILE_PX = 32
SHARPNESS = 40.0
CENTROIDS = np.array([BACKGROUND, *(CLASS_COLOURS[c] for c in CLASSES[1:])], np.float32) / 255
#: The model's input mean: centring the colours keeps the logits small (exact in bf16).
CENTRE = CENTROIDS.mean(axis=0)


def colour_spec(in_chans: int = 3) -> dict[str, object]:
    return {
        "model": "simple_cnn",
        "model_kwargs": {
            "input_size": TILE_PX,
            "channels": [in_chans],
            "kernel_size": 1,
            "padding": 0,
            "pooling": "avg",
            "pool_size": TILE_PX,
            "hidden": [],
            "dropout": 0.0,
            "batch_norm": False,
        },
        "classes": CLASSES,
        "in_chans": in_chans,
        "image_size": TILE_PX,
        "mean": [float(m) for m in CENTRE[:in_chans]],
        "std": [1.0] * in_chans,
        "preprocessing": {},
    }


def write_colour_checkpoint(path: Path, in_chans: int = 3) -> Path:
    spec = colour_spec(in_chans)
    model = create_model(
        "simple_cnn", num_classes=len(CLASSES), in_chans=in_chans, **spec["model_kwargs"]
    )  # type: ignore[arg-type]
    centroids = (CENTROIDS - CENTRE)[:, :in_chans]  # in the model's centred input units
    weight = 2 * SHARPNESS * centroids
    with torch.no_grad():
        conv, linear = model.features[0], model.classifier[-1]
        conv.weight.copy_(torch.eye(in_chans).view(in_chans, in_chans, 1, 1))
        conv.bias.fill_(1.0)  # keeps the centred colours positive through the ReLU
        linear.weight.copy_(torch.from_numpy(weight))
        bias = -SHARPNESS * (centroids**2).sum(axis=1) - weight.sum(axis=1)  # undo the +1
        linear.bias.copy_(torch.from_numpy(bias))
    return write_checkpoint(model, spec, path)


@pytest.fixture(scope="session")
def colour_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_checkpoint(tmp_path_factory.mktemp("ckpt") / "colour.ckpt")


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1536 x 1152 synthetic slide at 0.25 um/px (x40) with the default regions."""
    folder = tmp_path_factory.mktemp("small")
    return write_synthetic_slide(folder / "small.tif", (1536, 1152)).path
