"""The LightningModule: a registry model, cross-entropy, optimiser and schedule from the config."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from oncoscope.models.class_heads import class_heads
from oncoscope.models.spec import ModelSpec
from oncoscope.train.chance import StretchableCosine


class ClassifierModule(pl.LightningModule):
    """Loss (class weights, label smoothing), accuracy metrics, optimiser and schedule of a
    classifier, whatever its inputs (images here, feature bags in :mod:`oncoscope.mil`).

    Args:
        model: the network.
        spec: what a later command needs to rebuild and feed the model, as plain values (str,
            int, float, list, dict), stored in the checkpoint's ``hyper_parameters``
            (checkpoints load with ``weights_only=True``); needs ``classes``.
        optim: ``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``scheduler``,
            ``milestones``, ``gamma``, ``epochs``, ``label_smoothing``, ``class_weights``
            (a list, or None); other entries (``stain_augment``) are stored as a record of
            how the model was trained.
    """

    class_weights: torch.Tensor | None

    def __init__(self, model: nn.Module, spec: dict[str, Any], optim: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.optim = optim
        weights = optim.get("class_weights")
        self.register_buffer(
            "class_weights",
            torch.tensor(weights, dtype=torch.float32) if weights else None,
            persistent=False,
        )
        num_classes = len(spec["classes"])
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_balanced = MulticlassAccuracy(num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised images -> ``(B, classes)`` logits."""
        out: torch.Tensor = self.model(x)
        return out

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weights,
            label_smoothing=float(self.optim.get("label_smoothing", 0.0)),
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        """One optimisation step; logs ``train_loss`` and ``train_acc`` per epoch. A model with
        ``forward_deep_supervision`` (side class maps) adds each side's loss to the main one."""
        x, y = batch
        x = x.contiguous(memory_format=torch.channels_last)
        supervised = getattr(self.model, "forward_deep_supervision", None)
        if callable(supervised):  # side heads trained on the same label (models/front_end_cam)
            logits, sides = supervised(x)
            loss = self._loss(logits, y)
            for side in sides:
                loss = loss + self._loss(side, y)
        else:
            logits = self(x)
            loss = self._loss(logits, y)
        self.train_accuracy(logits.argmax(dim=1), y)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True
        )
        self.log("train_acc", self.train_accuracy, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        """Logs ``val_loss``, ``val_acc`` and ``val_balanced_acc`` per epoch."""
        x, y = batch
        logits = self(x.contiguous(memory_format=torch.channels_last))
        self.val_accuracy(logits.argmax(dim=1), y)
        self.val_balanced(logits.argmax(dim=1), y)
        self.log(
            "val_loss", self._loss(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True
        )
        self.log("val_acc", self.val_accuracy, on_epoch=True, batch_size=len(y))
        self.log("val_balanced_acc", self.val_balanced, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        """Adam, AdamW, RMSProp or SGD, with a step schedule (milestones in epochs), a cosine
        schedule annealed at every optimiser step over the whole run (from ``lr`` towards 0:
        no jumps at epoch boundaries, the schedule the CT localisation probe measured; spread
        over more epochs when the run grows, :mod:`oncoscope.train.chance`), or none.
        """
        o = self.optim
        params = self.model.parameters()
        name = o["optimizer"]
        optimizer: torch.optim.Optimizer
        if name == "adam":
            optimizer = torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
        elif name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"])
        elif name == "rmsprop":
            optimizer = torch.optim.RMSprop(
                params, lr=o["lr"], weight_decay=o["weight_decay"], momentum=o["momentum"]
            )
        else:
            optimizer = torch.optim.SGD(
                params, lr=o["lr"], weight_decay=o["weight_decay"], momentum=o["momentum"]
            )
        interval = "epoch"
        if o["scheduler"] == "step":
            scheduler: Any = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=o["milestones"], gamma=o["gamma"]
            )
        elif o["scheduler"] == "cosine":  # over the planned epochs, which a run may outgrow
            planned = int(self.trainer.estimated_stepping_batches) * o["epochs"]
            steps = max(planned // max(int(self.trainer.max_epochs or o["epochs"]), 1), 1)
            scheduler = StretchableCosine(optimizer, T_max=steps)
            interval = "step"
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }


class LitClassifier(ClassifierModule):
    """The Lightning module training an image classifier over any registry model.

    Args:
        model: the network (from ``oncoscope.models.create_model``).
        spec: :meth:`oncoscope.models.spec.ModelSpec.to_dict` of the model's spec (stored as
            plain values); ``self.spec`` is the typed :class:`~oncoscope.models.spec.ModelSpec`.
        optim: see :class:`ClassifierModule`.
    """

    def __init__(self, model: nn.Module, spec: dict[str, Any], optim: dict[str, Any]) -> None:
        super().__init__(model, spec, optim)
        self.spec = ModelSpec.from_dict(spec)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """During the first ``freeze_epochs`` epochs, drop every gradient but the class heads'
        before the step: the optimisers skip a parameter without one, so the rest stays as
        loaded and its moments untouched. Set from the epoch alone, so a resumed run does the
        same.

        Why dropped rather than not computed (``requires_grad`` off): DDP waits at every step
        for a gradient of every parameter it was built with, so this works in any number of
        processes (the gradients are dropped after DDP has reduced them), at the price of the
        body's backward in the frozen epochs. Lightning clips gradients after this hook, so
        clipping sees the heads' alone.
        """
        if self.current_epoch >= int(self.optim.get("freeze_epochs", 0)):
            return
        heads = {id(p) for head in class_heads(self.model) for p in head.parameters()}
        for parameter in self.model.parameters():
            if id(parameter) not in heads:
                parameter.grad = None
