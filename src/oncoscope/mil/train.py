"""``oncoscope mil train``: attention MIL on slide or patient labels, in a training run folder.

The run folder is a training run's (see :mod:`oncoscope.train.run`): ``config.yaml``,
``checkpoints/best.ckpt`` (lowest validation loss) and ``checkpoints/last.ckpt`` (every epoch),
``metrics.csv``, ``tensorboard/`` and ``run.json``; refused when in use unless ``resume`` or
``overwrite``, as ``oncoscope train`` does. The checkpoint's spec carries ``kind: mil``, the
model and its kwargs, the classes, the feature size, the encoder of the bags, the bag level
and the tiling, so ``mil predict`` and ``evaluate`` need only the checkpoint and bags.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oncoscope import __version__
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.hardware import LIGHTNING_PRECISION, normalize_precision, resolve_precision
from oncoscope.io.atomic import atomic_path
from oncoscope.mil.data import BagDataModule
from oncoscope.mil.labels import MilData, load_mil_data
from oncoscope.mil.models import MIL_MODELS, create_mil_model
from oncoscope.mil.module import MilClassifier
from oncoscope.train.callbacks import BatchReseed, EpochHistory, RunCheckpoint
from oncoscope.train.checkpoint import read_checkpoint
from oncoscope.train.run import RunResult, check_run_folder, training_device

#: The ``kind`` a MIL checkpoint's spec carries.
MIL_KIND = "mil"


class MilConfig(BaseModel):
    """Everything a MIL training needs; see ``oncoscope mil train --help`` for each field."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    bags: Path
    labels: Path
    out: Path
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    seed: int = 0

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~oncoscope.mil.models.create_mil_model`."""
        kwargs: dict[str, Any] = {
            "hidden": self.hidden,
            "attention_dim": self.attention_dim,
            "dropout": self.dropout,
        }
        if self.model == "clam_sb":
            kwargs["k_sample"] = self.k_sample
        return kwargs

    def to_yaml(self) -> str:
        """The configuration as YAML (paths as text)."""
        text: str = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return text


def mil_config(**values: Any) -> MilConfig:
    """A :class:`MilConfig` from keyword values (None values dropped), errors in one line.

    Raises:
        InvalidOptionError: a value out of range or an unknown model (the message names it).
    """
    values = {k: v for k, v in values.items() if v is not None}
    if "precision" in values:
        values["precision"] = normalize_precision(str(values["precision"]))
    if "model" in values and values["model"] not in MIL_MODELS:
        raise InvalidOptionError(
            f"unknown MIL model {values['model']!r}; use one of {', '.join(MIL_MODELS)}"
        )
    try:
        return MilConfig(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise InvalidOptionError(f"invalid MIL option {field}: {first['msg']}") from None


def build_mil_module(config: MilConfig, data: MilData) -> MilClassifier:
    """The MIL model and the LightningModule around it, with the checkpoint's spec."""
    kwargs = config.model_kwargs()
    model = create_mil_model(config.model, data.feature_dim, len(data.classes), **kwargs)
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
        OncoscopeError: a run folder in use (see :func:`oncoscope.train.run.check_run_folder`);
            bad labels or bags (see :func:`oncoscope.mil.labels.load_mil_data`); a checkpoint
            to resume that is missing or made for another model, classes or encoder. All
            before any training.
    """
    started = time.perf_counter()
    run_dir = Path(config.out)
    last = run_dir / "checkpoints" / "last.ckpt"
    replaced = check_run_folder(run_dir, resume=resume, overwrite=overwrite)
    data = load_mil_data(config.labels, config.bags, bag_level=config.bag_level)
    if resume:
        _check_resumable(last, config, data)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = build_mil_module(config, data)
    datamodule = BagDataModule(
        data, max_tiles=config.max_tiles, num_workers=config.num_workers, seed=config.seed
    )
    for entry in replaced:  # every check has passed: the earlier run goes, whole
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as temporary:
        temporary.write_text(config.to_yaml())
    precision = resolve_precision(config.precision, training_device(config.accelerator))
    best = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    latest = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=LIGHTNING_PRECISION[precision],  # type: ignore[arg-type]
        deterministic=True,
        callbacks=[best, latest, BatchReseed(config.seed), EpochHistory(run_dir / "metrics.csv")],
        logger=TensorBoardLogger(run_dir, name="tensorboard", version=""),
        default_root_dir=run_dir,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        use_distributed_sampler=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=last if resume else None, weights_only=True
    )
    best_path = Path(best.best_model_path) if best.best_model_path else last
    score = best.best_model_score
    result = RunResult(
        run_dir=run_dir,
        best_checkpoint=best_path,
        last_checkpoint=last,
        best_val_loss=float(score) if score is not None else None,
        epochs_run=trainer.current_epoch,
        precision=precision,
        seconds=time.perf_counter() - started,
    )
    summary = {
        "model": config.model,
        "kind": MIL_KIND,
        "classes": data.classes,
        "bag_level": data.bag_level,
        "encoder": data.encoder,
        "train_bags": len(data.split("train")),
        "val_bags": len(data.split("val")),
        "best_checkpoint": str(best_path),
        "best_val_loss": result.best_val_loss,
        "epochs": result.epochs_run,
        "precision": precision,
        "device": str(trainer.strategy.root_device),
        "seconds": round(result.seconds, 1),
    }
    with atomic_path(run_dir / "run.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    return result


def _check_resumable(last: Path, config: MilConfig, data: MilData) -> None:
    if not last.is_file():
        raise OncoscopeError("no last.ckpt to resume from; train without --resume first", last)
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
