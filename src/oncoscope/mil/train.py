"""``oncoscope mil train``: attention MIL on slide or patient labels, in a training run folder.

The run folder is a training run's (see :mod:`oncoscope.train.scaffold`): ``config.yaml``,
``checkpoints/best.ckpt`` (lowest validation loss) and ``checkpoints/last.ckpt`` (every epoch),
``metrics.csv``, ``tensorboard/`` and ``run.json``; refused when in use unless ``resume`` or
``overwrite``, as ``oncoscope train`` does. The checkpoint's spec carries ``kind: mil``, the
model and its kwargs, the classes, the feature size, the encoder of the bags, the bag level
and the tiling, so ``mil predict`` and ``evaluate`` need only the checkpoint and bags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from pydantic import Field

from oncoscope import __version__
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.mil.data import BagDataModule, feature_statistics
from oncoscope.mil.labels import MilData, load_mil_data
from oncoscope.mil.models import MIL_MODELS, create_mil_model
from oncoscope.mil.module import MilClassifier
from oncoscope.train.checkpoint import read_checkpoint
from oncoscope.train.config import RunSettings, validated
from oncoscope.train.scaffold import RunResult, TrainingRun

#: The ``kind`` a MIL checkpoint's spec carries.
MIL_KIND = "mil"


class MilConfig(RunSettings):
    """Everything a MIL training needs; see ``oncoscope mil train --help`` for each field."""

    bags: Path
    labels: Path
    model: Literal["abmil", "clam_sb"] = "abmil"
    bag_level: Literal["slide", "patient"] = "slide"
    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["none", "cosine"] = "none"
    max_tiles: int | None = Field(None, ge=1)
    class_weights: bool = True
    hidden: int = Field(256, ge=1)
    attention_dim: int = Field(128, ge=1)
    dropout: float = Field(0.25, ge=0, lt=1)
    k_sample: int = Field(8, ge=1)
    standardize: bool = False
    num_workers: int = Field(0, ge=0)

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~oncoscope.mil.models.create_mil_model`."""
        kwargs: dict[str, Any] = {
            "hidden": self.hidden,
            "attention_dim": self.attention_dim,
            "dropout": self.dropout,
        }
        if self.model == "clam_sb":
            kwargs["k_sample"] = self.k_sample
        if self.standardize:
            kwargs["standardize"] = True
        return kwargs


def mil_config(**values: Any) -> MilConfig:
    """A :class:`MilConfig` from keyword values (None values dropped), errors in one line.

    Raises:
        InvalidOptionError: a value out of range or an unknown model (the message names it).
    """
    values = {k: v for k, v in values.items() if v is not None}
    if "model" in values and values["model"] not in MIL_MODELS:
        raise InvalidOptionError(
            f"unknown MIL model {values['model']!r}; use one of {', '.join(MIL_MODELS)}"
        )
    return validated(MilConfig, values, "MIL")


def build_mil_module(config: MilConfig, data: MilData) -> MilClassifier:
    """The MIL model and the LightningModule around it, with the checkpoint's spec."""
    kwargs = config.model_kwargs()
    model = create_mil_model(config.model, data.feature_dim, len(data.classes), **kwargs)
    if config.standardize:
        mean, std = feature_statistics(data.split("train"))
        model.set_feature_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    counts = data.class_counts()
    weights = None
    if config.class_weights:
        weights = [sum(counts) / (len(counts) * max(c, 1)) for c in counts]
    spec = {
        "kind": MIL_KIND,
        "model": config.model,
        "model_kwargs": kwargs,
        "classes": data.classes,
        "feature_dim": data.feature_dim,
        "encoder": data.encoder,
        "encoder_spec": data.encoder_spec,
        "bag_level": data.bag_level,
        "tiles": data.tiles,
        "group_column": "patient",
        "labels": str(Path(config.labels).absolute()),
        "bags": str(Path(config.bags).absolute()),
        "oncoscope_version": __version__,
    }
    optim = {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "momentum": 0.0,
        "scheduler": config.scheduler,
        "milestones": [],
        "gamma": 0.1,
        "epochs": config.epochs,
        "label_smoothing": 0.0,
        "class_weights": weights,
    }
    return MilClassifier(model, spec, optim)


def train_mil(
    config: MilConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress_bar: bool = True,
) -> RunResult:
    """Train a MIL model as configured; see the module docstring for the run folder.

    Raises:
        OncoscopeError: a run folder in use (see :func:`oncoscope.train.scaffold.check_run_folder`);
            bad labels or bags (see :func:`oncoscope.mil.labels.load_mil_data`); a checkpoint
            to resume that is missing or made for another model, classes or encoder. All
            before any training.
    """
    run = TrainingRun(config, resume=resume, overwrite=overwrite)
    data = load_mil_data(config.labels, config.bags, bag_level=config.bag_level)
    last = run.checkpoint_to_resume()
    if last is not None:
        _check_resumable(last, config, data)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = build_mil_module(config, data)
    datamodule = BagDataModule(
        data, max_tiles=config.max_tiles, num_workers=config.num_workers, seed=config.seed
    )
    result = run.fit(module, datamodule, progress_bar=progress_bar)
    about = {
        "model": config.model,
        "kind": MIL_KIND,
        "classes": data.classes,
        "bag_level": data.bag_level,
        "encoder": data.encoder,
        "train_bags": len(data.split("train")),
        "val_bags": len(data.split("val")),
    }
    run.write_summary(result, about)
    return result


def _check_resumable(last: Path, config: MilConfig, data: MilData) -> None:
    spec = read_checkpoint(last)["spec"]
    wanted = (config.model, data.classes, data.encoder, data.bag_level)
    found = (spec.get("model"), list(spec.get("classes", [])), spec.get("encoder"),
             spec.get("bag_level"))  # fmt: skip
    if found != wanted:
        raise OncoscopeError(
            f"checkpoint is for model {found[0]}, classes {found[1]}, encoder {found[2]}, "
            f"{found[3]} bags, not {wanted[0]}, {wanted[1]}, {wanted[2]}, {wanted[3]} bags; "
            "use another --out or drop --resume",
            last,
        )
