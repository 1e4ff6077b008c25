"""Fixtures of the locate tests: a phantom with dark lesions and a hand-made CT slice classifier
whose class map fires on hypodense pixels away from fat (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from oncoscope.ct.phantom import Phantom, make_phantom
from oncoscope.ct.slices import TUMOUR_LABEL
from oncoscope.models import create_model
from oncoscope.train.checkpoint import write_checkpoint

#: In-plane size of the phantom and the model's input (so no resizing happens).
SIZE_PX = 160
#: Lesions are made this much darker than the phantom draws them (HU), so that they lie apart
#: from muscle and bowel in the liver window.
DARKER_HU = 80
LESIONS_MM = (9.0, 14.0, 24.0)


def hypodense_model_spec(*, tumour_bias: float = -10.0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A ``simple_cnn`` with hand-set weights and its checkpoint spec.

    On the liver-window pixel value ``u`` in 0..1 (-100..200 HU): block 1 computes four ramps
    ``relu(u - t)`` and a fat detector ``relu(0.1 - u)``; block 2 sums the ramps into a
    plateau that is 1 for ``0.18 <= u <= 0.40`` (about -46..20 HU) and 0 outside
    ``0.15..0.43``, minus any fat within two pixels. The max-pooled class score of ``tumour``
    is ``20 * plateau + tumour_bias``: the tumour probability is near 1 where a dark pixel
    lies away from fat, and the CAM (``cam``) is the plateau itself.
    """
    model = create_model(
        "simple_cnn",
        num_classes=2,
        in_chans=1,
        input_size=SIZE_PX,
        channels=(5, 1),
        kernel_size=5,
        pooling="max",
        pool_size=1,
        hidden=(),
        dropout=0.0,
        batch_norm=False,
        global_pool="max",
    )
    first = torch.zeros(5, 1, 5, 5)
    first_bias = torch.zeros(5)
    for channel, start in enumerate((0.15, 0.18, 0.40, 0.43)):
        first[channel, 0, 2, 2] = 0.25  # the input is normalised: u = 0.25 x + 0.5
        first_bias[channel] = 0.5 - start
    first[4, 0, 2, 2] = -0.25
    first_bias[4] = 0.1 - 0.5
    second = torch.zeros(1, 5, 5, 5)
    for channel, weight in enumerate((1 / 0.03, -1 / 0.03, -1 / 0.03, 1 / 0.03)):
        second[0, channel, 2, 2] = weight
    second[0, 4] = -100.0
    state = model.state_dict()
    state["features.0.weight"], state["features.0.bias"] = first, first_bias
    state["features.3.weight"], state["features.3.bias"] = second, torch.zeros(1)
    state["classifier.1.weight"] = torch.tensor([[0.0], [20.0]])
    state["classifier.1.bias"] = torch.tensor([0.0, tumour_bias])
    model.load_state_dict(state)
    spec = {
        "model": "simple_cnn",
        "model_kwargs": {
            "input_size": SIZE_PX,
            "channels": [5, 1],
            "kernel_size": 5,
            "pooling": "max",
            "pool_size": 1,
            "hidden": [],
            "dropout": 0.0,
            "batch_norm": False,
            "global_pool": "max",
        },
        "classes": ["healthy", "tumour"],
        "in_chans": 1,
        "image_size": SIZE_PX,
        "mean": [0.5],
        "std": [0.25],
        "preprocessing": {"window": "liver", "row_mm": 2.375, "col_mm": 2.375},
    }
    return model.eval(), spec


@pytest.fixture(scope="session")
def dark_phantom() -> Phantom:
    """A phantom with 9, 14 and 24 mm lesions made 80 HU darker, low noise (3 HU)."""
    phantom = make_phantom(
        LESIONS_MM, shape=(28, SIZE_PX, SIZE_PX), slice_mm=4.0, noise_hu=3.0, seed=1
    )
    lesion = phantom.labels == TUMOUR_LABEL
    phantom.hu[lesion] = (phantom.hu[lesion] - DARKER_HU).astype(np.int16)
    return phantom


@pytest.fixture(scope="session")
def hypodense_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made classifier as an oncoscope checkpoint."""
    model, spec = hypodense_model_spec()
    return write_checkpoint(model, spec, tmp_path_factory.mktemp("model") / "hypodense.ckpt")
