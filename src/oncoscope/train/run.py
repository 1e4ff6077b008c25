"""A training run: checks, model, Lightning Trainer, run directory, resume.

``RUN_DIR`` receives ``config.yaml`` (the resolved configuration), ``checkpoints/best.ckpt``
(lowest validation loss) and ``checkpoints/last.ckpt`` (the end of the latest epoch),
``metrics.csv`` (one row per epoch), ``tensorboard/`` logs and ``run.json`` (summary): the
entries of :data:`RUN_CONTENTS`. A new run needs an empty or missing ``RUN_DIR``;
``resume=True`` continues the run there from ``last.ckpt`` (also in a run folder that was moved
or copied), ``overwrite=True`` replaces it (see :func:`check_run_folder`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from oncoscope import __version__
from oncoscope.errors import CorruptFileError, InvalidOptionError, OncoscopeError
from oncoscope.hardware import LIGHTNING_PRECISION, resolve_precision
from oncoscope.io.atomic import atomic_path
from oncoscope.models import check_model_name, create_model
from oncoscope.models.registry import training_kwargs
from oncoscope.models.spec import ModelSpec
from oncoscope.models.weights import cached_timm_weights, package_weights
from oncoscope.train.callbacks import BatchReseed, EpochHistory, RunCheckpoint
from oncoscope.train.checkpoint import read_spec
from oncoscope.train.config import TrainConfig
from oncoscope.train.data import (
    ManifestDataModule,
    TrainingData,
    infer_augmentation,
    load_training_data,
)
from oncoscope.train.module import LitClassifier

#: What a training run writes into its folder; ``overwrite`` removes these and nothing else.
RUN_CONTENTS = ("checkpoints", "config.yaml", "metrics.csv", "run.json", "tensorboard")
#: The prefix of the temporary names outputs are written under (see ``oncoscope.io.atomic``).
PARTIAL_PREFIX = ".partial-"

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where a run left its outputs, and its best validation figures."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_loss: float | None
    epochs_run: int
    precision: str
    seconds: float
    initial_weights: str = ""


def training_device(accelerator: str = "auto") -> str:
    """``"cuda"`` when Lightning's ``accelerator`` would train on a CUDA GPU, else ``"cpu"``."""
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "cuda"
    return "cpu"


def initial_model(
    config: TrainConfig, *, num_classes: int, in_chans: int, kwargs: dict[str, Any]
) -> tuple[nn.Module, str]:
    """The model a run starts from, and where its weights came from (for the run's log).

    ``config.pretrained="if-available"`` takes ``config.weights``, an installed weight package,
    or timm's weights already in the Hugging Face cache (looked up offline, never downloaded);
    with none of them the model starts from random weights, and the returned text says so.

    Raises:
        OncoscopeError: ``pretrained=True`` without weights to be found, weights that do not fit.
    """
    pretrained = config.pretrained is True or config.weights is not None
    weights: Path | None = config.weights
    missing = ""
    if config.pretrained == "if-available" and weights is None:
        pretrained = True
        if package_weights(config.model) is None:
            weights = cached_timm_weights(config.model)
            if weights is None:
                pretrained = False
                missing = (
                    f"random weights: no pretrained weights for {config.model} were found "
                    "offline (no --weights FILE, no weight package, not in timm's cache)"
                )
    model = create_model(
        config.model,
        num_classes=num_classes,
        pretrained=pretrained,
        weights=weights,
        in_chans=in_chans,
        **kwargs,
    )
    if missing:
        return model, missing
    if not pretrained:
        return model, "random weights (not pretrained)"
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return model, f"pretrained from {cfg.get('file') or cfg.get('hf_hub_id') or 'timm'}"


def build_module(
    config: TrainConfig, data: TrainingData, *, notes: list[str] | None = None
) -> LitClassifier:
    """The model from the registry and the LightningModule around it; where the model's
    weights came from is appended to ``notes``."""
    kwargs = training_kwargs(
        config.model, config.model_kwargs, image_size=data.image_size, dropout=config.dropout
    )
    model, initial = initial_model(
        config, num_classes=len(data.classes), in_chans=data.in_chans, kwargs=kwargs
    )
    if notes is not None:
        notes.append(initial)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    cfg = getattr(model, "pretrained_cfg", {})
    mean = list(cfg.get("mean", (0.5,) * 3))
    std = list(cfg.get("std", (0.25,) * 3))
    if data.in_chans == 1:  # a greyscale image is the mean of the colour channels
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    counts = data.class_counts()
    class_weights = None
    if config.class_weights:
        class_weights = [sum(counts) / (len(counts) * max(c, 1)) for c in counts]
    spec = ModelSpec.from_dict(
        {
            "model": config.model,
            "model_kwargs": kwargs,
            "classes": data.classes,
            "in_chans": data.in_chans,
            "image_size": data.image_size,
            "mean": [float(v) for v in mean[: data.in_chans]],
            "std": [float(v) for v in std[: data.in_chans]],
            "preprocessing": data.preprocessing,
            "group_column": data.group_column,
            "manifest": str(data.source),
            "oncoscope_version": __version__,
        },
        data.source,
    )
    optim = {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "momentum": config.momentum,
        "scheduler": config.scheduler,
        "milestones": list(config.milestones),
        "gamma": config.gamma,
        "epochs": config.epochs,
        "label_smoothing": config.label_smoothing,
        "class_weights": class_weights,
    }
    return LitClassifier(model, spec.to_dict(), optim)


def check_run_folder(
    run_dir: str | Path, *, resume: bool = False, overwrite: bool = False
) -> list[Path]:
    """Check that a run may start in ``run_dir``; return what ``overwrite`` would remove.

    A new run needs a missing or empty folder. ``resume`` continues the run in it (whatever
    else the folder holds). ``overwrite`` replaces a run: it removes the entries of
    :data:`RUN_CONTENTS`, and refuses a folder that holds anything else, which is not a
    training run's to replace. Nothing is removed here.

    Returns:
        The entries of an earlier run that :func:`train` removes before it starts (empty when
        there is nothing to replace).

    Raises:
        InvalidOptionError: ``resume`` and ``overwrite`` together.
        OncoscopeError: ``run_dir`` is a file; a folder that is not empty, without ``resume``
            or ``overwrite``; ``overwrite`` of a folder holding other files than a run's.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise InvalidOptionError(
            "--resume continues the run in --out and --overwrite replaces it; pass one of them"
        )
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        raise OncoscopeError("is a file, not a run folder; choose another --out", run_dir)
    entries = sorted(run_dir.iterdir())
    if resume or not entries:
        return []
    others = [
        e.name
        for e in entries
        if e.name not in RUN_CONTENTS and not e.name.startswith(PARTIAL_PREFIX)
    ]
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OncoscopeError(
            f"this folder is not empty and holds files that are not a training run's "
            f"({shown}); choose another --out",
            run_dir,
        )
    if not overwrite:
        raise OncoscopeError(
            "this folder is not empty: a training run is there; pass --resume to continue it "
            "or --overwrite to replace it (or choose another --out)",
            run_dir,
        )
    return entries


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    check_images: bool = False,
    progress_bar: bool = True,
) -> RunResult:
    """Train one model as configured; see the module docstring for the run directory.

    Args:
        config: the resolved configuration.
        resume: continue the run in ``config.out`` from its ``last.ckpt``.
        overwrite: replace the run in ``config.out`` (removed once every check has passed).
        check_images: decode every image before training, not only a sample.
        progress_bar: show Lightning's progress bar.

    Raises:
        OncoscopeError: a bad manifest or options, a run folder in use (see
            :func:`check_run_folder`), a missing or mismatching checkpoint to resume from
            (all before any training); an image that does not decode during training.
    """
    started = time.perf_counter()
    run_dir = Path(config.out)
    last = run_dir / "checkpoints" / "last.ckpt"
    replaced = check_run_folder(run_dir, resume=resume, overwrite=overwrite)
    check_model_name(config.model)
    data = load_training_data(config.data, config.image_size, check_images=check_images)
    if resume:
        _check_resumable(last, config, data)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    notes: list[str] = []
    module = build_module(config, data, notes=notes)
    if notes[0].startswith("random weights:"):
        log.warning("%s: %s; training from them", config.model, notes[0])
    augment = infer_augmentation(data.frame) if config.augment == "auto" else config.augment
    datamodule = ManifestDataModule(
        data,
        module.spec,
        batch_size=config.batch_size,
        augment=augment,
        balanced_sampling=config.balanced_sampling,
        num_workers=config.num_workers,
        seed=config.seed,
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
    checkpoint = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    # Lightning's `save_last` writes last.ckpt only in an epoch that also wrote best.ckpt;
    # a checkpoint without a monitor is written at the end of every epoch.
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
        callbacks=[
            checkpoint,  # before `latest`, so last.ckpt holds this epoch's best-model state
            latest,
            BatchReseed(config.seed),
            EpochHistory(run_dir / "metrics.csv"),
        ],
        logger=TensorBoardLogger(run_dir, name="tensorboard", version=""),
        default_root_dir=run_dir,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        use_distributed_sampler=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=last if resume else None, weights_only=True
        )
    except CorruptFileError as error:
        raise _unreadable_image(error) from None
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    score = checkpoint.best_model_score
    result = RunResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last,
        best_val_loss=float(score) if score is not None else None,
        epochs_run=trainer.current_epoch,
        precision=precision,
        seconds=time.perf_counter() - started,
        initial_weights=notes[0],
    )
    summary = {
        "model": config.model,
        "classes": data.classes,
        "train_images": int((data.frame["split"] == "train").sum()),
        "val_images": int((data.frame["split"] == "val").sum()),
        "best_checkpoint": str(best),
        "best_val_loss": result.best_val_loss,
        "epochs": result.epochs_run,
        "precision": precision,
        "device": str(trainer.strategy.root_device),
        "seconds": round(result.seconds, 1),
        "initial_weights": result.initial_weights,
    }
    with atomic_path(run_dir / "run.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    return result


def _unreadable_image(error: CorruptFileError) -> CorruptFileError:
    """One line for an image that failed to decode during training, with the way to find all.

    A data loader worker's error reaches this process as the worker's whole traceback; its
    last line is the error itself.
    """
    message, path = error.message, error.path
    if path is None and "\n" in message:
        lines = [line for line in message.splitlines() if line.strip()]
        name = f"{type(error).__module__}.{type(error).__qualname__}: "
        message = lines[-1].removeprefix(name) if lines else message
    return CorruptFileError(
        f"{message}; --check-images finds every unreadable image before training starts", path
    )


def _check_resumable(last: Path, config: TrainConfig, data: TrainingData) -> None:
    if not last.is_file():
        raise OncoscopeError("no last.ckpt to resume from; train without --resume first", last)
    spec = read_spec(last)
    if spec.model != config.model or list(spec.classes) != list(data.classes):
        raise OncoscopeError(
            f"checkpoint is for model {spec.model} with classes {list(spec.classes)}, not "
            f"{config.model} with {data.classes}; use another --out or drop --resume",
            last,
        )
