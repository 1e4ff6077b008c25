"""Predict the images of a manifest split with a trained checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from oncoscope.dataset.manifest import read_manifest
from oncoscope.errors import CorruptFileError, ManifestError
from oncoscope.train.checkpoint import LoadedModel, load_model
from oncoscope.train.data import ManifestDataset


@dataclass
class SplitPredictions:
    """Predictions of the readable images of a split, and the images that could not be read.

    Attributes:
        frame: the split's manifest rows that were read, plus ``pred`` and ``prob_<class>``.
        skipped: ``(image, problem)`` per unreadable image, in manifest order.
    """

    frame: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _Tolerant(Dataset[tuple[torch.Tensor, int, str]]):
    """Items of a :class:`ManifestDataset` as ``(image, index, problem)``; an unreadable image
    gives zeros and the decoder's message instead of stopping the loader."""

    def __init__(self, inner: ManifestDataset, shape: tuple[int, int, int]) -> None:
        self.inner, self.shape = inner, shape

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            image, _ = self.inner[index]
        except CorruptFileError as error:  # the dataset's own report of an undecodable file
            return torch.zeros(self.shape), index, error.message
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of failing to decode
            return torch.zeros(self.shape), index, f"cannot read image ({error})"
        return image, index, ""


def predict_readable(
    checkpoint: str | Path,
    manifest: str | Path,
    split: str = "test",
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    loaded: LoadedModel | None = None,
) -> SplitPredictions:
    """Class probabilities for every readable image of one split; unreadable ones (missing,
    truncated or undecodable files) are listed, not predicted.

    ``loaded`` is ``checkpoint`` already loaded (:func:`load_model`): a command predicting
    several splits with one checkpoint reads the file once; without it the file is read here.

    Returns:
        :class:`SplitPredictions`: the rows read, in manifest order, with ``pred`` (class name)
        and ``prob_<class>`` (softmax probabilities), and the skipped images.

    Raises:
        ManifestError: an empty split, no readable image in it, labels the checkpoint's
            classes do not include, or an empty ``path`` cell (:func:`read_manifest`).
        OncoscopeError: see :func:`oncoscope.train.checkpoint.load_model`.
    """
    model, spec = loaded if loaded is not None else load_model(checkpoint)
    frame = read_manifest(manifest, required=("path", "label", "split"))
    chosen = frame["split"] == split
    if not chosen.any():
        raise ManifestError(f"the {split} split is empty", manifest)
    skipped: list[tuple[str, str]] = []
    rows = frame[chosen].reset_index(drop=True)
    classes = list(spec.classes)
    unknown = sorted(set(rows["label"].astype(str)) - set(classes))
    if unknown:
        raise ManifestError(
            f"labels {unknown} are not among the model's classes {classes}", manifest
        )
    dataset = ManifestDataset(
        list(rows["path"]),
        [classes.index(str(label)) for label in rows["label"]],
        spec.in_chans,
        spec.eval_transform(),
    )
    shape = (spec.in_chans, spec.image_size, spec.image_size)
    probabilities = np.full((len(rows), len(classes)), np.nan)
    problems: dict[int, str] = {}
    loader = DataLoader(_Tolerant(dataset, shape), batch_size=batch_size, num_workers=num_workers)
    with torch.inference_mode():
        for images, indices, messages in loader:
            read = torch.tensor([not m for m in messages], dtype=torch.bool)
            problems.update({int(i): m for i, m in zip(indices, messages, strict=True) if m})
            if not read.any():
                continue
            batch = images[read].contiguous(memory_format=torch.channels_last)
            logits = model(batch)
            probabilities[indices[read].numpy()] = logits.float().softmax(dim=1).numpy()
    skipped += [(str(rows["path"][i]), problems[i]) for i in sorted(problems)]
    if problems:
        keep = ~rows.index.isin(list(problems))
        rows, probabilities = rows[keep].reset_index(drop=True), probabilities[keep]
    if rows.empty:
        raise ManifestError(f"no image of the {split} split could be read", manifest)
    rows["pred"] = [classes[i] for i in probabilities.argmax(axis=1)]
    for index, name in enumerate(classes):
        rows[f"prob_{name}"] = probabilities[:, index]
    return SplitPredictions(rows, skipped)


class PredictOptions(TypedDict, total=False):
    """How :func:`predict_split` runs, as :func:`predict_readable` takes it: ``batch_size``
    (32), ``num_workers`` (0) and ``loaded``, the checkpoint already loaded (None)."""

    batch_size: int
    num_workers: int
    loaded: LoadedModel | None


def predict_split(
    checkpoint: str | Path,
    manifest: str | Path,
    split: str = "test",
    **options: Unpack[PredictOptions],
) -> pd.DataFrame:
    """Class probabilities for every image of one split.

    Returns:
        The split's manifest rows plus ``pred`` (class name) and ``prob_<class>`` columns
        (softmax probabilities), in manifest order.

    ``options``: as :func:`predict_readable` (:class:`PredictOptions`).

    Raises:
        ManifestError: an empty split, or labels the checkpoint's classes do not include.
        CorruptFileError: an image that cannot be read (the first, with the number of others;
            :func:`predict_readable` predicts the rest instead).
        OncoscopeError: see :func:`oncoscope.train.checkpoint.load_model`.
    """
    result = predict_readable(checkpoint, manifest, split, **options)
    if result.skipped:
        path, problem = result.skipped[0]
        more = len(result.skipped) - 1
        others = f" (and {more} other unreadable image(s))" if more else ""
        raise CorruptFileError(f"{problem}{others}", path)
    return result.frame
