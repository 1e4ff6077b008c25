"""SAN local self-attention (Zhao, Jia & Koltun, CVPR 2020) as an image front end, in plain PyTorch.

Every position ``i`` attends to the ``k x k`` neighbourhood ``R(i)`` around it:
``y_i = sum_{j in R(i)} softmax_j(w(i, j)) * beta(x_j)``, with the softmax over the neighbours
that lie inside the image (positions outside get weight 0, so the weights of each
neighbourhood sum to one). Three relations give the weights ``w``:

- ``pairwise`` (SAN, subtraction): ``gamma([phi(x_i) - psi(x_j), p(i - j)])``, ``p`` a learned
  linear encoding of the relative position ``(dy, dx)`` (SAN's ``conv_p``), ``gamma`` SAN's
  BN-ReLU-conv-BN-ReLU-conv MLP giving one weight per channel group.
- ``patchwise`` (SAN): ``gamma([phi(x_i), psi(x_R(i))])`` over the whole patch of keys; the
  position of each key is its slot in the patch (SAN's own encoding for this relation).
- ``dot`` (seed 000, equations (1)-(3)): ``q = W^q a``, ``k = W^k a``, ``v = W^v a``;
  ``w = q_i . (k_j + r_{j-i}) / sqrt(d)`` per head, ``r`` a learned relative-position embedding
  (as in stand-alone self-attention), normalised with the softmax.

Written with ``F.unfold`` so that it runs on CPU and GPU alike (SAN's aggregation kernels are
CUDA-only). :class:`SANFrontEnd` stacks SAN stages (a convolutional stem at full resolution,
then per stage: 2x2 max pooling, a 1x1 transition, ``depth`` pre-activation bottlenecks,
BN-ReLU) and ends with a 1x1 projection to the channels a backbone stage consumes, at its stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

Relation = Literal["pairwise", "patchwise", "dot"]
RELATIONS: tuple[str, ...] = get_args(Relation)


class LocalAttention2d(nn.Module):
    """Local self-attention over ``kernel_size x kernel_size`` neighbourhoods (SAN's SAM).

    Args:
        channels: input channels.
        rel_channels: channels of the query and key projections (``phi``, ``psi`` / ``W^q``,
            ``W^k``).
        out_channels: channels of the value projection (``beta`` / ``W^v``) and of the output.
        kernel_size: neighbourhood side, odd.
        relation: ``"pairwise"``, ``"patchwise"`` or ``"dot"`` (module docstring).
        groups: attention weights per neighbour; each is shared by ``out_channels // groups``
            consecutive value channels (SAN's ``share_planes``; the heads of ``dot``, which
            also splits the query and key channels into ``groups``).

    Shapes:
        input ``(B, channels, H, W)`` -> output ``(B, out_channels, H, W)``;
        ``last_attention`` ``(B, groups, k*k, H, W)``, each neighbourhood summing to 1 over
        its third axis (0 for neighbours outside the image).

    Raises:
        ValueError: an even kernel, an unknown relation, or channels not divisible by groups.
    """

    offsets: torch.Tensor

    def __init__(
        self,
        channels: int,
        rel_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        *,
        relation: Relation = "pairwise",
        groups: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
        if groups < 1 or out_channels % groups or (relation == "dot" and rel_channels % groups):
            raise ValueError(
                f"out_channels ({out_channels})"
                + (f" and rel_channels ({rel_channels})" if relation == "dot" else "")
                + f" must be divisible by groups ({groups})"
            )
        self.kernel_size, self.relation, self.groups = kernel_size, relation, groups
        self.rel_channels, self.out_channels = rel_channels, out_channels
        neighbours = kernel_size * kernel_size
        self.query = nn.Conv2d(channels, rel_channels, 1)  # phi, W^q
        self.key = nn.Conv2d(channels, rel_channels, 1)  # psi, W^k
        self.value = nn.Conv2d(channels, out_channels, 1)  # beta, W^v
        radius = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
        dy, dx = torch.meshgrid(radius, radius, indexing="ij")
        offsets = torch.stack([dy, dx]).reshape(2, neighbours) / max(kernel_size // 2, 1)
        self.register_buffer("offsets", offsets, persistent=False)
        self.position: nn.Conv1d | None = None
        self.relative: nn.Parameter | None = None
        self.gamma: nn.Module = nn.Identity()
        if relation == "pairwise":
            # SAN's conv_p: p_i - p_j of a linear encoding is linear in i - j (no bias)
            self.position = nn.Conv1d(2, 2, 1, bias=False)
            self.gamma = nn.Sequential(
                nn.BatchNorm2d(rel_channels + 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(rel_channels + 2, rel_channels, 1, bias=False),
                nn.BatchNorm2d(rel_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(rel_channels, groups, 1),
            )
        elif relation == "patchwise":
            # no separate encoding: the slot of each key in the patch is its position
            self.gamma = nn.Sequential(
                nn.BatchNorm2d(rel_channels * (neighbours + 1)),
                nn.ReLU(inplace=True),
                nn.Conv2d(rel_channels * (neighbours + 1), groups, 1, bias=False),
                nn.BatchNorm2d(groups),
                nn.ReLU(inplace=True),
                nn.Conv2d(groups, groups * neighbours, 1),
            )
        else:
            head = rel_channels // groups
            self.relative = nn.Parameter(torch.randn(head, neighbours) * head**-0.5)  # r_{j-i}
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over each position's neighbourhood; shapes in the class docstring."""
        b, _, h, w = x.shape
        k, k2, g = self.kernel_size, self.kernel_size**2, self.groups
        pad = k // 2
        # 1 where a neighbour lies inside the image, 0 where it is padding: (1, 1, k2, H, W)
        inside = F.unfold(x.new_ones(1, 1, h, w), k, padding=pad).reshape(1, 1, k2, h, w) > 0
        query = self.query(x)
        keys = F.unfold(self.key(x), k, padding=pad).reshape(b, self.rel_channels, k2, h, w)
        if self.position is not None:  # pairwise
            position = self.position(-self.offsets.unsqueeze(0))  # p(i - j), (1, 2, k2)
            joined = torch.cat(
                [
                    query.unsqueeze(2) - keys,
                    position.reshape(1, 2, k2, 1, 1).expand(b, -1, -1, h, w),
                ],
                dim=1,
            )
            logits = self.gamma(joined.reshape(b, self.rel_channels + 2, k2 * h, w))
            logits = logits.reshape(b, g, k2, h, w)
        elif self.relative is not None:  # dot
            head = self.rel_channels // g
            keyed = keys.reshape(b, g, head, k2, h, w) + self.relative.reshape(1, 1, head, k2, 1, 1)
            logits = (query.reshape(b, g, head, 1, h, w) * keyed).sum(dim=2) / math.sqrt(head)
        else:  # patchwise
            patch = torch.cat([keys.reshape(b, self.rel_channels * k2, h, w), query], dim=1)
            logits = self.gamma(patch).reshape(b, g, k2, h, w)
        attention: torch.Tensor = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)
        self.last_attention = attention.detach()
        values = F.unfold(self.value(x), k, padding=pad)
        values = values.reshape(b, g, self.out_channels // g, k2, h, w)
        out = (attention.unsqueeze(2) * values).sum(dim=3)
        return out.reshape(b, self.out_channels, h, w)

    def received(self) -> torch.Tensor:
        """Attention each position receives, relative to uniform attention, ``(B, H, W)``.

        The weights a position receives from the queries around it, summed (averaged over the
        groups), divided by what it would receive if every query spread its weight evenly over
        its neighbours inside the image: 1 everywhere for uniform attention, borders included
        (near a border fewer queries see a position); above 1 where the neighbours attended to
        it, below 1 where they passed it over.

        Raises:
            RuntimeError: before the first forward pass.
        """
        if self.last_attention is None:
            raise RuntimeError("no attention yet: run a forward pass first")
        b, _, k2, h, w = self.last_attention.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        weights = self.last_attention.float().mean(dim=1).reshape(b, k2, h * w)
        inside = F.unfold(weights.new_ones(1, 1, h, w), k, padding=pad)  # (1, k2, H*W)
        uniform = inside / inside.sum(dim=1, keepdim=True)
        received = F.fold(weights, (h, w), k, padding=pad)[:, 0]
        expected = F.fold(uniform, (h, w), k, padding=pad)[:, 0]
        return received / expected


class SANBottleneck(nn.Module):
    """SAN's pre-activation residual block: ``x + conv(relu(bn(sam(relu(bn(x))))))``.

    Args:
        channels: block width ``c``; the attention works on ``c // 4`` value channels with
            ``c // 16`` query/key channels (SAN's ratios; at least ``min_rel_channels``).
        kernel_size, relation: see :class:`LocalAttention2d`.
        share: value channels that share one attention weight (SAN: 8); for ``dot`` the
            width of one head's query and key.
        min_rel_channels: floor on the query/key width for narrow blocks.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        *,
        relation: Relation = "pairwise",
        share: int = 8,
        min_rel_channels: int = 4,
    ) -> None:
        super().__init__()
        mid = max(channels // 4, 1)
        rel = max(channels // 16, min_rel_channels)
        if relation == "dot":
            groups = math.gcd(mid, max(rel // share, 1))
            rel = max(rel // groups, 1) * groups
        else:
            groups = math.gcd(mid, max(mid // share, 1))
        self.bn1 = nn.BatchNorm2d(channels)
        self.attend = LocalAttention2d(
            channels, rel, mid, kernel_size, relation=relation, groups=groups
        )
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c, H, W)`` -> ``(B, c, H, W)``."""
        out = self.relu(self.bn2(self.attend(self.relu(self.bn1(x)))))
        result: torch.Tensor = x + self.conv(out)
        return result


class SANStage(nn.Module):
    """One SAN stage at half the resolution of its input: 2x2 max pooling (``ceil_mode``, so a
    side of ``n`` becomes ``ceil(n / 2)`` as in EfficientNet's strided convolutions), a 1x1
    transition to ``channels``, ``depth`` :class:`SANBottleneck` blocks, then BN-ReLU."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        depth: int,
        kernel_size: int,
        *,
        relation: Relation,
        share: int,
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.transition = nn.Conv2d(in_channels, channels, 1)
        self.blocks = nn.Sequential(
            *(
                SANBottleneck(channels, kernel_size, relation=relation, share=share)
                for _ in range(depth)
            )
        )
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, channels, ceil(H/2), ceil(W/2))``."""
        out: torch.Tensor = self.relu(self.norm(self.blocks(self.transition(self.pool(x)))))
        return out


class SANFrontEnd(nn.Module):
    """SAN-style front end: image -> feature map of ``out_channels`` at stride ``2**len(widths)``.

    Args:
        in_chans: image channels (1 for a CT window, 3 for RGB).
        out_channels: channels of the output (those the backbone stage it feeds consumes).
        widths: width of each stage; stage ``s`` runs at stride ``2**(s+1)``.
        depths: bottleneck blocks per stage (same length as ``widths``).
        kernel_sizes: neighbourhood side per stage (same length), odd.
        relation: ``pairwise``, ``patchwise`` or ``dot`` (see the module docstring).
        share: see :class:`SANBottleneck`.
        stem_kernel: side of the stem's convolution at full resolution, odd (SAN's is 1; at 1
            the first pixels to meet are already max-pooled).

    Shapes:
        ``(B, in_chans, H, W)`` -> ``(B, out_channels, ceil(H/S), ceil(W/S))`` with
        ``S = 2**len(widths)``.

    Raises:
        ValueError: no stages, lists of different lengths, a depth below 1, an even kernel or
            stem kernel, an unknown relation.
    """

    def __init__(
        self,
        in_chans: int,
        out_channels: int,
        widths: Sequence[int],
        depths: Sequence[int],
        kernel_sizes: Sequence[int],
        *,
        relation: Relation = "pairwise",
        share: int = 8,
        stem_kernel: int = 1,
    ) -> None:
        super().__init__()
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and positive, got {stem_kernel}")
        if not widths or not len(widths) == len(depths) == len(kernel_sizes):
            raise ValueError(
                f"widths, depths and kernel_sizes need one entry per stage, got {list(widths)}, "
                f"{list(depths)}, {list(kernel_sizes)}"
            )
        if min(depths) < 1 or min(widths) < 1:
            raise ValueError(f"widths and depths must be at least 1, got {widths}, {depths}")
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
        self.relation = relation
        self.stride = 2 ** len(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], stem_kernel, padding=stem_kernel // 2),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        previous = widths[0]
        for width, depth, kernel in zip(widths, depths, kernel_sizes, strict=True):
            stages.append(SANStage(previous, width, depth, kernel, relation=relation, share=share))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.project = nn.Sequential(
            nn.Conv2d(previous, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.last_input_hw: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> feature map; shapes in the class docstring."""
        self.last_input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        out: torch.Tensor = self.project(self.stages(self.stem(x)))
        return out

    def attention_layers(self) -> list[LocalAttention2d]:
        """The attention layers, shallow to deep."""
        return [m for m in self.modules() if isinstance(m, LocalAttention2d)]

    def attention_map(self, size_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Where the front end looked at the last forward pass: ``(B, H, W)`` float32.

        The attention each position received relative to uniform attention
        (:meth:`LocalAttention2d.received`: above 1 where neighbours attended), bilinearly
        resized to ``size_hw`` (``(H, W)`` in pixels; default: the last input's size) and
        averaged over every attention layer.

        Raises:
            RuntimeError: before the first forward pass.
        """
        size_hw = size_hw or self.last_input_hw
        if size_hw is None:
            raise RuntimeError("no attention yet: run a forward pass first")
        maps = [
            F.interpolate(
                layer.received().unsqueeze(1), size=size_hw, mode="bilinear", align_corners=False
            )
            for layer in self.attention_layers()
        ]
        return torch.cat(maps, dim=1).mean(dim=1)
