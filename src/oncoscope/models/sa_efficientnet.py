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

The named configurations are :data:`CONFIGS` (:mod:`oncoscope.models.sa_configs`, plain data);
``oncoscope models`` lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from oncoscope.models.front_end_model import FrontEndModel
from oncoscope.models.sa_configs import CONFIGS, SAConfig
from oncoscope.models.san import SANFrontEnd

__all__ = ["CONFIGS", "SAConfig", "SAEfficientNet", "StageInput", "stage_inputs"]

#: Side of the shape-only probe image, in pixels: deeper than any EfficientNet's stride of 32.
_PROBE_SIDE = 256


@dataclass(frozen=True)
class StageInput:
    """What one backbone stage consumes: ``channels`` at ``stride`` (input pixels per position)."""

    channels: int
    stride: int


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


class SAEfficientNet(FrontEndModel):
    """SAN front end -> EfficientNet from stage ``feed_stage`` on (module docstring).

    Args:
        backbone: a timm EfficientNet (built with the classifier wanted); its stem and stages
            before ``config.feed_stage`` are removed in place.
        in_chans: image channels.
        config: the front end's layout: ``feed_stage`` (the backbone stage it feeds; ``0``:
            it replaces the stem only), ``widths``, ``depths``, ``kernel_sizes`` (one stage per
            halving, so the number of stages is ``log2`` of the fed stage's stride),
            ``relation``, ``share`` and ``stem_kernel`` (:mod:`oncoscope.models.san`). Its
            ``backbone`` name and ``description`` are not read here.

    ``replaced_stages`` is the removed stem and stages (with the backbone's weights), outside
    the module tree: :mod:`oncoscope.train.warm_start` trains the front end to reproduce them
    before training; it is None when the whole model came from a weight file.

    The backbone's timm interface is passed through (:class:`FrontEndModel`), with
    ``feature_info`` listing the front end's stages first, so the rest of oncoscope treats it
    like any timm model.

    Raises:
        ValueError: a backbone without stages, a ``feed_stage`` out of range, or a number of
            widths that does not match the fed stage's stride.
    """

    def __init__(self, backbone: nn.Module, *, in_chans: int, config: SAConfig) -> None:
        geometry = stage_inputs(backbone)
        feed_stage, widths = config.feed_stage, config.widths
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
        front = SANFrontEnd(
            in_chans,
            fed.channels,
            widths,
            config.depths,
            config.kernel_sizes,
            relation=config.relation,
            share=config.share,
            stem_kernel=config.stem_kernel,
        )
        timm_model: Any = backbone
        replaced = nn.Sequential(
            timm_model.conv_stem, timm_model.bn1, *list(timm_model.blocks)[:feed_stage]
        )
        timm_model.conv_stem = nn.Identity()
        timm_model.bn1 = nn.Identity()
        for index in range(feed_stage):
            timm_model.blocks[index] = nn.Identity()
        # module names made relative to this model, so they name its own submodules
        front_info = [
            {"module": f"front.stages.{s}", "num_chs": int(w), "reduction": 2 ** (s + 1)}
            for s, w in enumerate(widths)
        ]
        # timm's stage n is blocks[n - 1]: the stages after the fed one are kept
        super().__init__(front, backbone, front_info=front_info, first_stage=feed_stage + 1)
        self.feed_stage, self.fed = feed_stage, fed
        # what the front end replaces, kept outside the module tree (not trained, not saved):
        # training's warm start (oncoscope.train.warm_start) has the front end copy it first
        object.__setattr__(self, "replaced_stages", replaced)
        self.pretrained_cfg["first_conv"] = "front.stem.0"
