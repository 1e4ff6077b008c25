"""A pretrained timm backbone cut after an early stage, with a CAM head that keeps location.

Why: a whole ImageNet EfficientNet classifies CT slices well, but its last feature map is
stride 32 (7 x 7 at 224 px) and its Grad-CAM follows anatomy, not the lesion (README, "What is
measured"). Cut after the stride-16 stage, the backbone's features still see a few
centimetres around each position; a global average pool and one linear layer on top make the
class score of the image the mean of a class score at every position (Zhou et al., CVPR 2016),
so plain CAM (:func:`oncoscope.explain.cam.plain_cam`) is exactly what the classifier summed,
on a 14 x 14 grid at 224 px. Hand-written because timm's ``features_only`` backbones come
without a head, and timm's heads pool the full-depth map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class StageCAMNet(nn.Module):
    """``backbone`` (a timm ``features_only`` model returning one feature map) + average pool +
    dropout + linear.

    Attributes:
        feature_info: the backbone's stages (timm's list), so Grad-CAM stages resolve as on
            any timm model.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        info: Any = getattr(backbone, "feature_info", None)
        if info is None:
            raise ValueError("the backbone must be a timm features_only model")
        self.backbone = backbone
        self.feature_info = info
        self.num_features = int(info.channels()[-1])
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last kept stage's feature map, ``(B, C, h, w)``."""
        features: list[torch.Tensor] = self.backbone(x)
        return features[-1]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then (unless ``pre_logits``) dropout and the linear layer."""
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else self.classifier(self.drop(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier
