"""Class activation maps of a batch: Grad-CAM family through pytorch-grad-cam, plain CAM, attention.

``gradcam``, ``gradcam++``, ``layercam`` and ``scorecam`` are pytorch-grad-cam's ``GradCAM``,
``GradCAMPlusPlus``, ``LayerCAM`` and ``ScoreCAM``. Their hooks are released in a ``finally``
(not through the CAM object's ``__exit__``, which swallows ``IndexError``), so explaining
thousands of batches leaves no hooks on the model and no activations alive.

``cam`` is the original CAM (Zhou et al., CVPR 2016): the classifier's weights for the target
class times the last feature map, ``sum_c w[t, c] * A[c]``. It is computed here from
``forward_features`` and ``get_classifier()`` because pytorch-grad-cam has no plain CAM class;
it is defined only for a global-pooling + linear head (timm models, ``sa_efficientnet``).

``attention`` is the self-attention front end's own map (``sa_efficientnet`` and its smaller
configurations: :meth:`oncoscope.models.sa_efficientnet.SAEfficientNet.attention_map`, the
attention each pixel received relative to uniform attention, averaged over the front end's
layers): where the self-attention looked, the same for every class.

``smoothgrad`` is the input gradient of the class's log-probability averaged over noisy copies
(captum; :mod:`oncoscope.explain.smoothgrad`): at pixel resolution, for lesions smaller than a
feature cell.

``guided`` is SmoothGrad times the class map, box-filtered and kept above its median
(:mod:`oncoscope.explain.guided`): pixel-fine, on the side of the organ the class map points
to; for class-map models (``sa_cam_efficientnet_lite0``, ``cam_efficientnet_lite0``).

Every map is ReLU'd, scaled to ``0..1`` per image (pytorch-grad-cam's ``scale_cam_image``) and
resized to the model's input size. A model that says where its feature grid lies on the input
(``cam_origin_px``: the input pixel at the centre of feature cell 0, cells ``stride`` pixels
apart, as in a stack of zero-padded odd-kernel convolutions, where cell ``j`` is centred on
pixel ``j * stride``) has its plain CAM interpolated on that grid instead of on the half-pixel
grid of an image resize, which would place every value ``stride / 2`` pixels down and right of
where the network read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.ndimage import map_coordinates
from torch import nn

from oncoscope.errors import InvalidOptionError
from oncoscope.explain.layers import target_layers

_GRAD_CAMS: dict[str, Any] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}
#: Version of what each method's maps are (1 when not listed): raised when a method's map of
#: the same model and image changes, so that a threshold picked on older maps (``evaluate
#: --localization``'s record) or a ``locate`` output made from them is not reused. 2
#: (2026-12-05): SmoothGrad's noise is the same for every image (a map no longer moves with
#: its batch), and ``guided`` (SmoothGrad times the class map) stays inside the body on CT
#: slices.
MAPS_VERSIONS = {"smoothgrad": 2, "guided": 2}
#: Every explanation method, in the order the CLI lists them.
METHODS = (*_GRAD_CAMS, "cam", "attention", "smoothgrad", "guided")


def maps_version(method: str) -> int:
    """The version of ``method``'s maps (:data:`MAPS_VERSIONS`; 1 for a method never changed)."""
    return MAPS_VERSIONS.get(method, 1)


@dataclass
class BatchMaps:
    """The maps of one batch.

    Attributes:
        maps: ``(B, H, W)`` float32 in ``0..1`` at the model's input size.
        targets: the class index each map explains.
        probs: ``(B, K)`` softmax probabilities of the batch.
        layer: the layer(s) read, ``;``-joined (``forward_features`` for ``cam``).
    """

    maps: npt.NDArray[np.float32]
    targets: list[int]
    probs: npt.NDArray[np.float32]
    layer: str


def explain_batch(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    *,
    layers: Sequence[str] = (),
    stage: int = -1,
    targets: Sequence[int] | None = None,
    foreground: npt.NDArray[np.bool_] | None = None,
) -> BatchMaps:
    """Explain each image of a batch for its own target class.

    Args:
        model: the classifier; it is put in eval mode (pytorch-grad-cam does so).
        images: ``(B, C, H, W)`` float32, normalised as the model expects.
        method: one of :data:`METHODS`.
        layers: layer names to read (averaged when several); default: feature stage ``stage``.
        stage: feature stage when ``layers`` is empty (-1 = last; -2 = finer, for small lesions).
        targets: one class index per image; default: each image's predicted class.
        foreground: ``(B, H, W)`` where ``guided`` maps may point (CT slices: the body,
            :func:`oncoscope.ct.body.body_on_grid`); None: everywhere. Other methods ignore it.

    Returns:
        The :class:`BatchMaps`.

    Raises:
        InvalidOptionError: an unknown method, layer or stage; targets of the wrong length or
            out of range; ``cam`` or ``guided`` on a model without a pooled linear head;
            ``attention`` on a model without an attention map.
        ValueError: a ``foreground`` of another shape than the images' (``guided``).
    """
    if method not in METHODS:
        raise InvalidOptionError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    model.eval()
    with torch.no_grad():
        logits = model(images)
    probs = logits.float().softmax(dim=1).numpy()
    chosen = [int(i) for i in probs.argmax(axis=1)] if targets is None else list(targets)
    if len(chosen) != len(images) or not all(0 <= t < probs.shape[1] for t in chosen):
        raise InvalidOptionError(
            f"need one target class in 0..{probs.shape[1] - 1} per image ({len(images)}), "
            f"got {chosen}"
        )
    size_wh = (images.shape[-1], images.shape[-2])
    if method == "attention":
        if not hasattr(model, "attention_map"):
            raise InvalidOptionError(
                f"method attention needs a model with a self-attention front end "
                f"(sa_efficientnet, sa_efficientnet_lite0, ...), not {type(model).__name__}: "
                "use gradcam"
            )
        attentive: Any = model
        raw = attentive.attention_map().float().numpy()
        maps = scale_cam_image(np.maximum(raw, 0), size_wh)
        return BatchMaps(np.asarray(maps, np.float32), chosen, probs, "front")
    if method == "smoothgrad":
        from oncoscope.explain.smoothgrad import smoothgrad_maps

        return BatchMaps(smoothgrad_maps(model, images, chosen), chosen, probs, "input")
    if method == "guided":
        from oncoscope.explain.guided import guided_maps

        return BatchMaps(
            guided_maps(model, images, chosen, foreground=foreground),
            chosen,
            probs,
            "input;forward_features",
        )
    if method == "cam":
        raw = plain_cam(model, images, chosen)
        origin = getattr(model, "cam_origin_px", None)
        if origin is None:
            maps = scale_cam_image(raw, size_wh)
        else:
            maps = scale_cam_image(on_input_grid(raw, size_wh, float(origin)))
        return BatchMaps(np.asarray(maps, np.float32), chosen, probs, "forward_features")
    named = target_layers(model, layers, stage=stage)
    explainer = _GRAD_CAMS[method](model=model, target_layers=[m for _, m in named])
    try:
        with torch.enable_grad():
            maps = explainer(
                input_tensor=images, targets=[ClassifierOutputTarget(t) for t in chosen]
            )
    finally:
        explainer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return BatchMaps(np.asarray(maps, np.float32), chosen, probs, ";".join(n for n, _ in named))


def plain_cam(
    model: nn.Module, images: torch.Tensor, targets: Sequence[int]
) -> npt.NDArray[np.float32]:
    """Original CAM: ``relu(sum_c w[t_b, c] * A_b[c])`` on the last feature map.

    Args:
        model: a model with ``forward_features`` and a linear ``get_classifier()`` that reads the
            globally pooled feature map.
        images: ``(B, C, H, W)`` model input.
        targets: the class index of each image.

    Returns:
        ``(B, h, w)`` float32 at the feature map's resolution, not rescaled.

    Raises:
        InvalidOptionError: the model has no pooled linear head (use ``gradcam``).
    """
    return np.maximum(class_scores(model, images, targets), 0.0)


def class_scores(
    model: nn.Module, images: torch.Tensor, targets: Sequence[int], method: str = "cam"
) -> npt.NDArray[np.float32]:
    """The target class's score at every position, ``sum_c w[t_b, c] * A_b[c]`` (no bias, no
    ReLU): :func:`plain_cam` before its ReLU, negative where the features speak against it.

    Args and errors: as :func:`plain_cam`; ``method`` names the method in the error.
    """
    timm_like: Any = model
    classifier = timm_like.get_classifier() if hasattr(model, "get_classifier") else None
    if not hasattr(model, "forward_features") or not isinstance(classifier, nn.Linear):
        raise InvalidOptionError(
            f"method {method} needs forward_features and a linear classifier; "
            f"{type(model).__name__} has none: use gradcam"
        )
    with torch.no_grad():
        features = timm_like.forward_features(images).float()
    if features.ndim != 4 or classifier.in_features != features.shape[1]:
        raise InvalidOptionError(
            f"method {method} needs a global-pooling + linear head; the classifier of "
            f"{type(model).__name__} reads {classifier.in_features} features but the last "
            f"feature map is {tuple(features.shape[1:])}: use gradcam"
        )
    weights = classifier.weight.detach().float()[list(targets)]  # (B, C)
    scores = torch.einsum("bc,bchw->bhw", weights, features)
    return scores.numpy().astype(np.float32)


def on_input_grid(
    maps: npt.NDArray[np.float32], size_wh: tuple[int, int], origin_px: float
) -> npt.NDArray[np.float32]:
    """Feature-grid maps ``(B, h, w)`` interpolated (bilinear) to ``(B, H, W)`` input pixels,
    cell ``(i, j)`` centred on input pixel ``(origin_px + i * H / h, origin_px + j * W / w)``;
    pixels beyond the outermost cell centres take the edge cell's value.

    Example:
        >>> on_input_grid(np.array([[[0.0, 1.0]]], np.float32), (4, 1), 0.0)[0, 0]
        array([0. , 0.5, 1. , 1. ], dtype=float32)
    """
    batch, h, w = maps.shape
    rows = (np.arange(size_wh[1]) - origin_px) * h / size_wh[1]
    cols = (np.arange(size_wh[0]) - origin_px) * w / size_wh[0]
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"))
    out = [map_coordinates(m, grid, order=1, mode="nearest") for m in maps.astype(np.float32)]
    return np.stack(out).reshape(batch, size_wh[1], size_wh[0]).astype(np.float32)
