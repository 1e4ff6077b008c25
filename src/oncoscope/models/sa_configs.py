"""The named SA-EfficientNet configurations (seed 000): plain data, importable without torch.

``oncoscope models`` lists them without building anything; :mod:`.sa_efficientnet` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oncoscope.models.san import Relation


@dataclass(frozen=True)
class SAConfig:
    """A named SA-EfficientNet: the backbone and the front end's layout.

    Attributes:
        description: one line for ``oncoscope models``.
        backbone: timm EfficientNet name.
        feed_stage: the backbone stage (index into ``blocks``) the front end feeds.
        widths, depths, kernel_sizes: per front-end stage (stage ``s`` at stride ``2**(s+1)``).
        relation: ``pairwise``, ``patchwise`` or ``dot``.
        share: value channels per attention weight (SAN: 8).
        stem_kernel: side of the stem's convolution at full resolution, odd (SAN: 1).
    """

    description: str
    backbone: str
    feed_stage: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    relation: Relation = "pairwise"
    share: int = 8
    #: 3, not SAN's 1: with a 1x1 stem the first pixels to meet are already max-pooled, and the
    #: small front end could not learn the features it replaces (benchmarks/README.md, "The SA
    #: front end's stem and warm start"); stand-alone self-attention (Ramachandran et al.
    #: 2019) likewise keeps a convolutional stem.
    stem_kernel: int = 3


_SMALL_LITE0 = SAConfig(
    "small SAN front end feeding EfficientNet-Lite0 blocks.3 (offline weights; CPU)",
    backbone="efficientnet_lite0",
    feed_stage=3,
    widths=(32, 64, 128),
    depths=(1, 1, 1),
    kernel_sizes=(3, 5, 7),
    relation="dot",
)

#: The named configurations. ``sa_efficientnet`` is the paper's model (seed 000, Table II:
#: 74.6M parameters against 19.2M for EfficientNet-B4), with the seed's own relation, ``dot``
#: (equations (1)-(3)). The paper gives no layout, so it is sized here: SAN-19's stage layout
#: (Zhao et al. 2020: widths 64-256-512-1024, depths 3-3-4-6, kernels 3-7-7-7) up to stride 16,
#: where it feeds B4's ``blocks.4`` (112 channels), every width multiplied by 3.25, the
#: quarter-step that lands nearest the paper: 73.7M parameters with a 2-class head, 75.5M with
#: a 1000-class head (pairwise 74.2M, patchwise 85.5M at 2 classes). ``oncoscope
#: benchmark-models`` prints the count beside the paper's. The small ones train on a 2-core CPU
#: and share one layout; the Lite0 one comes with each relation, for the seed-000 comparison.
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
    "sa_efficientnet_lite0": _SMALL_LITE0,
    "sa_efficientnet_b0": replace(
        _SMALL_LITE0,
        description="small SAN front end feeding EfficientNet-B0 blocks.3 (CPU)",
        backbone="efficientnet_b0",
    ),
    # The seed-000 comparison trains each relation by name (`train --model a,b,c`).
    "sa_efficientnet_lite0_pairwise": replace(
        _SMALL_LITE0,
        description="small SAN front end, pairwise (subtraction) relation, feeding "
        "EfficientNet-Lite0 blocks.3 (CPU)",
        relation="pairwise",
    ),
    "sa_efficientnet_lite0_patchwise": replace(
        _SMALL_LITE0,
        description="small SAN front end, patchwise relation, feeding EfficientNet-Lite0 blocks.3 "
        "(CPU)",
        relation="patchwise",
    ),
}
