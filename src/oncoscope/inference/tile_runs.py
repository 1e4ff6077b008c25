"""Run a model over one slide's tiles into a work file: the step ``slide`` and ``features`` share.

Both commands plan the same tiles (:func:`oncoscope.inference.slide_inference.plan_tiles`),
read them through the same :class:`~oncoscope.inference.patches.TileDataset`, and store one
float32 row per tile in a memory-mapped ``.npy`` work file by tile index: class probabilities
for ``slide``, the encoder's features for ``features`` (the runner's ``head``). The runner is
:func:`oncoscope.inference.predict_tiles.predict_tiles` in this process, or Lightning's
``trainer.predict`` over ``devices``
(:func:`oncoscope.inference.predict_distributed.predict_tiles_distributed`).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn

from oncoscope.batch import writing
from oncoscope.errors import InvalidOptionError
from oncoscope.hardware import resolve_precision
from oncoscope.inference.accumulate import preallocate
from oncoscope.inference.device_decode import check_decode
from oncoscope.inference.patches import TileDataset, TileGrid
from oncoscope.inference.predict_tiles import Head, predict_tiles, softmax_head
from oncoscope.io.slides import Slide
from oncoscope.models.spec import ModelSpec


@dataclass(frozen=True)
class TileRunOptions:
    """What ``oncoscope slide`` and ``oncoscope features`` share of their options (see their
    ``--help``; :class:`~oncoscope.inference.slide_inference.SlideOptions` and
    :class:`~oncoscope.features.extract.FeatureOptions` add their own).

    Attributes:
        magnification, mpp: resolution of the tiles (at most one; neither: the checkpoint's
            training resolution if it records one, else x20).
        scan_mpp, scan_magnification: overrides of the scan's mpp / objective power.
        allow_upsampling: allow a resolution finer than the scan's (warned).
        stride: tile step as a fraction of the tile (1, 0.5, 0.25, ...).
        min_tissue: least tissue share of a tile for it to be run.
        batch_size, workers: DataLoader batch size and reader processes.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        devices: run through Lightning's ``trainer.predict`` on this many devices (None: the
            plain single-device loop).
        accelerator: Lightning accelerator with ``devices``.
        num_nodes: nodes with ``devices`` (each runs the same command; Lightning's cluster
            environment tells the ranks apart).
        agreement_tiles: tiles re-run at fp32 under a reduced precision to measure the
            agreement, shared out over the run's slides (0: none; None: 1% of a slide's tiles,
            at most 256, at least its share of 16; see
            :func:`oncoscope.inference.predict_tiles.agreement_quota`).
        overwrite: redo every slide, whatever its settings.
        on_mismatch: a slide done before with other settings is ``redo``ne (with a note naming
            what differs) or, with ``error``, refused.
        stain_normalize: normalise every tile to the stain target the checkpoint records
            (tiles made by ``wsi tile --stain-normalize``); off: the slide's own colours.
            Without a recorded target it changes nothing.
        compile: run the model through ``torch.compile`` (one graph for the run; see
            :func:`oncoscope.inference.predict_tiles.compile_model`); one process only (not
            with ``devices`` in ``slide``, where Lightning runs the model). Not a setting
            that makes a re-run redo a slide: compiled and eager outputs agree to float
            rounding.
        decode: where JPEG tiles are decoded: ``auto`` (on a CUDA device when torchvision
            can, else by the readers), ``cpu`` or ``device`` (see
            :mod:`oncoscope.inference.device_decode`); one process per device only (not with
            ``devices`` in ``slide``). Not a setting that makes a re-run redo a slide.
    """

    magnification: float | None = None
    mpp: float | None = None
    scan_mpp: float | None = None
    scan_magnification: float | None = None
    allow_upsampling: bool = False
    stride: float = 0.5
    min_tissue: float = 0.05
    batch_size: int = 16
    workers: int = 0
    precision: str = "auto"
    devices: int | None = None
    accelerator: str = "auto"
    num_nodes: int = 1
    agreement_tiles: int | None = None
    overwrite: bool = False
    on_mismatch: str = "redo"
    stain_normalize: bool = True
    compile: bool = False
    decode: str = "auto"


@dataclass
class SlideRun:
    """What became of one slide of a run over tiles.

    Attributes:
        slide: the slide file.
        output: what the run writes for it (``slide``: a folder; ``features``: a bag).
        summary: its summary; None when it was skipped (done before with the same settings),
            or in a process other than rank 0 of a distributed run (``rank_zero`` False).
        warnings: notes for the user.
    """

    slide: Path
    output: Path
    summary: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    rank_zero: bool = True


def check_run_options(options: TileRunOptions, *, lightning_runs_model: bool = False) -> None:
    """Refuse options no run can use.

    Args:
        lightning_runs_model: the command runs the model through Lightning's predict loop
            with ``devices`` (``slide``), which ``compile`` does not reach.

    Raises:
        InvalidOptionError: ``num_nodes`` above 1 without ``devices``; ``compile`` or
            ``decode device`` where Lightning runs the model; an unknown ``decode``.
    """
    check_decode(options.decode)
    if options.decode == "device" and options.devices is not None and lightning_runs_model:
        raise InvalidOptionError(
            "--decode device decodes in the process of a one-process run; with --devices "
            "Lightning moves the batches: drop one of them"
        )
    if options.num_nodes > 1 and options.devices is None:
        raise InvalidOptionError("--num-nodes needs --devices (devices per node)")
    if options.compile and options.devices is not None and lightning_runs_model:
        raise InvalidOptionError(
            "--compile compiles the model of a one-process run; with --devices Lightning runs "
            "the model: drop one of them"
        )


def run_device(loaded_on: torch.device, options: TileRunOptions) -> torch.device:
    """Where the tiles are run: the model's device (``loaded_on``) in one process; with
    ``devices``, Lightning's accelerator's (CUDA when ``accelerator`` allows it and there is
    one, else the CPU)."""
    if options.devices is None:
        return loaded_on
    if options.accelerator in ("gpu", "cuda", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def grid_dataset(
    slide: Slide, grid: TileGrid, options: TileRunOptions, stain: dict[str, Any] | None
) -> TileDataset:
    """The tiles of ``grid``, read from the open ``slide`` (worker processes reopen it with the
    options' scan overrides) and normalised to ``stain`` when given."""
    return TileDataset(
        slide.path,
        grid.positions_level0,
        grid.tile_px,
        grid.target,
        options.scan_mpp,
        options.scan_magnification,
        stain=stain,
        slide=slide,
    )


def run_tiles(
    model: nn.Module,
    spec: ModelSpec,
    dataset: TileDataset,
    path: Path,
    width: int,
    options: TileRunOptions,
    loaded_on: torch.device,
    *,
    on_tiles: Callable[[int, int], None] | None = None,
    head: Head = softmax_head,
) -> str | None:
    """Run ``model`` over every tile of ``dataset`` into ``path``, a ``(tiles, width)`` float32
    ``.npy`` memory map by tile index, in a folder (``path.parent``) made afresh.

    The file is reserved on disk before it is written (a full disk is an :class:`OSError`
    naming it, not a crash when its pages are written back).

    Args:
        spec: the model's input spec (its normalisation).
        width: values stored per tile (classes, or feature dimensions).
        loaded_on: the device the model is on (see :func:`run_device`).
        on_tiles: called with ``(tiles done, tiles)`` as batches finish.
        head: what is stored of the model's float32 output (default: softmax probabilities).

    Returns:
        The precision the tiles ran at (``auto`` resolved); None in a process other than rank 0
        of a distributed run (rank 0 writes the file).

    Raises:
        InvalidOptionError: an unknown precision.
        OSError: the work file cannot be written (``filename`` names it).
    """
    device = run_device(loaded_on, options)
    precision = resolve_precision(options.precision, device)
    tiles = len(dataset)
    shape = (tiles, width)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        if on_tiles is not None:
            on_tiles(min(done[0], tiles), tiles)

    run: dict[str, Any] = {
        "batch_size": options.batch_size,
        "workers": options.workers,
        "precision": precision,
        "on_batch": advance,
        "head": head,
    }
    if options.devices is None:
        values = work_file(path, shape)
        predict_tiles(model, spec, dataset, values, device=device, **run)
        values.flush()
        del values
        return precision
    from oncoscope.inference.predict_distributed import predict_tiles_distributed

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*infer the batch indices.*")
        rank_zero = predict_tiles_distributed(
            model, spec, dataset, path, shape, devices=options.devices,
            accelerator=options.accelerator, num_nodes=options.num_nodes, **run,
        )  # fmt: skip
    return precision if rank_zero else None


def work_file(path: Path, shape: tuple[int, int]) -> np.memmap[Any, np.dtype[np.float32]]:
    """A fresh ``(tiles, width)`` float32 ``.npy`` memory map at ``path``, in a folder made
    afresh, reserved on disk (a full disk is an :class:`OSError` naming it now, not a crash
    when its pages are written back)."""
    shutil.rmtree(path.parent, ignore_errors=True)
    with writing(path):
        path.parent.mkdir(parents=True)
        values: np.memmap[Any, np.dtype[np.float32]] = open_memmap(
            path, mode="w+", dtype=np.float32, shape=shape
        )
        preallocate(path)
    return values


class PhaseClock:
    """Seconds per phase of one slide's run, from the clock's start.

    Example:
        >>> clock = PhaseClock()
        >>> clock.done("tiles")
        >>> sorted(clock.record(tiles=0))
        ['phase_seconds', 'seconds', 'tiles_per_second']
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}

    def done(self, name: str) -> None:
        """Close the phase ``name``: the seconds since the previous phase ended."""
        self.phases[name] = time.perf_counter() - self.started - sum(self.phases.values())

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` spent elsewhere (another thread's loop) to the phase ``name``."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def restart(self) -> None:
        """Go on from now: the clock's total becomes the phases so far (time between, spent on
        other slides of a run, is not this slide's)."""
        self.started = time.perf_counter() - sum(self.phases.values())

    def record(self, tiles: int) -> dict[str, Any]:
        """``seconds`` since the start, ``tiles_per_second`` over them (None at 0 s) and
        ``phase_seconds``, as a summary records them."""
        seconds = time.perf_counter() - self.started
        return {
            "seconds": seconds,
            "tiles_per_second": tiles / seconds if seconds > 0 else None,
            "phase_seconds": self.phases,
        }
