"""SmoothGrad maps: where in the image the class's log-probability is most sensitive.

SmoothGrad (Smilkov et al., 2017): the absolute gradient of the target class's score with
respect to the input pixels (captum's ``Saliency``), averaged over noisy copies of the image
made here (below). The score is the class's log-probability (``log_softmax``
of the logits: for two classes, the target's logit margin scaled by ``1 - p``), so evidence
*against* the other class counts as well. The map is summed over channels, smoothed by a
Gaussian of ``sigma_px`` pixels (the maps are as fine as the input, and a lesion is a blob,
not an edge), and scaled to ``0..1`` per image.

Why here, beside the CAMs: a CAM is as coarse as the feature map it reads (stride 16 for the
``ct-cam`` model: cell centres 18 px apart on a 256-px slice, wider than the lesions) and it
peaks where features that *see* the lesion sit, beside it; the input gradient is at pixel
resolution and peaks on the pixels that change the decision (benchmarks/README.md, "Weak
localisation of the demo's CT model"). The noise is drawn from a fixed seed, so a map is the
same on every run. The same noisy copies serve every image (``samples`` noise images drawn once
from the seed, each scaled to the image's own value range), so an image's map depends on the
image alone, not on which images share its batch or how many there are: the map ``explain``
shows, the one ``evaluate --localization`` picks its threshold on and the one ``locate``
thresholds are the same map. Hand-written around captum's ``Saliency`` because captum's
``NoiseTunnel`` draws one noise tensor for the whole batch (a map then moved with its batch:
PxAP by 0.03 on one checkpoint, benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from captum.attr import Saliency
from scipy.ndimage import gaussian_filter
from torch import nn

#: Noisy copies per image, noise level (a fraction of the image's value range, as the
#: paper sets it) and smoothing in pixels: what the localisation figures were measured with.
SAMPLES = 8
NOISE = 0.04
SIGMA_PX = 4.0
#: Noisy images through the model at once (copies of one image or of several): all ``samples``
#: copies of a batch of 8 at once took the demo's peak memory from 2.8 to 8.4 GB.
IMAGES_PER_PASS = 16


class _LogProbabilities(nn.Module):
    """``log_softmax`` of a classifier's logits, float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.model(x).float(), dim=1)


def smoothgrad_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    *,
    samples: int = SAMPLES,
    noise: float = NOISE,
    sigma_px: float = SIGMA_PX,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """``(B, H, W)`` SmoothGrad maps in ``0..1`` of ``images`` (``(B, C, H, W)``, normalised as
    the model expects) for each image's target class.

    Args:
        samples: noisy copies averaged per image.
        noise: standard deviation of the Gaussian noise as a fraction of each image's value
            range (its max minus its min).
        sigma_px: Gaussian smoothing of the map, in pixels (0: none).
        seed: seed of the noise images (drawn from their own generator: the global random
            state is left as it was).

    Raises:
        ValueError: ``samples`` below 1, or a negative ``noise`` or ``sigma_px``.
    """
    if samples < 1 or noise < 0 or sigma_px < 0:
        raise ValueError(
            f"need samples >= 1, noise >= 0, sigma_px >= 0; got {samples}, {noise}, {sigma_px}"
        )
    model.eval()
    explainer = Saliency(_LogProbabilities(model))
    floats = images.detach().float()
    draws = torch.randn((samples, *floats.shape[1:]), generator=torch.Generator().manual_seed(seed))
    total = torch.zeros_like(floats)
    pairs = [(index, copy) for index in range(len(floats)) for copy in range(samples)]
    with torch.enable_grad():
        for start in range(0, len(pairs), IMAGES_PER_PASS):
            chunk = pairs[start : start + IMAGES_PER_PASS]
            noisy = torch.stack(
                [
                    floats[index] + noise * _value_range(floats[index]) * draws[copy]
                    for index, copy in chunk
                ]
            ).requires_grad_()
            gradients = explainer.attribute(noisy, target=[int(targets[i]) for i, _ in chunk])
            for (index, _), gradient in zip(chunk, gradients.detach(), strict=True):
                total[index] += gradient
    model.zero_grad(set_to_none=True)
    maps = (total / samples).sum(dim=1).cpu().numpy()
    out = np.empty(maps.shape, dtype=np.float32)
    for index, raw in enumerate(maps):
        smooth = gaussian_filter(raw, sigma_px) if sigma_px > 0 else raw
        smooth = smooth - smooth.min()
        peak = smooth.max()
        out[index] = smooth / peak if peak > 0 else smooth
    return out


def _value_range(image: torch.Tensor) -> float:
    """The image's max minus its min (the scale SmoothGrad's noise level is a fraction of)."""
    return float(image.max() - image.min())
