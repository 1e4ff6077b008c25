"""Epochs after a run leaves chance: a cosine schedule that can be stretched, and the callback
that stretches it.

Some models sit at chance for a number of epochs that belongs to the seed and to the CPU's
rounding before they learn (the ``seed000-cam`` recipe's SA front end: benchmarks/README.md,
"Epochs after the plateau at chance"); one that leaves late has few epochs left to learn where
the lesion is. With ``epochs_after_chance`` a run trains at least that many epochs after the
first epoch whose training accuracy reaches ``left_chance_accuracy``, and the rest of its cosine
schedule is spread over them. A run that leaves early enough is not changed at all: the same
epochs, the same learning rate at every step. Written here because neither Lightning nor timm
has a schedule whose length is decided by a training metric.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR

log = logging.getLogger(__name__)


class StretchableCosine(CosineAnnealingLR):
    """PyTorch's ``CosineAnnealingLR`` (a step each optimiser step, ``T_max`` steps from the base
    learning rate to ``eta_min``), whose rest can be spread over more steps by :meth:`stretch`.

    Until stretched, and up to the step it is stretched at, the learning rates are exactly
    ``CosineAnnealingLR``'s. After it, the rest of the cosine is slowed so that it reaches
    ``eta_min`` at the new last step; the learning rate is continuous there.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803 - PyTorch's name
        #: The step the schedule was stretched at and its new last step (-1: not stretched).
        self.stretched_at = -1
        self.stretched_to = -1
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    def stretch(self, at_step: int, to_step: int) -> None:
        """Spread the schedule's steps from ``at_step`` to ``T_max`` over ``at_step`` to
        ``to_step`` (optimiser steps counted from the run's start).

        Raises:
            ValueError: a schedule already stretched, ``at_step`` not in ``[0, T_max)`` or
                ``to_step`` not after ``T_max``.
        """
        if self.stretched_at >= 0:
            raise ValueError("the schedule is already stretched")
        if not 0 <= at_step < self.T_max or to_step <= self.T_max:
            raise ValueError(
                f"cannot stretch steps {at_step}-{self.T_max} to end at {to_step}: "
                f"need 0 <= {at_step} < {self.T_max} < {to_step}"
            )
        self.stretched_at, self.stretched_to = at_step, to_step

    def position(self, step: int) -> float:
        """How far along the cosine ``step`` is, from 0 (the base rate) to 1 (``eta_min``)."""
        if self.stretched_at < 0 or step <= self.stretched_at:
            return min(step / self.T_max, 1.0)
        done = self.stretched_at / self.T_max
        spread = (step - self.stretched_at) / (self.stretched_to - self.stretched_at)
        return done + min(spread, 1.0) * (1.0 - done)

    def get_lr(self) -> list[Any]:
        """``CosineAnnealingLR``'s rates, and the stretched cosine's after the stretch."""
        if self.stretched_at < 0 or self.last_epoch <= self.stretched_at:
            return super().get_lr()
        factor = (1.0 + math.cos(math.pi * self.position(self.last_epoch))) / 2.0
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]


class LeaveChance(Callback):
    """Train at least ``epochs_after`` epochs after the first epoch whose training accuracy
    (``train_acc``) reaches ``accuracy``: the run grows past its ``epochs`` when that epoch comes
    late, and the module's :class:`StretchableCosine`, if it has one, is stretched over the
    added epochs. The trainer's ``max_epochs`` must be ``epochs + epochs_after``; a run that
    never reaches ``accuracy``, or reaches it only in its last planned epoch (no schedule left
    to spread), stops after ``epochs``.

    Args:
        epochs: the run's planned epochs.
        epochs_after: epochs to train after the one that left chance; 0: never grows.
        accuracy: training accuracy that counts as having left chance (a fraction).
    """

    def __init__(self, epochs: int, epochs_after: int, accuracy: float) -> None:
        self.epochs, self.epochs_after, self.accuracy = epochs, epochs_after, accuracy
        #: The first epoch at ``accuracy`` or more (counted from 0); -1: not yet.
        self.left_at = -1

    @property
    def target_epochs(self) -> int:
        """The epochs this run trains, as far as is known now."""
        if self.left_at < 0 or self.left_at + 1 >= self.epochs:  # no schedule left to spread
            return self.epochs
        return max(self.epochs, self.left_at + 1 + self.epochs_after)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A resumed run that has trained all its epochs trains no more."""
        if trainer.current_epoch >= self.target_epochs:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch that left chance, stretch the schedule when it came late, and stop
        the run after its last epoch."""
        epoch = trainer.current_epoch
        accuracy = trainer.callback_metrics.get("train_acc")
        if self.left_at < 0 and accuracy is not None and float(accuracy) >= self.accuracy:
            self.left_at = epoch
            if self.target_epochs > self.epochs:
                self._stretch(trainer, epoch)
        if epoch + 1 >= self.target_epochs:
            trainer.should_stop = True

    def _stretch(self, trainer: pl.Trainer, epoch: int) -> None:
        log.info(
            "left chance late, in epoch %d: training %d epochs (%d after it) instead of %d",
            epoch, self.target_epochs, self.epochs_after, self.epochs,
        )  # fmt: skip
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, StretchableCosine):
                per_epoch = scheduler.T_max // self.epochs
                scheduler.stretch((epoch + 1) * per_epoch, self.target_epochs * per_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The epoch that left chance, saved in the checkpoint so a resumed run keeps it."""
        return {"left_at": self.left_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.left_at = int(state_dict.get("left_at", -1))
