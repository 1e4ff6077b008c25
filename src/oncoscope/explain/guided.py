"""SmoothGrad guided by the class map: pixel-fine where the class map says the lesion's side is.

``guided`` is the product Guided Grad-CAM takes (Selvaraju et al., ICCV 2017: a pixel-fine
gradient map times the coarse class map), with SmoothGrad (:mod:`oncoscope.explain.smoothgrad`)
as the fine map and the model's own class map as the coarse one:

1. the target class's score at every feature cell (:func:`oncoscope.explain.cam.class_scores`,
   before any ReLU), box-filtered over ``box_cells`` cells (zero beyond the edge): local
   self-attention spreads a lesion's evidence over a plateau about the width of its window,
   whose centre the box filter finds;
2. placed on the input pixels (bilinear, on the model's ``cam_origin_px`` grid when it has
   one, else on the half-pixel grid of an image resize) and kept where it is above its median
   over the image (the side of the liver the class map points to), less that median;
3. times the SmoothGrad map, scaled to ``0..1`` per image.

A class map that is flat over the image says nothing about where: the map is then the
SmoothGrad map alone. A gradient that is zero everywhere (a model saturated or flat around the
image) says nothing either: the map is then the class map's part above its median.

Given a ``foreground`` (on CT slices the patient's body, :func:`oncoscope.ct.body.body_mask`),
both maps are zero outside it. On a tumour slice that the model calls healthy, the tumour
class's map is lowest inside the body, so its part above the median lay in the air around the
patient, and the product, scaled to ``0..1``, put most of the map on the image's frame: two
such slices took one checkpoint's test PxAP to a third of what its other slices gave
(benchmarks/README.md, "The guided map inside the body"). A class map with no part above its
median inside the foreground is then treated as flat: the SmoothGrad map in the foreground.

Measured on the phantom cohort's held-out patients for the SA front end's stride-8 class map
(``sa_cam_efficientnet_lite0``): the class map alone, SmoothGrad alone and the product point at
the lesion on 0.09-0.30, about 0.8 and 0.84-0.98 of the tumour slices (benchmarks/README.md,
"Liver-level balanced sampling"); the box of 7 cells is what was measured there. Hand-written
because neither pytorch-grad-cam nor captum multiplies two maps of different methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from scipy.ndimage import uniform_filter
from torch import nn

from oncoscope.explain.cam import class_scores, on_input_grid
from oncoscope.explain.smoothgrad import smoothgrad_maps

#: Side of the box filter over the class map, in feature cells (7 cells of 8 px at stride 8).
BOX_CELLS = 7


def guided_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    *,
    box_cells: int = BOX_CELLS,
    foreground: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float32]:
    """``(B, H, W)`` maps in ``0..1``: SmoothGrad times the boxed class map above its median
    (module docstring), for each image's target class.

    Args:
        model: a classifier with ``forward_features`` and a linear ``get_classifier()`` over
            the pooled feature map (a class-map head: ``sa_cam_efficientnet_lite0``,
            ``cam_efficientnet_lite0``, or any timm model's last stage).
        images: ``(B, C, H, W)`` float32, normalised as the model expects.
        targets: one class index per image.
        box_cells: side of the box filter, in feature cells (odd, at least 1).
        foreground: ``(B, H, W)`` where each image's map may be non-zero (CT: the body on the
            model's input grid, :func:`oncoscope.ct.body.body_on_grid`); None: everywhere.

    Raises:
        ValueError: an even or non-positive ``box_cells``; a ``foreground`` of another shape
            than the images'.
        InvalidOptionError: a model without a pooled linear head (use ``smoothgrad``).
    """
    if box_cells < 1 or box_cells % 2 == 0:
        raise ValueError(f"box_cells must be odd and positive, got {box_cells}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    inside = np.ones((len(images), height, width), dtype=bool)
    if foreground is not None:
        if foreground.shape != inside.shape:
            raise ValueError(f"foreground of shape {foreground.shape}; need {inside.shape}")
        inside = np.asarray(foreground, dtype=bool)
    scores = class_scores(model, images, targets, "guided")
    boxed = np.stack([uniform_filter(s, box_cells, mode="constant") for s in scores])
    origin = getattr(model, "cam_origin_px", None)
    if origin is None:  # the half-pixel grid of an image resize
        origin = (height / scores.shape[1] - 1) / 2
    coarse = on_input_grid(boxed, (width, height), float(origin))
    fine = smoothgrad_maps(model, images, targets)
    out = np.empty_like(fine)
    for index, (gradient, score, body) in enumerate(
        zip(fine * inside, coarse, inside, strict=True)
    ):
        above = np.maximum(score - np.median(score), 0.0) * body
        if above.max() <= 0:  # a flat class map, or its side outside the foreground
            product = gradient
        elif gradient.max() <= 0:  # no gradient in the foreground (a saturated or flat model)
            product = above
        else:
            product = gradient * above
        peak = float(product.max())
        out[index] = product / peak if peak > 0 else product
    return out
