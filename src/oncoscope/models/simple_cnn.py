"""The configurable CNN of seed 002: convolution blocks, pooling, fully connected layers.

Every hyperparameter the CNN primer names is an argument: the number of kernels per block and
their size, stride and padding, the pooling type (max or average) and size, the activation
(sigmoid, tanh, ReLU, leaky ReLU), dropout, the number of convolution blocks and of fully
connected layers. The softmax the primer puts at the output is applied by the loss
(cross-entropy on logits) and by the prediction code, as is usual in PyTorch.

``global_pool`` swaps the flatten for a head that keeps location (Oquab et al., CVPR 2015;
Zhou et al., CVPR 2016): the fully connected layers run at every position of the last feature
map (as 1x1 convolutions), giving a map of class scores that is pooled over positions (``max``,
``avg``, or ``lse``, log-sum-exp). The class map is then exactly what the classifier scored,
so ``explain --method cam`` reads where the decision came from, and a lesion's evidence stays
within the receptive field of the conv blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from oncoscope.models.pooling import pool_positions

Activation = Literal["relu", "leaky_relu", "sigmoid", "tanh"]
Pooling = Literal["max", "avg"]
GlobalPool = Literal["", "max", "avg", "lse"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


class SimpleCNN(nn.Module):
    """Conv blocks (conv -> [batch norm] -> activation -> pool), then flatten and FC layers.

    Args:
        num_classes: outputs of the last layer.
        in_chans: input channels.
        input_size: side of the (square) input in pixels; fixes the flattened width.
        channels: kernels (output channels) of each conv block; its length is the block count.
        kernel_size: conv kernel side in pixels.
        stride: conv stride.
        padding: conv padding in pixels, or ``"same"`` (keeps the size at stride 1).
        pooling: ``"max"`` or ``"avg"``.
        pool_size: pooling window and stride.
        activation: ``"relu"``, ``"leaky_relu"``, ``"sigmoid"`` or ``"tanh"``.
        hidden: widths of the fully connected layers before the output layer.
        dropout: dropout probability before each fully connected layer.
        batch_norm: add batch normalisation after each convolution.
        global_pool: ``""`` (flatten, the primer's network), or ``"max"``, ``"avg"``, ``"lse"``:
            the fully connected layers run at every position and their class scores are
            pooled over positions (see the module docstring).

    Raises:
        ValueError: an unknown activation, pooling or global pooling, or an input that the
            blocks shrink to nothing.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        *,
        input_size: int = 64,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | Literal["same"] = "same",
        pooling: Pooling = "max",
        pool_size: int = 2,
        activation: Activation = "relu",
        hidden: Sequence[int] = (128,),
        dropout: float = 0.5,
        batch_norm: bool = True,
        global_pool: GlobalPool = "",
    ) -> None:
        super().__init__()
        if global_pool not in ("", "max", "avg", "lse"):
            raise ValueError(f"global_pool must be '', 'max', 'avg' or 'lse', got {global_pool!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        if padding == "same" and stride != 1:
            raise ValueError("padding='same' needs stride 1; give padding in pixels instead")
        blocks: list[nn.Module] = []
        previous = in_chans
        for width in channels:
            blocks.append(nn.Conv2d(previous, width, kernel_size, stride, padding))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(width))
            blocks.append(_ACTIVATIONS[activation]())
            pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
            blocks.append(pool(pool_size))
            previous = width
        self.features = nn.Sequential(*blocks)
        self.features.eval()  # batch norm cannot run in training mode on one 1x1 map
        try:
            with torch.no_grad():
                shape = self.features(torch.zeros(1, in_chans, input_size, input_size)).shape
        except RuntimeError:
            shape = torch.Size([0])
        self.features.train()
        if 0 in shape:
            raise ValueError(f"input_size {input_size} shrinks to nothing through the conv blocks")
        self.global_pool = global_pool
        positionwise: list[nn.Module] = []  # hidden layers at every position (global_pool)
        layers: list[nn.Module] = [] if global_pool else [nn.Flatten()]
        width_in = int(shape[1]) if global_pool else int(shape[1] * shape[2] * shape[3])
        for width in hidden:
            if global_pool:
                positionwise += [
                    nn.Dropout(dropout),
                    nn.Conv2d(width_in, width, 1),
                    _ACTIVATIONS[activation](),
                ]
            else:
                layers += [
                    nn.Dropout(dropout),
                    nn.Linear(width_in, width),
                    _ACTIVATIONS[activation](),
                ]
            width_in = width
        layers += [nn.Dropout(dropout), nn.Linear(width_in, num_classes)]
        self.positionwise = nn.Sequential(*positionwise)
        self.classifier = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.feature_info = [
            {
                "num_chs": int(w),
                "reduction": pool_size ** (i + 1) * stride ** (i + 1),
                "module": f"features.{_block_end(i, batch_norm)}",
            }
            for i, w in enumerate(channels)
        ]
        self.pretrained_cfg: dict[str, Any] = {
            "input_size": (in_chans, input_size, input_size),
            "mean": (0.5,) * in_chans,
            "std": (0.25,) * in_chans,
            "num_classes": num_classes,
            "first_conv": "features.0",
            "classifier": "classifier",
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's feature map (through the position-wise hidden layers when
        ``global_pool`` is set): ``(B, C, h, w)``."""
        out: torch.Tensor = self.positionwise(self.features(x))
        return out

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Class logits ``(B, K)`` from the feature map.

        Flatten and fully connected layers; with ``global_pool``, the class scores of every
        position ``(B, h, w, K)`` pooled over positions. ``pre_logits``: the features the output
        layer reads (with ``global_pool``, the feature map pooled the same way), ``(B, C)``.
        """
        if not self.global_pool:
            head = self.classifier[:-1] if pre_logits else self.classifier
            out: torch.Tensor = head(features)
            return out
        if pre_logits:
            return pool_positions(features.flatten(2), self.global_pool)
        scores = self.classifier(features.permute(0, 2, 3, 1))  # (B, h, w, K)
        return pool_positions(scores.flatten(1, 2).transpose(1, 2), self.global_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, input_size, input_size)`` -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The output layer."""
        return self.classifier[-1]


def _block_end(index: int, batch_norm: bool) -> int:
    """Index in ``features`` of the activation of conv block ``index``."""
    per_block = 4 if batch_norm else 3
    return index * per_block + per_block - 2
