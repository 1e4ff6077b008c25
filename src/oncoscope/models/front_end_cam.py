"""The SA front end under a class map on its own stride-8 output, with deep supervision.

Why: the whole SA-EfficientNet reads its decision off a stride-32 map, 7 cells across a
224 px slice, and its maps follow anatomy. Scored on the phantom cohort's held-out patients,
the front end's own stride-8 output under a class map (a linear layer at every position,
pooled over positions into the image's logits, as CAM does: Zhou et al., CVPR 2016) with a
class map from zero on the front end's stride-2 and stride-4 stages as well, each pooled and
trained on the same image label (deep supervision: Lee et al., AISTATS 2015), is what points
at lesions (benchmarks/README.md, "Liver-level balanced sampling"). The side heads only train
the front end's early stages to tell lesion from liver; the model's logits and its class map
are the stride-8 head's.

``kept_stages`` keeps that many of the EfficientNet's stages after the front end (each halves
the grid from the fed stage's stride); 0 reads the class map on the front end's output.

The front end is warm-started as the SA-EfficientNet's is (:mod:`oncoscope.train.warm_start`:
``replaced_stages`` passes through), its attention is read with :meth:`attention_map`, and
the model has the timm interface the rest of oncoscope reads (``forward_features``,
``forward_head``, ``get_classifier``, ``feature_info``, ``pretrained_cfg``), so plain CAM
(``explain --method cam``) is exactly the map the head pooled, less the bias. Hand-written
because no library puts a CAM head and side heads on a front end's stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from oncoscope.models.pooling import pool_positions


def _zero_linear(features: int, classes: int) -> nn.Linear:
    """A class-map layer from zero: every class scores 0 everywhere until trained."""
    layer = nn.Linear(features, classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FrontEndCAMNet(nn.Module):
    """An SA-EfficientNet's front end (and ``kept_stages`` backbone stages) under a class map
    pooled over positions, with side class maps on the front end's ``side_stages``.

    Args:
        sa: a built :class:`~oncoscope.models.sa_efficientnet.SAEfficientNet`; its front end,
            its backbone's stages from the fed one, its ``replaced_stages`` and
            ``pretrained_cfg`` are taken; the rest of its backbone is dropped.
        num_classes: classes of the class maps.
        kept_stages: backbone stages kept after the front end (0: the class map on the front
            end's own output, at its stride).
        side_stages: front-end stages (1-based: stage ``s`` runs at stride ``2**s``) with a
            side class map for deep supervision; empty for none.
        pool: how each class map is pooled into logits (``avg``, ``max`` or ``lse``).
        drop_rate: dropout before the main class map.

    Attributes:
        cam_origin_px: the input pixel (row and column) at the centre of feature cell 0: the
            front end halves the grid by 2 x 2 max pooling, so a stride-``s`` cell covers
            pixels ``0 .. s - 1`` and is centred on ``(s - 1) / 2``.
        stride: input pixels per class-map cell.

    Raises:
        ValueError: a side stage the front end does not have, a negative ``kept_stages`` or
            more than the backbone has, or an unknown ``pool``.
    """

    front: Any  # a SANFrontEnd: its stages and attention are not visible to nn.Module's typing

    def __init__(
        self,
        sa: nn.Module,
        num_classes: int,
        *,
        kept_stages: int = 0,
        side_stages: Sequence[int] = (1, 2),
        pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        model: Any = sa
        if pool not in ("avg", "max", "lse"):
            raise ValueError(f"pool must be 'avg', 'max' or 'lse', got {pool!r}")
        stages = len(model.front.stages)
        bad = [s for s in side_stages if not 1 <= s <= stages]
        if bad:
            raise ValueError(f"side stages must be in 1..{stages} (the front end's), got {bad}")
        remaining = list(model.backbone.blocks)[model.feed_stage :]
        if not 0 <= kept_stages <= len(remaining):
            raise ValueError(
                f"kept_stages must be in 0..{len(remaining)} (the backbone's stages after the "
                f"fed one), got {kept_stages}"
            )
        self.front = model.front
        kept: list[Any] = remaining[:kept_stages]  # timm stages: Sequentials of blocks
        self.blocks = nn.Sequential(*kept)
        if kept:
            channels = int(kept[-1][-1].conv_pwl.out_channels)
        else:
            channels = int(model.front.project[0].out_channels)
        self.num_features = channels
        self.num_classes = num_classes
        self.pool = pool
        self.drop = nn.Dropout(drop_rate)
        self.classifier = _zero_linear(channels, num_classes)
        self.side_stages = tuple(int(s) for s in side_stages)
        self.side = nn.ModuleList(
            _zero_linear(int(model.front.stages[s - 1].norm.num_features), num_classes)
            for s in self.side_stages
        )
        self.stride = int(model.fed.stride) * 2**kept_stages
        self.cam_origin_px = (self.stride - 1) / 2
        self.pretrained_cfg: dict[str, Any] = dict(model.pretrained_cfg)
        front_info = [
            {
                "module": f"front.stages.{s}",
                "num_chs": int(stage.norm.num_features),
                "reduction": 2 ** (s + 1),
            }
            for s, stage in enumerate(model.front.stages)
        ]
        front_info.append(
            {
                "module": "front.project",
                "num_chs": int(model.fed.channels),
                "reduction": int(model.fed.stride),
            }
        )
        kept_info = [
            {
                "module": f"blocks.{k}",
                "num_chs": int(block[-1].conv_pwl.out_channels),
                "reduction": int(model.fed.stride) * 2 ** (k + 1),
            }
            for k, block in enumerate(kept)
        ]
        self.feature_info = [*front_info, *kept_info]
        # what the front end replaces, outside the module tree (not trained, not saved), for
        # training's warm start; None when the front end came with its weights
        object.__setattr__(self, "replaced_stages", getattr(model, "replaced_stages", None))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> the feature map the class map reads, ``(B, F, h, w)``."""
        out: torch.Tensor = self.blocks(self.front(x))
        return out

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        """The class scores at every position of ``features``, ``(B, K, h, w)`` (bias included)."""
        scores: torch.Tensor = self.classifier(self.drop(features.permute(0, 2, 3, 1)))
        return scores.permute(0, 3, 1, 2)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The class map pooled over positions, ``(B, K)``; ``pre_logits``: the features' mean
        over positions, ``(B, F)``."""
        if pre_logits:
            return features.mean(dim=(2, 3))
        return pool_positions(self.class_map(features).flatten(2), self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, K)`` logits (the main class map's, pooled)."""
        return self.forward_head(self.forward_features(x))

    def forward_deep_supervision(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and each side class map's pooled logits (``side_stages`` order), from one
        pass: training adds each side's loss on the same label to the main one."""
        sides: list[torch.Tensor] = []
        features = self.front.stem(x)
        for index, stage in enumerate(self.front.stages, start=1):
            features = stage(features)
            if index in self.side_stages:
                head = self.side[self.side_stages.index(index)]
                scores = head(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                sides.append(pool_positions(scores.flatten(2), self.pool))
        logits = self.forward_head(self.blocks(self.front.project(features)))
        return logits, sides

    def get_classifier(self) -> nn.Module:
        """The main class map's linear layer."""
        return self.classifier

    def class_heads(self) -> list[nn.Module]:
        """Every class map's linear layer: the main one, then the side ones."""
        return [self.classifier, *self.side]

    def reset_classifier(self, num_classes: int) -> None:
        """New class maps from zero (main and side) for ``num_classes`` classes."""
        self.classifier = _zero_linear(self.num_features, num_classes)
        widths = [int(head.in_features) for head in self.side if isinstance(head, nn.Linear)]
        self.side = nn.ModuleList(_zero_linear(width, num_classes) for width in widths)
        self.num_classes = num_classes

    def attention_map(self) -> torch.Tensor:
        """Where the front end looked at the last forward pass, ``(B, H, W)``.

        Raises:
            RuntimeError: before the first forward pass.
        """
        received: torch.Tensor = self.front.attention_map()
        return received
