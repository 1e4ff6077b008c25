"""``oncoscope features --devices``: slides shared out over processes, each slide encoded by
one rank.

Lightning Fabric starts the processes and gives each its device (its launcher: the same DDP
environment as Lightning's Trainer, so ``--num-nodes``, ``torchrun`` and SLURM work as they do
for training). Rank 0 lists the slides whose bag is not done yet with these settings and sends
the list to all ranks; each rank takes its share (:func:`deal_slides`) and runs it through the
ordinary single-process stream (one encoder, one DataLoader, the next slide planned ahead), so
a slide's bag is the one a single process makes. The ranks' reports are then gathered, and
rank 0 reports the whole run.

A re-run after a lost node finishes only what is missing: the done bags are skipped before the
slides are dealt, so the missing ones are shared over all ranks again. The bags must be on a
file system every rank sees.

Kept apart from :mod:`oncoscope.features.extract` so that a run without ``--devices`` never
imports Lightning, whose import alone takes seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric

from oncoscope.batch import BatchReport
from oncoscope.errors import OncoscopeError
from oncoscope.features.bags import bag_path
from oncoscope.features.encoders import Encoder
from oncoscope.features.extract import (
    BagOutcome,
    FeatureOptions,
    FeatureReport,
    _BagRun,
    _differences,
    as_features,
    feature_settings,
    tile_side,
)
from oncoscope.hardware import resolve_precision
from oncoscope.inference.device_decode import resolve_decode
from oncoscope.io.slide_files import SlideJob
from oncoscope.process_group import end_process_group_at_exit


def deal_slides(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """The slides each rank encodes: indices into ``sizes`` (bytes per slide), largest first,
    dealt to the ranks in turn, so each rank gets a mix of large and small slides.

    Not :class:`~torch.utils.data.DistributedSampler`, whose rule this is otherwise: it pads
    the last round by repeating slides, and two ranks would then write one bag.

    Raises:
        ValueError: ``world_size`` below 1.

    Example:
        >>> deal_slides([10, 50, 20, 40, 30], 2)
        [[1, 4, 0], [3, 2]]
        >>> deal_slides([5], 3)
        [[0], [], []]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be 1 or more, got {world_size}")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    return [order[rank::world_size] for rank in range(world_size)]


def pending_slides(
    encoder: Encoder, jobs: Sequence[SlideJob], out: Path, options: FeatureOptions
) -> list[int]:
    """Indices of the jobs whose bag is still to make: no bag, one made with other settings,
    or a file there that is not a bag (its run reports the problem), or all with ``overwrite``."""
    if options.overwrite:
        return list(range(len(jobs)))
    pending = []
    for index, job in enumerate(jobs):
        bag = bag_path(out, job.path)
        try:
            done = bag.exists() and not _differences(
                bag, feature_settings(encoder, job.path, options)
            )
        except OncoscopeError:
            done = False
        if not done:
            pending.append(index)
    return pending


def extract_over_ranks(
    encoder: Encoder,
    jobs: Sequence[SlideJob],
    out: Path,
    options: FeatureOptions,
    on_slide: Callable[[Path, int], None] | None,
    on_tiles: Callable[[int, int], None] | None,
) -> tuple[list[tuple[SlideJob, OncoscopeError]], FeatureReport]:
    """The bags of ``jobs`` over ``options.devices`` devices per node on ``options.num_nodes``
    nodes (every process runs this; see the module docstring).

    Returns:
        In rank 0: each failed job with its error, and the run's report in the jobs' order
        (slides done before reported as skipped; the progress callbacks follow rank 0's own
        share). In the other ranks: the same errors, and the same outcomes marked
        ``rank_zero`` False without failures, so that only rank 0 reports them.
    """
    assert options.devices is not None
    world = options.devices * options.num_nodes
    fabric = Fabric(
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy="ddp" if world > 1 else "auto",
    )
    end_process_group_at_exit()
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    listed = pending_slides(encoder, jobs, out, options) if rank == 0 else []
    pending: list[int] = fabric.broadcast(listed)
    sizes = [_bytes(jobs[i].path) for i in pending]
    mine = [pending[i] for i in deal_slides(sizes, world)[rank]]
    device = fabric.device
    on_device = dataclasses.replace(encoder, model=encoder.model.to(device), device=device)
    precision = resolve_precision(options.precision, device)
    progress = (on_slide, on_tiles) if rank == 0 else (None, None)
    run = _BagRun(on_device, [jobs[i] for i in mine], out, options, precision, progress)
    run.slides_in_run = max(1, len(pending))
    run.process = (rank, world)
    run.run(
        on_device.model, on_device.tile_spec(tile_side(encoder, options)),
        batch_size=options.batch_size, workers=options.workers, device=device,
        head=as_features, full_disk="stop", compiled=options.compile,
        decode=resolve_decode(options.decode, device),
    )  # fmt: skip
    local: FeatureReport = BatchReport()
    errors = run.report(into=local)
    parts: list[Any] = [(local, errors)]
    if world > 1:
        parts = [None] * world
        torch.distributed.all_gather_object(parts, (local, errors))
    report, all_errors = _merge(jobs, out, pending, parts)
    if rank == 0:
        return all_errors, report
    quiet = [dataclasses.replace(outcome, rank_zero=False) for outcome in report.outcomes]
    return all_errors, BatchReport(outcomes=quiet)


def _bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _merge(
    jobs: Sequence[SlideJob], out: Path, pending: Sequence[int], parts: Sequence[Any]
) -> tuple[FeatureReport, list[tuple[SlideJob, OncoscopeError]]]:
    """One report of the ranks' reports, in the jobs' order; a failure that names no slide (a
    full disk stopping a rank) comes last."""
    order = {str(job.path): index for index, job in enumerate(jobs)}
    todo = set(pending)
    outcomes: list[BagOutcome] = [
        BagOutcome(job.path, bag_path(out, job.path), None)
        for index, job in enumerate(jobs)
        if index not in todo
    ]
    report: FeatureReport = BatchReport()
    errors: list[tuple[SlideJob, OncoscopeError]] = []
    for local, local_errors in parts:
        outcomes += local.outcomes
        report.failures += local.failures
        report.not_done += local.not_done
        errors += local_errors
    last = len(jobs)
    report.outcomes = sorted(outcomes, key=lambda o: order.get(str(o.slide), last))
    report.failures.sort(key=lambda failure: order.get(failure[0], last))
    report.not_done.sort(key=lambda path: order.get(path, last))
    errors.sort(key=lambda pair: order.get(str(pair[0].path), last))
    return report, errors
