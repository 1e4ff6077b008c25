"""The multi-process tile runner: Lightning ``trainer.predict`` over ``devices`` (or nodes).

Kept apart from :mod:`oncoscope.inference.predict_tiles` so that a single-process command
(``oncoscope slide`` or ``features`` without ``--devices``) never imports Lightning, whose
import alone takes seconds; the commands import this module only when ``--devices`` asks
for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from numpy.lib.format import open_memmap
from torch import nn
from torch.utils.data import Dataset

from oncoscope.hardware import LIGHTNING_PRECISION
from oncoscope.inference.predict_tiles import (
    Head,
    OnBatch,
    softmax_head,
    tile_loader,
    to_model_input,
)
from oncoscope.models.spec import ModelSpec
from oncoscope.process_group import end_process_group_at_exit


class _TilePredictor(pl.LightningModule):
    """``predict_step``: normalise a uint8 batch and return ``(indices, probabilities)`` (or
    another ``head`` of the model's output)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, head: Head = softmax_head) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.head = head

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        tiles, index = batch
        x = to_model_input(tiles, self.spec, self.device)
        return index, self.head(self.model(x).float())


class _MemmapWriter(BasePredictionWriter):
    """Writes each rank's batches into the shared ``.npy`` memory map by tile index.

    Rank 0 creates the file when prediction starts and the other ranks wait for it (a
    barrier), so no rank can replace the file another one is already writing into.
    """

    def __init__(self, path: Path, shape: tuple[int, int], on_batch: OnBatch | None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.shape = shape
        self.on_batch = on_batch
        self._memmap: np.memmap[Any, np.dtype[np.float32]] | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape).flush()
        trainer.strategy.barrier()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._memmap is None:
            self._memmap = open_memmap(self.path, mode="r+")
        index, probs = prediction
        self._memmap[index.cpu().numpy()] = probs.cpu().numpy()
        if self.on_batch is not None and trainer.is_global_zero:
            self.on_batch(len(index) * trainer.world_size)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._memmap is not None:
            self._memmap.flush()
        self._memmap = None
        trainer.strategy.barrier()  # every rank's tiles are on disk before rank 0 reads them


def predict_tiles_distributed(
    model: nn.Module,
    spec: ModelSpec,
    dataset: Dataset[Any],
    probabilities_path: Path,
    shape: tuple[int, int],
    *,
    devices: int,
    accelerator: str = "auto",
    num_nodes: int = 1,
    batch_size: int = 16,
    workers: int = 0,
    precision: str = "fp32",
    on_batch: OnBatch | None = None,
    head: Head = softmax_head,
) -> bool:
    """Write the float32 ``.npy`` memory map of ``shape`` ``(tiles, classes)`` at
    ``probabilities_path`` through Lightning's predict loop.

    Lightning shards the tiles over ``devices`` (its ``DistributedSampler``, padded by repeating
    tiles, which the writer writes twice with the same values); rank 0 creates the file and all
    ranks write into it, so it must be on a file system all of them see. ``head``: as in
    :func:`predict_tiles` (the file's second axis is its width).

    Returns:
        True in the process that should write the outputs (global rank 0).
    """
    end_process_group_at_exit()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if devices * num_nodes > 1 else "auto",
        precision=LIGHTNING_PRECISION[precision],  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=True,
        callbacks=[_MemmapWriter(probabilities_path, shape, on_batch)],
    )
    loader = tile_loader(dataset, batch_size, workers, torch.device("cpu"))
    module = _TilePredictor(model.to(memory_format=torch.channels_last), spec, head)  # type: ignore[call-overload]
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    return bool(trainer.is_global_zero)
