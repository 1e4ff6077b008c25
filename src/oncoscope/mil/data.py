"""Bags as training items: one bag per step (batch size 1), tiles capped for training only.

A training item is ``(features (n, d) float32, class index)``; with ``max_tiles`` a bag of
more tiles gives a random subset of ``max_tiles`` of them, drawn from ``(seed, epoch, index)``
so that a run replays (and resumes) exactly. Validation and prediction use every tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oncoscope.features.bags import read_bag
from oncoscope.mil.labels import MilData, MilItem
from oncoscope.train.data import EpochSampler, mix_seed


def bag_features(
    paths: Sequence[Path],
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], list[np.ndarray[Any, np.dtype[np.int64]]]]:
    """The features of one item's bags joined ``(sum n, d)``, and each bag's coords.

    Raises:
        CorruptFileError, OncoscopeError: an unreadable bag (see :mod:`oncoscope.features.bags`).
    """
    features, coords = [], []
    for path in paths:
        f, c, _ = read_bag(path)
        features.append(f)
        coords.append(c)
    joined = features[0] if len(features) == 1 else np.concatenate(features, axis=0)
    return joined, coords


def feature_statistics(
    items: Sequence[MilItem],
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """Per-feature mean and standard deviation ``(d,)`` over every tile of ``items``' bags
    (each tile counts once; read bag by bag, summed in float64).

    Raises:
        CorruptFileError, OncoscopeError: an unreadable bag (see :mod:`oncoscope.features.bags`).
    """
    count, total, squares = 0, np.zeros(0), np.zeros(0)
    for path in (path for item in items for path in item.bags):
        features = read_bag(path)[0].astype(np.float64)
        if not count:
            total, squares = np.zeros(features.shape[1]), np.zeros(features.shape[1])
        count += len(features)
        total += features.sum(axis=0)
        squares += np.square(features).sum(axis=0)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
    return mean, std


def sample_tiles(n_tiles: int, max_tiles: int | None, seed: int) -> np.ndarray[Any, Any] | None:
    """Sorted indices of ``max_tiles`` tiles drawn without replacement, or None to keep all.

    Example:
        >>> sample_tiles(10, None, 0) is None
        True
        >>> len(sample_tiles(10, 4, 0))
        4
    """
    if max_tiles is None or n_tiles <= max_tiles:
        return None
    generator = np.random.default_rng(seed)
    return np.sort(generator.choice(n_tiles, size=max_tiles, replace=False))


class BagDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(features, class index)`` per item; training items ``(index, epoch)`` are capped.

    Args:
        items: the bags.
        classes: class names (a label's index is its class index).
        max_tiles: the training cap (None: every tile).
        seed: run seed, for the tile sampling.
    """

    def __init__(
        self,
        items: Sequence[MilItem],
        classes: Sequence[str],
        *,
        max_tiles: int | None = None,
        seed: int = 0,
    ) -> None:
        self.items, self.classes = list(items), list(classes)
        self.max_tiles, self.seed = max_tiles, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, None)
        entry = self.items[index]
        features, _ = bag_features(entry.bags)
        if epoch is not None:
            chosen = sample_tiles(len(features), self.max_tiles, mix_seed(self.seed, epoch, index))
            if chosen is not None:
                features = features[chosen]
        return torch.from_numpy(features), self.classes.index(entry.label)


def single_bag(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate a batch of one bag without stacking (a copy of a 100k-tile bag saved)."""
    features, target = batch[0]
    return features, torch.tensor([target])


class BagDataModule(pl.LightningDataModule):
    """Train (shuffled, capped, split across processes) and val (every tile) bag loaders."""

    def __init__(
        self, data: MilData, *, max_tiles: int | None, num_workers: int, seed: int
    ) -> None:
        super().__init__()
        self.data, self.max_tiles = data, max_tiles
        self.num_workers, self.seed = num_workers, seed

    def _loader(self, dataset: BagDataset, sampler: Any) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            batch_size=1,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=single_bag,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Training bags in an order that depends only on ``(seed, epoch)``."""
        dataset = BagDataset(
            self.data.split("train"), self.data.classes, max_tiles=self.max_tiles, seed=self.seed
        )
        return self._loader(dataset, EpochSampler.of_trainer(len(dataset), self.seed, self.trainer))

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation bags in ``slides.csv`` order, every tile."""
        return self._loader(BagDataset(self.data.split("val"), self.data.classes), None)
