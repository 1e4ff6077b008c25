"""A pretrained timm backbone cut after an early stage, with a CAM head that keeps location.

Why: a whole ImageNet EfficientNet classifies CT slices well, but its last feature map is
stride 32 (7 x 7 at 224 px) and its Grad-CAM follows anatomy, not the lesion (README, "What is
measured"). Cut after the stride-16 stage, the backbone's features still see a few
centimetres around each position. The head scores every position with one linear layer (a
1 x 1 convolution: the class map) and pools the class map over positions into the image's
logits (Zhou et al., CVPR 2016; Pinheiro & Collobert, CVPR 2015), so plain CAM
(:func:`oncoscope.explain.cam.plain_cam`) is exactly the map the classifier pooled, less the
bias. ``pool="avg"`` makes the logit the mean of the class map (the original CAM); ``"lse"``
(log-sum-exp) and ``"max"`` make it come from the highest positions, which is what makes the
map's maximum fall on the lesion rather than spread over the liver (benchmarks/README.md,
"Weak localisation of the demo's CT model"). timm's ``output_stride=8`` (dilated convolutions
in place of the last strides, the same pretrained weights) gives the stride-16 stage's
features on a stride-8 grid, fine enough for lesions of 10 mm.

The feature grid is that of zero-padded odd-kernel convolutions: cell ``(i, j)`` is centred on
input pixel ``(i * stride, j * stride)`` (``cam_origin_px = 0``), which ``explain --method cam``
uses to place the map on the image. Hand-written because timm's ``features_only`` backbones
come without a head, and timm's heads pool the full-depth map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oncoscope.models.pooling import pool_positions


class StageCAMNet(nn.Module):
    """``backbone`` (a timm ``features_only`` model returning one feature map) + a class map
    (linear layer at every position, after dropout) pooled over positions.

    Attributes:
        feature_info: the backbone's stages (timm's list), so Grad-CAM stages resolve as on
            any timm model.
        pool: how the class map is pooled into logits (``avg``, ``max`` or ``lse``).
        cam_origin_px: the input pixel (row and column) at the centre of feature cell 0; cell
            ``j`` is centred ``j * stride`` pixels further.
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, *, drop_rate: float = 0.0, pool: str = "avg"
    ) -> None:
        """Raises ``ValueError`` for a backbone that is not a timm ``features_only`` model or
        an unknown ``pool``."""
        super().__init__()
        info: Any = getattr(backbone, "feature_info", None)
        if info is None:
            raise ValueError("the backbone must be a timm features_only model")
        if pool not in ("avg", "max", "lse"):
            raise ValueError(f"pool must be 'avg', 'max' or 'lse', got {pool!r}")
        self.backbone = backbone
        self.feature_info = info
        self.num_features = int(sum(info.channels()))
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.pool = pool
        self.cam_origin_px = 0.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last kept stage's feature map, ``(B, C, h, w)``; when the backbone returns two
        stages, the finer one with the coarser one interpolated onto its grid, concatenated."""
        features: list[torch.Tensor] = self.backbone(x)
        if len(features) == 1:
            return features[0]
        fine, coarse = features[0], features[-1]
        return torch.cat([fine, on_finer_grid(coarse, fine.shape[-2:])], dim=1)

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        """The class scores at every position, ``(B, K, h, w)`` (bias included)."""
        scores: torch.Tensor = self.classifier(self.drop(features.permute(0, 2, 3, 1)))
        return scores.permute(0, 3, 1, 2)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The class map pooled over positions (``pool``), ``(B, K)``; ``pre_logits``: the
        feature map's mean over positions, ``(B, C)``."""
        if pre_logits:
            return features.mean(dim=(2, 3))
        return pool_positions(self.class_map(features).flatten(2), self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier


def on_finer_grid(coarse: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """A coarse feature map ``(B, C, h, w)`` bilinearly interpolated onto a grid ``r`` times
    finer of size ``size`` (cell ``j`` of the coarse grid onto cell ``r * j``, as the cells of
    stride-``s`` and stride-``r*s`` stages of a zero-padded CNN are centred on input pixels
    ``s * r * j``); cells beyond the last coarse cell repeat it."""
    h, w = coarse.shape[-2:]
    ratio = max(round(size[0] / h), 1)
    exact = (ratio * (h - 1) + 1, ratio * (w - 1) + 1)
    out = nn.functional.interpolate(coarse, size=exact, mode="bilinear", align_corners=True)
    out = nn.functional.pad(
        out, (0, max(size[1] - exact[1], 0), 0, max(size[0] - exact[0], 0)), mode="replicate"
    )
    return out[..., : size[0], : size[1]]
