"""A self-attention front end followed by a timm backbone, presented as one timm-like model.

The base of the SA-EfficientNet (:class:`oncoscope.models.sa_efficientnet.SAEfficientNet`):
the image goes through ``front`` and then through ``backbone``'s remaining layers. The
backbone's timm interface is
passed through (``pretrained_cfg``, ``feature_info``, ``forward_features``, ``forward_head``,
``get_classifier``, ``reset_classifier``) so the rest of oncoscope treats the pair like any timm
model, and the front end's attention is read with :meth:`FrontEndModel.attention_map`.
Parameters are named ``front.*`` and ``backbone.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class FrontEndModel(nn.Module):
    """``backbone(front(x))`` with the backbone's timm interface.

    Args:
        front: the front end; it has ``attention_map()`` giving ``(B, H, W)``.
        backbone: a timm model (built with the classifier wanted).
        front_info: ``feature_info`` entries of the front end's own stages, listed first.
        first_stage: the backbone's ``feature_info`` entries from this timm stage on are kept
            (0: all of them), with module names made relative to this model.
    """

    front: Any  # a front end with attention_map(): nn.Module's typing does not see it
    backbone: Any  # a timm model: its methods are not visible to nn.Module's typing

    def __init__(
        self,
        front: nn.Module,
        backbone: nn.Module,
        *,
        front_info: Sequence[dict[str, Any]] = (),
        first_stage: int = 0,
    ) -> None:
        super().__init__()
        self.front = front
        self.backbone = backbone
        self.pretrained_cfg: dict[str, Any] = dict(getattr(backbone, "pretrained_cfg", {}))
        kept = [
            {**info, "module": f"backbone.{info['module']}"}
            for info in getattr(backbone, "feature_info", [])
            if int(info.get("stage", 0)) >= first_stage
        ]
        self.feature_info = [*front_info, *kept]
        self.num_classes = int(getattr(backbone, "num_classes", 0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> the backbone's last feature map of the attended input."""
        features: torch.Tensor = self.backbone.forward_features(self.front(x))
        return features

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Backbone head (pooling, classifier)."""
        out: torch.Tensor = self.backbone.forward_head(features, pre_logits=pre_logits)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The backbone's classifier layer."""
        classifier: nn.Module = self.backbone.get_classifier()
        return classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier for ``num_classes`` outputs."""
        self.backbone.reset_classifier(num_classes)
        self.num_classes = num_classes

    def attention_map(self) -> torch.Tensor:
        """Where the front end looked at the last forward pass, ``(B, H, W)`` (the front end's
        ``attention_map``).

        Raises:
            RuntimeError: before the first forward pass.
        """
        received: torch.Tensor = self.front.attention_map()
        return received
