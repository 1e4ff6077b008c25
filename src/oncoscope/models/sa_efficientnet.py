"""The seed-000 SA-EfficientNet: a SAN self-attention front end in place of EfficientNet's stem.

Seed 000: "the existence of this convolution kernel replaces the original feature extraction
process originally embedded in EfficientNet", and the EfficientNet then learns from data
"reduced on dimension". Here the front end (:class:`oncoscope.models.san.SANFrontEnd`) takes the
image and produces the feature map that one stage of a timm EfficientNet consumes
(``feed_stage``: an index into the backbone's ``blocks``): that stage's input channels at its
stride. The backbone's stem and the stages before ``feed_stage`` are removed (replaced by
``nn.Identity``, so the other stages keep their names and their pretrained weights), and the
rest of the EfficientNet runs unchanged from there. The geometry of every stage is read from the
backbone itself (a shape-only pass on the meta device), not from a table.

The named configurations are :data:`CONFIGS`; ``oncoscope models`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from oncoscope.models.san import Relation, SANFrontEnd

#: Side of the shape-only probe image, in pixels: deeper than any EfficientNet's stride of 32.
_PROBE_SIDE = 256


@dataclass(frozen=True)
class StageInput:
    """What one backbone stage consumes: ``channels`` at ``stride`` (input pixels per position)."""

    channels: int
    stride: int


@dataclass(frozen=True)
class SAConfig:
    """A named SA-EfficientNet: the backbone and the front end's layout.

    Attributes:
        description: one line for ``oncoscope models``.
        backbone: timm EfficientNet name.
        feed_stage: the backbone stage (index into ``blocks``) the front end feeds.
        widths, depths, kernel_sizes: per front-end stage (stage ``s`` at stride ``2**(s+1)``).
        relation: ``pairwise``, ``patchwise`` or ``dot``.
    """

    description: str
    backbone: str
    feed_stage: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    relation: Relation = "pairwise"

    def kwargs(self) -> dict[str, Any]:
        """The configuration as :func:`build_sa_efficientnet` keywords."""
        return {
            "backbone": self.backbone,
            "feed_stage": self.feed_stage,
            "widths": self.widths,
            "depths": self.depths,
            "kernel_sizes": self.kernel_sizes,
            "relation": self.relation,
        }


#: The named configurations. ``sa_efficientnet`` is the paper's model (seed 000, Table II:
#: 74.6M parameters against 19.2M for EfficientNet-B4), with the seed's own relation, ``dot``
#: (equations (1)-(3)). The paper gives no layout, so it is sized here: SAN-19's stage layout
#: (Zhao et al. 2020: widths 64-256-512-1024, depths 3-3-4-6, kernels 3-7-7-7) up to stride 16,
#: where it feeds B4's ``blocks.4`` (112 channels), every width multiplied by 3.25, the
#: quarter-step that lands nearest the paper: 73.7M parameters with a 2-class head, 75.5M with
#: a 1000-class head (pairwise 74.2M, patchwise 85.5M at 2 classes). ``oncoscope
#: benchmark-models`` prints the count beside the paper's. The small ones train on a 2-core CPU.
CONFIGS: dict[str, SAConfig] = {
    "sa_efficientnet": SAConfig(
        "SAN front end (SAN-19 layout x3.25, dot relation) feeding EfficientNet-B4 blocks.4 "
        "(paper size)",
        backbone="efficientnet_b4",
        feed_stage=4,
        widths=(208, 832, 1664, 3328),
        depths=(3, 3, 4, 6),
        kernel_sizes=(3, 7, 7, 7),
        relation="dot",
    ),
    "sa_efficientnet_lite0": SAConfig(
        "small SAN front end feeding EfficientNet-Lite0 blocks.3 (offline weights; CPU)",
        backbone="efficientnet_lite0",
        feed_stage=3,
        widths=(32, 64, 128),
        depths=(1, 1, 1),
        kernel_sizes=(3, 5, 7),
        relation="dot",
    ),
    "sa_efficientnet_b0": SAConfig(
        "small SAN front end feeding EfficientNet-B0 blocks.3 (CPU)",
        backbone="efficientnet_b0",
        feed_stage=3,
        widths=(32, 64, 128),
        depths=(1, 1, 1),
        kernel_sizes=(3, 5, 7),
        relation="dot",
    ),
}


def stage_inputs(backbone: nn.Module) -> list[StageInput]:
    """Channels and stride of the input of each stage (``blocks[i]``) of a timm EfficientNet.

    Read from the model itself: a forward pass of a ``_PROBE_SIDE``-pixel image with every
    tensor on the meta device (shapes only, no memory, no arithmetic), recording the shape
    each stage receives.

    Raises:
        ValueError: a model without timm EfficientNet's ``blocks`` of stages.
    """
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not len(blocks):
        raise ValueError(
            f"{type(backbone).__name__} has no `blocks` of stages; the SA front end needs a "
            "timm EfficientNet backbone"
        )
    shapes: dict[int, torch.Size] = {}

    def recorder(index: int) -> Any:
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            shapes[index] = args[0].shape

        return record

    hooks = [stage.register_forward_pre_hook(recorder(i)) for i, stage in enumerate(blocks)]
    state = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*backbone.named_parameters(), *backbone.named_buffers()]
    }
    in_chans = int(getattr(backbone, "in_chans", 3))  # timm records what its stem takes
    probe = torch.empty(1, in_chans, _PROBE_SIDE, _PROBE_SIDE, device="meta")
    try:
        with torch.no_grad():
            functional_call(backbone, state, (probe,))
    finally:
        for hook in hooks:
            hook.remove()
    return [
        StageInput(channels=int(shapes[i][1]), stride=_PROBE_SIDE // int(shapes[i][2]))
        for i in range(len(blocks))
    ]


class SAEfficientNet(nn.Module):
    """SAN front end -> EfficientNet from stage ``feed_stage`` on (module docstring).

    Args:
        backbone: a timm EfficientNet (built with the classifier wanted); its stem and stages
            before ``feed_stage`` are removed in place.
        in_chans: image channels.
        feed_stage: the backbone stage the front end feeds (``0``: it replaces the stem only).
        widths, depths, kernel_sizes: per front-end stage; one stage per halving, so the
            number of stages is ``log2`` of the fed stage's stride.
        relation: ``pairwise``, ``patchwise`` or ``dot`` (:mod:`oncoscope.models.san`).
        share: value channels per attention weight (SAN: 8).

    The backbone's timm interface is passed through (``pretrained_cfg``, ``feature_info``,
    ``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``), with
    ``feature_info`` listing the front end's stages first, so the rest of oncoscope treats it
    like any timm model.

    Raises:
        ValueError: a backbone without stages, a ``feed_stage`` out of range, or a number of
            widths that does not match the fed stage's stride.
    """

    backbone: Any  # a timm model: its methods are not visible to nn.Module's typing

    def __init__(
        self,
        backbone: nn.Module,
        *,
        in_chans: int,
        feed_stage: int,
        widths: Sequence[int],
        depths: Sequence[int],
        kernel_sizes: Sequence[int],
        relation: Relation = "pairwise",
        share: int = 8,
    ) -> None:
        super().__init__()
        geometry = stage_inputs(backbone)
        if not 0 <= feed_stage < len(geometry):
            raise ValueError(
                f"feed_stage {feed_stage} is out of range: the backbone has stages "
                f"0..{len(geometry) - 1}"
            )
        fed = geometry[feed_stage]
        stages = round(math.log2(fed.stride))
        if 2**stages != fed.stride or len(widths) != stages:
            raise ValueError(
                f"stage {feed_stage} of the backbone takes {fed.channels} channels at stride "
                f"{fed.stride}: the front end needs {stages} stages (one per halving), "
                f"got {len(widths)} widths"
            )
        self.feed_stage, self.fed = feed_stage, fed
        self.front = SANFrontEnd(
            in_chans,
            fed.channels,
            widths,
            depths,
            kernel_sizes,
            relation=relation,
            share=share,
        )
        timm_model: Any = backbone
        timm_model.conv_stem = nn.Identity()
        timm_model.bn1 = nn.Identity()
        for index in range(feed_stage):
            timm_model.blocks[index] = nn.Identity()
        self.backbone = backbone
        self.pretrained_cfg: dict[str, Any] = dict(getattr(backbone, "pretrained_cfg", {}))
        self.pretrained_cfg["first_conv"] = "front.stem.0"
        # module names made relative to this model, so they name its own submodules
        front_info = [
            {"module": f"front.stages.{s}", "num_chs": int(w), "reduction": 2 ** (s + 1)}
            for s, w in enumerate(widths)
        ]
        kept = [
            {**info, "module": f"backbone.{info['module']}"}
            for info in getattr(backbone, "feature_info", [])
            if int(info.get("stage", 0)) > feed_stage  # timm's stage n is blocks[n - 1]
        ]
        self.feature_info = front_info + kept
        self.num_classes = int(getattr(backbone, "num_classes", 0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> the backbone's last feature map."""
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
        """Where the front end looked at the last forward pass, ``(B, H, W)`` at the input's size.

        See :meth:`oncoscope.models.san.SANFrontEnd.attention_map`.

        Raises:
            RuntimeError: before the first forward pass.
        """
        return self.front.attention_map()
