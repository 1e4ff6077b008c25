"""What a CT slice classifier expects, read from its checkpoint spec, and its maps of HU slices.

:func:`ct_model_input` checks a checkpoint's :class:`~oncoscope.models.spec.ModelSpec` is a CT
slice classifier's. Slices go through the checkpoint's recorded seed-001 chain
(:func:`oncoscope.ct.chain.apply_chain`) and are windowed and resized by ``ct prepare``'s own
:func:`oncoscope.ct.render.render_slice`, so the model sees the pixels of the PNGs it was
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

from oncoscope.ct.body import bodies_on_grid
from oncoscope.ct.chain import SliceChain, apply_chain, fill_hu
from oncoscope.ct.render import render_slice
from oncoscope.ct.slices import TUMOUR
from oncoscope.ct.window import HUWindow
from oncoscope.errors import OncoscopeError
from oncoscope.explain.cam import explain_batch
from oncoscope.models.spec import ModelSpec


@dataclass(frozen=True)
class CTModelInput:
    """How a CT slice classifier's input is made.

    Attributes:
        spec: the checkpoint's :class:`~oncoscope.models.spec.ModelSpec`.
        windows: the HU window(s) its training slices were made with (one per channel).
        chain: the seed-001 chain ``ct prepare --denoise/--roi`` applied to them (identity
            when none was).
        tumour_index: index of the tumour class, the class the maps explain.
    """

    spec: ModelSpec
    windows: tuple[HUWindow, ...]
    chain: SliceChain
    tumour_index: int

    @property
    def image_size(self) -> int:
        """The model's input side in pixels."""
        return self.spec.image_size


def ct_model_input(spec: ModelSpec, checkpoint: str | Path) -> CTModelInput:
    """Read a checkpoint spec as a CT slice classifier's input description.

    Raises:
        OncoscopeError: not a CT slice classifier: no CT window recorded (trained on images that
            did not come from ``ct prepare``), channels that do not match the windows, no
            ``tumour`` class, or a recorded chain this version cannot read.
    """
    windows = spec.ct_windows
    if not windows:
        raise OncoscopeError(
            f"not a CT slice classifier: the checkpoint records no CT window (model "
            f"{spec.model} was not trained on `oncoscope ct prepare` slices)",
            checkpoint,
        )
    if spec.in_chans != len(windows):
        raise OncoscopeError(
            f"not a CT slice classifier: it takes {spec.in_chans}-channel images but records "
            f"{len(windows)} CT window(s) ({','.join(w.name for w in windows)})",
            checkpoint,
        )
    if TUMOUR not in spec.classes:
        raise OncoscopeError(
            f"not a CT tumour classifier: its classes {list(spec.classes)} have no '{TUMOUR}'",
            checkpoint,
        )
    try:
        chain = SliceChain.from_record(dict(spec.ct_chain) if spec.ct_chain else None)
    except OncoscopeError as error:
        raise OncoscopeError(f"recorded CT chain: {error.message}", checkpoint) from None
    return CTModelInput(
        spec=spec, windows=windows, chain=chain, tumour_index=spec.classes.index(TUMOUR)
    )


def model_pixels(
    hu_slice: npt.NDArray[Any],
    model_input: CTModelInput,
    liver_slice: npt.NDArray[np.bool_] | None = None,
    pixel_mm: tuple[float, float] = (1.0, 1.0),
) -> npt.NDArray[np.uint8]:
    """A ``(H, W)`` HU slice as the model's training PNGs hold it: the checkpoint's chain
    (median denoise, liver ROI, mask; none when it was trained without), windowed, 8-bit, and
    resized to the model's input size when it differs (as ``ct prepare --size`` does).

    ``liver_slice`` is the liver a ``--roi mask`` chain masks to; ``pixel_mm`` the slice's
    ``(row, col)`` pixel size (the EM ROI's morphology is in mm).
    """
    height, width = hu_slice.shape
    size = model_input.image_size
    if model_input.chain.record():
        hu_slice = apply_chain(
            hu_slice,
            model_input.chain,
            liver_slice,
            pixel_mm=pixel_mm,
            fill_hu=fill_hu(model_input.windows),
        ).hu
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
    transform = model_input.spec.eval_transform()
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
            # the guided map stays inside the body, as explain and evaluate keep it (the maps
            # the threshold was picked on)
            foreground=(
                bodies_on_grid(chunk, model_input.spec.image_size) if method == "guided" else None
            ),
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
