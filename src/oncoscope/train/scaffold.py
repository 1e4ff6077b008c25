"""The scaffold every training run shares: its folder, the Lightning Trainer, ``run.json``.

A run folder (``oncoscope train``, ``oncoscope mil train``) receives ``config.yaml`` (the
resolved configuration), ``checkpoints/best.ckpt`` (lowest validation loss),
``checkpoints/last.ckpt`` (the end of the latest epoch), ``metrics.csv`` (one row per epoch),
``tensorboard/`` logs and ``run.json`` (summary): the entries of :data:`RUN_CONTENTS`. A new
run needs an empty or missing folder; ``resume`` continues the run there from ``last.ckpt``
(also in a run folder that was moved or copied), ``overwrite`` replaces it (see
:func:`check_run_folder`). What differs between runs (data, model, the spec its checkpoint
carries, the checks before resuming, the summary's first entries) stays with the caller.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.hardware import LIGHTNING_PRECISION, resolve_precision
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.process_group import end_process_group_at_exit
from oncoscope.train.callbacks import BatchReseed, EpochHistory, RunCheckpoint
from oncoscope.train.chance import LeaveChance
from oncoscope.train.config import RunSettings

#: What a training run writes into its folder; ``overwrite`` removes these and nothing else.
RUN_CONTENTS = ("checkpoints", "config.yaml", "metrics.csv", "run.json", "tensorboard")
#: The prefix of the temporary names outputs are written under (see ``oncoscope.io.atomic``).
PARTIAL_PREFIX = ".partial-"


@dataclass
class RunResult:
    """Where a run left its outputs, and its best validation figures.

    Attributes:
        device: the device the run trained on (Lightning's root device, e.g. ``cpu``).
        initial_weights: where the model's starting weights came from, for runs that say so.
        left_chance_at_epoch: with ``epochs_after_chance``, the first epoch (from 0) at the
            training accuracy that counts as having left chance; None: off, or never reached.
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_loss: float | None
    epochs_run: int
    precision: str
    seconds: float
    initial_weights: str = ""
    device: str = ""
    left_chance_at_epoch: int | None = None


def training_device(accelerator: str = "auto") -> str:
    """``"cuda"`` when Lightning's ``accelerator`` would train on a CUDA GPU, else ``"cpu"``."""
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "cuda"
    return "cpu"


def owns_run_folder() -> bool:
    """Whether this process checks, replaces and writes the run folder: the only process of a
    run in one process, or global rank 0 of a run in several.

    Told from the environment the launcher sets before any Trainer exists (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``, as Lightning reads them on import, and ``NODE_RANK``):
    Lightning's own launcher re-runs the whole command in each further process (``LOCAL_RANK``
    1, 2, ...), after rank 0 has already started the run in the folder.
    """
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    return int(getattr(rank_zero_only, "rank", 0)) == 0 and node == 0


def check_run_folder(
    run_dir: str | Path, *, resume: bool = False, overwrite: bool = False
) -> list[Path]:
    """Check that a run may start in ``run_dir``; return what ``overwrite`` would remove.

    A new run needs a missing or empty folder. ``resume`` continues the run in it (whatever
    else the folder holds). ``overwrite`` replaces a run: it removes the entries of
    :data:`RUN_CONTENTS`, and refuses a folder that holds anything else, which is not a
    training run's to replace. Nothing is removed here. In the further processes of a run in
    several (not :func:`owns_run_folder`) the folder is rank 0's, which checks it: nothing is
    checked there and nothing is returned.

    Returns:
        The entries of an earlier run that :meth:`TrainingRun.fit` removes before it starts
        (empty when there is nothing to replace).

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
    if not owns_run_folder() or not run_dir.exists():
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


class TrainingRun:
    """One training run in its folder: checked when made, trained by :meth:`fit`, summed up
    in ``run.json`` by :meth:`write_summary`.

    Args:
        config: the run's resolved configuration (``out`` is the run folder).
        resume: continue the run in ``config.out`` from its ``last.ckpt``.
        overwrite: replace the run in ``config.out`` (removed by :meth:`fit`, once the caller's
            checks have passed).

    Raises:
        OncoscopeError: a run folder in use (see :func:`check_run_folder`); nothing is written.
    """

    def __init__(
        self, config: RunSettings, *, resume: bool = False, overwrite: bool = False
    ) -> None:
        self.started = time.perf_counter()
        self.config, self.resume = config, resume
        self.run_dir = Path(config.out)
        self.last = self.run_dir / "checkpoints" / "last.ckpt"
        self._replaced = check_run_folder(self.run_dir, resume=resume, overwrite=overwrite)

    def checkpoint_to_resume(self) -> Path | None:
        """``last.ckpt`` when resuming (for the caller to check it fits), else None.

        Raises:
            OncoscopeError: resuming a run that has no ``last.ckpt``.
        """
        if not self.resume:
            return None
        if not self.last.is_file():
            raise OncoscopeError(
                "no last.ckpt to resume from; train without --resume first", self.last
            )
        return self.last

    def fit(
        self,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        *,
        progress_bar: bool = True,
        initial_weights: str = "",
    ) -> RunResult:
        """Replace the earlier run (``overwrite``), write ``config.yaml`` and train: seeded and
        deterministic, in the configured precision on the configured processes, with the best
        and the latest checkpoint, ``metrics.csv`` and TensorBoard logs (the files written by
        rank 0 alone in a run in several processes).

        Raises:
            OncoscopeError: what the module or data module raise while training.
        """
        config, run_dir = self.config, self.run_dir
        for entry in self._replaced:  # every check has passed: the earlier run goes, whole
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self._replaced = []
        run_dir.mkdir(parents=True, exist_ok=True)
        if owns_run_folder():
            with atomic_path(run_dir / "config.yaml") as temporary:
                temporary.write_text(config.to_yaml())
        precision = resolve_precision(config.precision, training_device(config.accelerator))
        best = _checkpoint(run_dir, "best", monitor="val_loss")
        # Lightning's `save_last` writes last.ckpt only in an epoch that also wrote best.ckpt;
        # a checkpoint without a monitor is written at the end of every epoch.
        latest = _checkpoint(run_dir, "last", monitor=None)
        end_process_group_at_exit()
        after = int(getattr(config, "epochs_after_chance", 0))  # image classifiers' option
        chance = LeaveChance(
            config.epochs, after, float(getattr(config, "left_chance_accuracy", 1.0))
        )
        trainer = pl.Trainer(
            max_epochs=config.epochs + after,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            num_nodes=config.num_nodes,
            precision=LIGHTNING_PRECISION[precision],  # type: ignore[arg-type]
            deterministic=True,
            callbacks=[
                chance,  # before the checkpoints, which then save its state and the schedule's
                best,  # before `latest`, so last.ckpt holds this epoch's best-model state
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
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=self.last if self.resume else None,
            weights_only=True,
        )
        score = best.best_model_score
        return RunResult(
            run_dir=run_dir,
            best_checkpoint=Path(best.best_model_path) if best.best_model_path else self.last,
            last_checkpoint=self.last,
            best_val_loss=float(score) if score is not None else None,
            epochs_run=trainer.current_epoch,
            precision=precision,
            seconds=time.perf_counter() - self.started,
            initial_weights=initial_weights,
            device=str(trainer.strategy.root_device),
            left_chance_at_epoch=chance.left_at if after and chance.left_at >= 0 else None,
        )

    def write_summary(self, result: RunResult, about: dict[str, Any]) -> None:
        """Write ``run.json``: ``about`` (the run's model, classes, data), then the best
        checkpoint and validation loss, epochs, precision, device, seconds and, when the run
        says so, ``initial_weights`` and ``left_chance_at_epoch`` (rank 0 alone in a run in
        several processes)."""
        if not owns_run_folder():
            return
        summary = {
            **about,
            "best_checkpoint": str(result.best_checkpoint),
            "best_val_loss": result.best_val_loss,
            "epochs": result.epochs_run,
            "precision": result.precision,
            "device": result.device,
            "seconds": round(result.seconds, 1),
        }
        if result.initial_weights:
            summary["initial_weights"] = result.initial_weights
        if result.left_chance_at_epoch is not None:
            summary["left_chance_at_epoch"] = result.left_chance_at_epoch
        write_json(self.run_dir / "run.json", summary, indent=2)


def _checkpoint(run_dir: Path, name: str, *, monitor: str | None) -> RunCheckpoint:
    """The checkpoint callback writing ``checkpoints/<name>.ckpt`` (the lowest ``monitor``, or
    the end of every epoch without one)."""
    return RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename=name,
        monitor=monitor,
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
