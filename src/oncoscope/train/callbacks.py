"""Lightning callbacks of a training run: per-batch reseeding, the epoch history file, and
checkpoints that keep their best-model tracking when the run folder moves."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from oncoscope.io.atomic import atomic_path
from oncoscope.train.data import mix_seed

HISTORY_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_balanced_acc",
)


class BatchReseed(Callback):
    """Reseed torch, numpy and random from ``(seed, epoch, batch)`` before each training batch.

    Dropout and anything else drawing from the global generators then depends on the position
    in training only, not on what else drew from them before (data loader start-up, for one),
    so a run resumed at an epoch boundary continues exactly as the uninterrupted run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        """Seed the global generators for this batch."""
        seed = mix_seed(self.seed, trainer.current_epoch, batch_idx)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)


class EpochHistory(Callback):
    """Write ``metrics.csv``: one row per epoch (:data:`HISTORY_COLUMNS`), kept across resumes.

    Lightning's CSV logger starts a resumed run's file afresh; this one keeps the rows of the
    epochs before the resume point and replaces any after it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the rows of epochs already done (those before the one about to run)."""
        self.rows = []
        if self.path.is_file():
            with self.path.open() as handle:
                self.rows = [
                    r for r in csv.DictReader(handle) if int(r["epoch"]) < trainer.current_epoch
                ]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Append this epoch's figures and rewrite the file (rank 0 alone)."""
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": str(trainer.current_epoch)}
        optimizers = trainer.optimizers
        row["lr"] = f"{optimizers[0].param_groups[0]['lr']:.6g}" if optimizers else ""
        for name in HISTORY_COLUMNS[2:]:
            row[name] = f"{float(metrics[name]):.6g}" if name in metrics else ""
        self.rows.append(row)
        with atomic_path(self.path) as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, whose saved state follows a moved or copied run folder.

    Lightning restores ``best_model_score``, ``best_k_models`` and the other tracking state only
    when the checkpoint folder is the one it was saved from; in a moved or copied run it drops
    them, and the first epoch after a resume then replaces ``best.ckpt`` whatever its loss.
    Here the saved paths that lie in the old checkpoint folder are rebased onto the new one
    before Lightning reads them, so the best epoch stays the best and nothing points back into
    the old folder. The state key is plain ``ModelCheckpoint``'s, so runs saved by it resume too.
    """

    @property
    def state_key(self) -> str:
        """The key ``ModelCheckpoint`` with these settings stores its state under."""
        key = super().state_key
        return ModelCheckpoint.__qualname__ + key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the tracking state, its paths moved into this run's checkpoint folder."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and os.path.normpath(saved) != os.path.normpath(self.dirpath):
            state_dict = _rebased(state_dict, Path(saved), Path(self.dirpath))
            state_dict["dirpath"] = self.dirpath
        super().load_state_dict(state_dict)


def _rebased(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """A copy of a ``ModelCheckpoint`` state with the paths in ``old`` moved into ``new``."""

    def move(path: Any) -> Any:
        if isinstance(path, str) and path and Path(path).parent == old:
            return str(new / Path(path).name)
        return path

    moved = dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in moved:
            moved[key] = move(moved[key])
    if isinstance(moved.get("best_k_models"), dict):
        moved["best_k_models"] = {move(k): v for k, v in moved["best_k_models"].items()}
    return moved
