"""What a CT slice classifier expects, read from its checkpoint spec, and its maps of HU slices.

Every read of the checkpoint's spec dict is in :func:`ct_model_input`, so that a typed spec
replaces the dict in one place. Slices are windowed and resized by ``ct prepare``'s own
:func:`oncoscope.ct.prepare.render_slice`, so the model sees the pixels of the PNGs it was
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from skimage.transform import resize
from torch import nn

from oncoscope.ct.prepare import render_slice
from oncoscope.ct.slices import TUMOUR
from oncoscope.ct.window import HUWindow, parse_windows
from oncoscope.errors import OncoscopeError
from oncoscope.explain.cam import explain_batch
from oncoscope.train.data import eval_transform


@dataclass(frozen=True)
class CTModelInput:
    """How a CT slice classifier's input is made.

    Attributes:
        model: the model's name.
        windows: the HU window(s) its training slices were made with (one per channel).
        image_size: its input side in pixels.
        mean: per-channel normalisation mean (of ``0..1`` pixels).
        std: per-channel normalisation standard deviation.
        classes: class names.
        tumour_index: index of the tumour class, the class the maps explain.
    """

    model: str
    windows: tuple[HUWindow, ...]
    image_size: int
    mean: list[float]
    std: list[float]
    classes: list[str]
    tumour_index: int


def ct_model_input(spec: dict[str, Any], checkpoint: str | Path) -> CTModelInput:
    """Read a checkpoint spec as a CT slice classifier's input description.

    Raises:
        OncoscopeError: not a CT slice classifier: no CT window recorded (trained on images that
            did not come from ``ct prepare``), channels that do not match the windows, or no
            ``tumour`` class.
    """
    made_with = spec.get("preprocessing") or {}
    window_text = made_with.get("window")
    if not isinstance(window_text, str) or not window_text.strip():
        raise OncoscopeError(
            f"not a CT slice classifier: the checkpoint records no CT window (model "
            f"{spec.get('model')} was not trained on `oncoscope ct prepare` slices)",
            checkpoint,
        )
    try:
        windows = parse_windows(window_text)
    except OncoscopeError as error:
        raise OncoscopeError(f"recorded CT window: {error.message}", checkpoint) from None
    in_chans = int(spec["in_chans"])
    if in_chans != len(windows):
        raise OncoscopeError(
            f"not a CT slice classifier: it takes {in_chans}-channel images but records "
            f"{len(windows)} CT window(s) ({window_text})",
            checkpoint,
        )
    classes = [str(c) for c in spec["classes"]]
    if TUMOUR not in classes:
        raise OncoscopeError(
            f"not a CT tumour classifier: its classes {classes} have no '{TUMOUR}'", checkpoint
        )
    return CTModelInput(
        model=str(spec["model"]),
        windows=windows,
        image_size=int(spec["image_size"]),
        mean=[float(v) for v in spec["mean"]],
        std=[float(v) for v in spec["std"]],
        classes=classes,
        tumour_index=classes.index(TUMOUR),
    )


def model_pixels(hu_slice: npt.NDArray[Any], model_input: CTModelInput) -> npt.NDArray[np.uint8]:
    """A ``(H, W)`` HU slice as the model's training PNGs hold it (windowed, 8-bit), resized to
    the model's input size when it differs (as ``ct prepare --size`` does)."""
    height, width = hu_slice.shape
    size = model_input.image_size
    pixels: npt.NDArray[np.uint8] = render_slice(
        hu_slice, model_input.windows, None if (height, width) == (size, size) else size
    )
    return pixels


@dataclass
class SliceMap:
    """The tumour map of one slice.

    Attributes:
        heat: ``(H, W)`` float32 map in ``0..1``, at the size of the pixels given.
        prob: the model's tumour probability for the slice.
    """

    heat: npt.NDArray[np.float32]
    prob: float


def tumour_maps(
    model: nn.Module,
    model_input: CTModelInput,
    pixels: Sequence[npt.NDArray[np.uint8]],
    *,
    method: str,
    layers: Sequence[str] = (),
    stage: int = -1,
    batch_size: int = 8,
) -> list[SliceMap]:
    """Explain the tumour class on each image (as ``explain`` and ``evaluate --localization`` do).

    Args:
        model: the classifier (put in eval mode).
        model_input: from :func:`ct_model_input`.
        pixels: ``(H, W)`` or ``(H, W, C)`` uint8 images, as :func:`model_pixels` makes them.
        method, layers, stage: see :func:`oncoscope.explain.cam.explain_batch`.
        batch_size: images per forward pass.

    Returns:
        One :class:`SliceMap` per image, in order.

    Raises:
        InvalidOptionError: a bad method, layer or stage.
    """
    transform = eval_transform(model_input.image_size, model_input.mean, model_input.std)
    result: list[SliceMap] = []
    step = max(batch_size, 1)
    for start in range(0, len(pixels), step):
        chunk = pixels[start : start + step]
        tensors = torch.stack([transform(_chw(p)) for p in chunk])
        maps = explain_batch(
            model,
            tensors,
            method,
            layers=layers,
            stage=stage,
            targets=[model_input.tumour_index] * len(chunk),
        )
        for row, image in enumerate(chunk):
            heat = maps.maps[row]
            if heat.shape != image.shape[:2]:
                heat = resize(heat, image.shape[:2], order=1, preserve_range=True)
            result.append(
                SliceMap(
                    heat=np.clip(heat, 0.0, 1.0).astype(np.float32),
                    prob=float(maps.probs[row, model_input.tumour_index]),
                )
            )
    return result


def _chw(pixels: npt.NDArray[np.uint8]) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
