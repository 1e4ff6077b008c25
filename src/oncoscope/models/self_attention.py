"""The earlier, residual SA-EfficientNet (``sa_residual_efficientnet``): one SAN layer in front of
a whole EfficientNet.

Kept under its own name for comparison with the seed-000 model (``sa_efficientnet``,
:mod:`oncoscope.models.sa_efficientnet`, whose front end *replaces* the EfficientNet's stem and
early stages) until training on the phantom cohort shows whether it earns its place.

The front end follows SAN (Zhao, Jia & Koltun, "Exploring Self-attention for Image Recognition",
CVPR 2020): every pixel attends to the ``k x k`` neighbourhood around it. The attention weights
come either from the *pairwise* subtraction relation ``phi(x_i) - psi(x_j)`` joined with an
encoding of the relative position of ``j``, or *patchwise* from the whole patch of ``psi``
features joined with ``phi(x_i)``; a small MLP (``gamma``) maps that to one weight per channel
group and neighbour, normalised with a softmax over the neighbourhood, and the output is the
weighted sum of ``beta(x_j)``. Written in plain PyTorch with ``F.unfold`` so that it runs on CPU
and GPU (SAN's own aggregation kernels are CUDA-only).

Here the front end re-weights the image and a whole EfficientNet classifies the result; it is
residual, ``x + project(attend(embed(x)))``, with ``project`` initialised near zero,
so a pretrained EfficientNet behaves exactly as pretrained at step 0 and learns to use the
attention from there. The last attention weights are kept (``last_attention``) so that the
explain step can show where the model looked.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from oncoscope.models.front_end_model import FrontEndModel

AttentionMode = Literal["pairwise", "patchwise"]


class LocalSelfAttention2d(nn.Module):
    """SAN local self-attention over a ``kernel_size x kernel_size`` neighbourhood.

    Args:
        channels: input and output channels.
        kernel_size: neighbourhood side (odd).
        mode: ``"pairwise"`` (subtraction relation + position encoding) or ``"patchwise"``.
        groups: channel groups that share one attention weight (``channels % groups == 0``).
        reduction: width reduction of the relation channels inside ``gamma``.

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C, H, W)``; ``last_attention`` is
        ``(B, groups, k*k, H, W)`` and sums to 1 over its third axis.
    """

    offsets: torch.Tensor
    position: nn.Conv1d

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        *,
        mode: AttentionMode = "pairwise",
        groups: int = 4,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        if mode not in ("pairwise", "patchwise"):
            raise ValueError(f"mode must be 'pairwise' or 'patchwise', got {mode!r}")
        self.channels, self.kernel_size, self.mode, self.groups = (
            channels,
            kernel_size,
            mode,
            groups,
        )
        relation = max(channels // reduction, 4)
        self.phi = nn.Conv2d(channels, relation, 1)
        self.psi = nn.Conv2d(channels, relation, 1)
        self.beta = nn.Conv2d(channels, channels, 1)
        neighbours = kernel_size * kernel_size
        if mode == "pairwise":
            # relative position (dy, dx) of each neighbour, encoded to `relation` channels
            offsets = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
            dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
            grid = torch.stack([dy, dx]).reshape(2, neighbours) / max(kernel_size // 2, 1)
            self.register_buffer("offsets", grid, persistent=False)
            self.position = nn.Conv1d(2, relation, 1)
            gamma_in = 2 * relation
            gamma_out = groups
        else:
            gamma_in = relation * (neighbours + 1)
            gamma_out = groups * neighbours
        self.gamma = nn.Sequential(
            nn.Conv2d(gamma_in, relation, 1),
            nn.BatchNorm2d(relation),
            nn.ReLU(inplace=True),
            nn.Conv2d(relation, gamma_out, 1),
        )
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over each pixel's neighbourhood; see the class docstring for shapes."""
        b, c, h, w = x.shape
        k2 = self.kernel_size * self.kernel_size
        pad = self.kernel_size // 2
        query = self.phi(x)  # (B, R, H, W)
        keys = F.unfold(self.psi(x), self.kernel_size, padding=pad)  # (B, R*k2, H*W)
        relation = query.shape[1]
        keys = keys.view(b, relation, k2, h, w)
        if self.mode == "pairwise":
            position = self.position(self.offsets.unsqueeze(0))  # (1, R, k2)
            position = position.view(1, relation, k2, 1, 1).expand(b, -1, -1, h, w)
            delta = query.unsqueeze(2) - keys  # (B, R, k2, H, W)
            joined = torch.cat([delta, position], dim=1)  # (B, 2R, k2, H, W)
            logits = self.gamma(joined.reshape(b, 2 * relation, k2 * h, w))
            logits = logits.view(b, self.groups, k2, h, w)
        else:
            joined = torch.cat([keys.reshape(b, relation * k2, h, w), query], dim=1)
            logits = self.gamma(joined).view(b, self.groups, k2, h, w)
        attention = logits.softmax(dim=2)
        self.last_attention = attention.detach()
        values = F.unfold(self.beta(x), self.kernel_size, padding=pad)
        values = values.view(b, self.groups, c // self.groups, k2, h, w)
        out: torch.Tensor = (attention.unsqueeze(2) * values).sum(dim=3)
        return out.reshape(b, c, h, w)

    def attention_map(self) -> torch.Tensor:
        """Attention each pixel receives from its neighbours, ``(B, H, W)``, averaged over groups.

        Each query's weights sum to one; folding them back onto the pixels they point at shows
        where the front end looked (1.0 everywhere for uniform attention, away from the border).

        Raises:
            RuntimeError: before the first forward pass.
        """
        if self.last_attention is None:
            raise RuntimeError("no attention yet: run a forward pass first")
        b, _, k2, h, w = self.last_attention.shape
        weights = self.last_attention.mean(dim=1).reshape(b, k2, h * w)
        folded = F.fold(weights, (h, w), self.kernel_size, padding=self.kernel_size // 2)
        received: torch.Tensor = folded[:, 0]
        return received


class SelfAttentionFrontEnd(nn.Module):
    """Residual SAN front end for images: ``x + project(attend(embed(x)))``.

    Args:
        in_chans: image channels (1 for a CT window, 3 for RGB or a 3-window stack).
        embed_chans: channels the attention works in.
        kernel_size, mode, groups: see :class:`LocalSelfAttention2d`.
        init_scale: standard deviation of the output projection's initial weights; near zero so
            the front end starts as the identity.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_chans: int = 16,
        kernel_size: int = 7,
        *,
        mode: AttentionMode = "pairwise",
        groups: int = 4,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_chans, 3, padding=1, bias=False),
            nn.BatchNorm2d(embed_chans),
            nn.ReLU(inplace=True),
        )
        self.attend = LocalSelfAttention2d(embed_chans, kernel_size, mode=mode, groups=groups)
        self.project = nn.Conv2d(embed_chans, in_chans, 1)
        nn.init.normal_(self.project.weight, std=init_scale)
        if self.project.bias is not None:
            nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> re-weighted image of the same shape."""
        out: torch.Tensor = x + self.project(self.attend(self.embed(x)))
        return out

    def attention_map(self) -> torch.Tensor:
        """``(B, H, W)`` attention received per pixel at the last forward pass."""
        return self.attend.attention_map()


class ResidualSAEfficientNet(FrontEndModel):
    """A residual SAN layer in front of a whole timm backbone (EfficientNet-B4 default).

    The backbone's timm interface is passed through (:class:`FrontEndModel`) so the rest of
    oncoscope treats it like any timm model.
    """

    def __init__(self, front: SelfAttentionFrontEnd, backbone: nn.Module) -> None:
        super().__init__(front, backbone)
