"""The layers of a classifier that turn features into class scores (its "heads")."""

from __future__ import annotations

from torch import nn


def class_heads(model: nn.Module) -> list[nn.Module]:
    """The model's class-score layers: ``model.class_heads()`` where the model lists several
    (a main class map and side ones), else ``[model.get_classifier()]`` (timm's interface).

    Raises:
        TypeError: a model with neither method.
    """
    listed = getattr(model, "class_heads", None)
    if callable(listed):
        heads: list[nn.Module] = list(listed())
        return heads
    classifier = getattr(model, "get_classifier", None)
    if not callable(classifier):
        raise TypeError(f"{type(model).__name__} has no get_classifier() or class_heads()")
    return [classifier()]
