"""A training run of an image classifier: checks, model, data, and the shared run scaffold.

``RUN_DIR`` is a training run's folder (:mod:`oncoscope.train.scaffold`): ``config.yaml``,
``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, ``metrics.csv``, ``tensorboard/`` and
``run.json``. A new run needs an empty or missing ``RUN_DIR``; ``resume=True`` continues the run
there from ``last.ckpt``, ``overwrite=True`` replaces it (see :func:`check_run_folder`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from oncoscope import __version__
from oncoscope.errors import CorruptFileError, OncoscopeError
from oncoscope.models import check_model_name, create_model
from oncoscope.models.registry import pretrained_architecture, training_kwargs
from oncoscope.models.spec import ModelSpec
from oncoscope.models.weights import cached_timm_weights, fetch_timm_weights, package_weights
from oncoscope.train.checkpoint import read_spec
from oncoscope.train.config import TrainConfig
from oncoscope.train.data import (
    ManifestDataModule,
    TrainingData,
    check_stain_augment,
    infer_augmentation,
    load_training_data,
)
from oncoscope.train.level_sampling import training_level_weights
from oncoscope.train.module import LitClassifier
from oncoscope.train.scaffold import (
    RunResult,
    TrainingRun,
    check_run_folder,
    training_device,
)
from oncoscope.train.warm_start import replaced_stages, warm_start_front

#: ``check_run_folder``, ``RunResult`` and ``training_device`` are the scaffold's, named here too.
__all__ = [
    "RunResult",
    "build_module",
    "check_pretrained_weights",
    "check_run_folder",
    "initial_model",
    "train",
    "training_device",
]

log = logging.getLogger(__name__)


def check_pretrained_weights(config: TrainConfig) -> None:
    """Make sure the weights ``config`` starts from can be had, before anything trains (so that
    ``train --model a,b,c`` does not stop at ``c`` after training ``a`` and ``b``): ``weights``
    must be a file; ``pretrained=True`` needs an installed weight package, timm's cache, or timm's
    hub (fetched into the cache now, as the run would at its start). ``"if-available"`` needs
    nothing: without weights the run starts from random ones and says so.

    Raises:
        OncoscopeError: the weights file is missing, or no pretrained weights can be had; the
            message names the model and the ways out.
    """
    if config.weights is not None:
        if not config.weights.is_file():
            raise OncoscopeError("weights file does not exist (--weights)", config.weights)
        return
    if config.pretrained is not True:
        return
    architecture = pretrained_architecture(config.model, config.model_kwargs)
    if package_weights(architecture) is not None or cached_timm_weights(architecture):
        return
    try:
        fetch_timm_weights(architecture)
    except OncoscopeError as error:
        raise OncoscopeError(
            f"{config.model}: {error}; pass --weights FILE, or put 'pretrained: if-available' "
            "in --config to train it from random weights"
        ) from None


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
        architecture = pretrained_architecture(config.model, kwargs)  # a front end's backbone
        if package_weights(architecture) is None:
            weights = cached_timm_weights(architecture)
            if weights is None:
                pretrained = False
                missing = (
                    f"random weights: no pretrained weights for {config.model}"
                    + (f" (its backbone {architecture})" if architecture != config.model else "")
                    + " were found "
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
    if weights is None and not (cfg.get("file") or cfg.get("hf_hub_id")):
        # a model that keeps no timm config (a CAM head on backbone stages): its package's file
        found = package_weights(pretrained_architecture(config.model, kwargs))
        cfg = {"file": found[0]} if found else cfg
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
        "freeze_epochs": config.freeze_epochs,
        "label_smoothing": config.label_smoothing,
        "class_weights": class_weights,
        "stain_augment": config.stain_augment,
    }
    return LitClassifier(model, spec.to_dict(), optim)


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
    run = TrainingRun(config, resume=resume, overwrite=overwrite)
    check_model_name(config.model)
    data = load_training_data(config.data, config.image_size, check_images=check_images)
    check_stain_augment(data, config.stain_augment)
    if config.balanced_sampling == "liver-level":
        training_level_weights(data.frame, data.source)  # refused here, before any training
    last = run.checkpoint_to_resume()
    if last is not None:
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
        stain_augment=config.stain_augment,
    )
    warm_start = _warm_start(module, datamodule, config, resumed=last is not None, initial=notes[0])
    try:
        result = run.fit(module, datamodule, progress_bar=progress_bar, initial_weights=notes[0])
    except CorruptFileError as error:
        raise _unreadable_image(error) from None
    about = {
        "model": config.model,
        "classes": data.classes,
        "train_images": int((data.frame["split"] == "train").sum()),
        "val_images": int((data.frame["split"] == "val").sum()),
        "stain_augment": config.stain_augment,
        **({"warm_start": warm_start} if warm_start is not None else {}),
    }
    run.write_summary(result, about)
    return result


def _warm_start(
    module: LitClassifier,
    datamodule: ManifestDataModule,
    config: TrainConfig,
    *,
    resumed: bool,
    initial: str,
) -> dict[str, Any] | str | None:
    """Warm-start a front end that replaces pretrained stages (:mod:`.warm_start`) before
    training; what was done, or why not, for ``run.json`` (None: the model has no such front
    end, or the warm start is off)."""
    if config.warm_start_epochs == 0 or replaced_stages(module.model) is None:
        return None
    if resumed:
        return "skipped: resumed from the run's last checkpoint (any warm start ran when it began)"
    if initial.startswith("random weights"):
        return "skipped: the stages the front end replaces have random weights"
    log.info("%s: warm start of the front end, %d epochs", config.model, config.warm_start_epochs)
    done = warm_start_front(
        module.model,
        datamodule.train_dataset(),
        epochs=config.warm_start_epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    log.info("%s: warm start relative error %.3f", config.model, done.relative_error)
    return done.to_dict()


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
    spec = read_spec(last)
    if spec.model != config.model or list(spec.classes) != list(data.classes):
        raise OncoscopeError(
            f"checkpoint is for model {spec.model} with classes {list(spec.classes)}, not "
            f"{config.model} with {data.classes}; use another --out or drop --resume",
            last,
        )
