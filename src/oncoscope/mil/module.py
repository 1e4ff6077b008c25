"""The LightningModule of MIL training: one bag per step, the bag loss plus the model's own."""

from __future__ import annotations

from typing import Any

import torch

from oncoscope.mil.models import AttentionMIL
from oncoscope.train.module import ClassifierModule


class MilClassifier(ClassifierModule):
    """Bag classifier: :class:`oncoscope.train.module.ClassifierModule`'s loss (class weights, label
    smoothing), metrics, optimiser and schedule around a MIL model.

    Args:
        model: from :func:`oncoscope.mil.models.create_mil_model`.
        spec: what ``mil predict`` and ``evaluate`` need (see ``oncoscope.mil.train``).
        optim: as :class:`~oncoscope.train.module.ClassifierModule`.
    """

    model: AttentionMIL

    def __init__(self, model: AttentionMIL, spec: dict[str, Any], optim: dict[str, Any]) -> None:
        super().__init__(model, spec, optim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` features of one bag -> ``(1, classes)`` logits."""
        logits: torch.Tensor = self.model(x)[0]
        return logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        """One bag: bag loss (+ the CLAM instance loss); logs ``train_loss``, ``train_acc``."""
        features, target = batch
        logits, attention, embeddings = self.model.outputs(features)
        loss = self._loss(logits, target)
        extra = self.model.auxiliary_loss(embeddings, attention, int(target[0]))
        if extra is not None:
            loss = (1 - self.model_instance_weight) * loss + extra
        self.train_accuracy(logits.argmax(dim=1), target)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        self.log("train_acc", self.train_accuracy, on_step=False, on_epoch=True, batch_size=1)
        return loss

    @property
    def model_instance_weight(self) -> float:
        """The instance loss's share of the total (0 for models without one)."""
        return float(getattr(self.model, "instance_weight", 0.0))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        """Logs ``val_loss``, ``val_acc`` and ``val_balanced_acc`` per epoch (every tile)."""
        features, target = batch
        logits = self(features)
        self.val_accuracy(logits.argmax(dim=1), target)
        self.val_balanced(logits.argmax(dim=1), target)
        self.log(
            "val_loss", self._loss(logits, target), on_epoch=True, batch_size=1, sync_dist=True
        )
        self.log("val_acc", self.val_accuracy, on_epoch=True, batch_size=1)
        self.log("val_balanced_acc", self.val_balanced, on_epoch=True, batch_size=1)
