"""Predict the images of a manifest split with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from oncoscope.dataset.manifest import read_manifest
from oncoscope.errors import ManifestError
from oncoscope.train.checkpoint import load_model
from oncoscope.train.data import ManifestDataset, eval_transform


def predict_split(
    checkpoint: str | Path,
    manifest: str | Path,
    split: str = "test",
    *,
    batch_size: int = 32,
    num_workers: int = 0,
) -> pd.DataFrame:
    """Class probabilities for every image of one split.

    Returns:
        The split's manifest rows plus ``pred`` (class name) and ``prob_<class>`` columns
        (softmax probabilities), in manifest order.

    Raises:
        ManifestError: an empty split, or labels the checkpoint's classes do not include.
        OncoscopeError: see :func:`oncoscope.train.checkpoint.load_model`.
    """
    model, spec = load_model(checkpoint)
    frame = read_manifest(manifest, required=("path", "label", "split"))
    rows = frame[frame["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise ManifestError(f"the {split} split is empty", manifest)
    classes = list(spec["classes"])
    unknown = sorted(set(rows["label"].astype(str)) - set(classes))
    if unknown:
        raise ManifestError(
            f"labels {unknown} are not among the model's classes {classes}", manifest
        )
    dataset = ManifestDataset(
        list(rows["path"]),
        [classes.index(str(label)) for label in rows["label"]],
        spec["in_chans"],
        eval_transform(spec["image_size"], spec["mean"], spec["std"]),
    )
    probabilities = []
    with torch.inference_mode():
        for images, _ in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            logits = model(images.contiguous(memory_format=torch.channels_last))
            probabilities.append(logits.float().softmax(dim=1).numpy())
    probs = np.concatenate(probabilities)
    rows["pred"] = [classes[i] for i in probs.argmax(axis=1)]
    for index, name in enumerate(classes):
        rows[f"prob_{name}"] = probs[:, index]
    return rows
