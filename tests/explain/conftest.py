"""A tiny global-pooling CNN with hand-set weights, and checkpoints of it written by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class TinyGapNet(nn.Module):
    """``features = relu(conv1x1(x))``, global average pooling, linear classifier.

    With ``conv`` weights ``[1, -1]`` channel 0 shows bright pixels and channel 1 dark ones; the
    identity classifier makes class ``k`` look at channel ``k``.
    """

    def __init__(self, conv: list[float], classifier: list[list[float]]) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, len(conv), 1, bias=False), nn.ReLU())
        self.classifier = nn.Linear(len(conv), len(classifier), bias=False)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor(conv).view(-1, 1, 1, 1))
            self.classifier.weight.copy_(torch.tensor(classifier))
        self.feature_info = [{"module": "features.1", "num_chs": len(conv), "reduction": 1}]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.forward_features(x).mean(dim=(2, 3)))
        return out


def hooks_left(model: nn.Module) -> int:
    """Forward, pre-forward and backward hooks still registered on any submodule."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def write_checkpoint(
    path: Path, model: nn.Module, name: str, kwargs: dict[str, Any], classes: list[str], size: int
) -> Path:
    """An oncoscope checkpoint (the keys read_checkpoint reads) for a registry model."""
    spec = {
        "model": name,
        "model_kwargs": kwargs,
        "classes": classes,
        "in_chans": 1,
        "image_size": size,
        "mean": [0.0],
        "std": [1.0],
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"spec": spec}, "state_dict": state}, path)
    return path


def use_tiny_models(monkeypatch: Any) -> None:
    """Let checkpoints name ``tiny_gap`` (kwargs: conv, classifier) as the model."""
    import oncoscope.train.checkpoint as checkpoint

    original = checkpoint.create_model

    def create(name: str, num_classes: int = 2, **kwargs: Any) -> nn.Module:
        if name == "tiny_gap":
            return TinyGapNet(kwargs["conv"], kwargs["classifier"])
        return original(name, num_classes=num_classes, **kwargs)

    monkeypatch.setattr(checkpoint, "create_model", create)
