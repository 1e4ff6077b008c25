"""``oncoscope features``: tile features of whole slides into one feature bag per slide.

The tiles are those ``oncoscope slide`` plans
(:func:`oncoscope.inference.slide_inference.plan_tiles`: the same tissue mask, resolution,
stride and tissue share), read and batched by the same stream over all the slides of a run
(:class:`~oncoscope.inference.tile_stream.StreamRun`), which stores the encoder's features
instead of class probabilities. With ``devices`` the slides are shared out over processes,
each slide encoded by one rank (:mod:`oncoscope.features.distributed`). Features go to a
memory-mapped work file by tile index and are copied into the bag in chunks, so memory stays
flat in the slide's size.

Under a reduced precision (bf16/fp16) a sample of tiles is encoded again at fp32 and the cosine
similarity of the two feature vectors reported (min and mean) in the bag's ``summary``.

Per slide: the bag (:mod:`oncoscope.features.bags`), written atomically and carrying the
settings that made it; a re-run skips a slide whose bag has the same settings and redoes (or,
with ``on_mismatch="error"``, refuses) one made with other settings.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncoscope.batch import BatchReport, writing
from oncoscope.errors import OncoscopeError
from oncoscope.features.bags import bag_path, read_bag_attrs, write_bag
from oncoscope.features.encoders import Encoder
from oncoscope.hardware import resolve_precision
from oncoscope.inference import tile_runs
from oncoscope.inference.device_decode import resolve_decode
from oncoscope.inference.patches import TileGrid, cells_per_tile
from oncoscope.inference.slide_inference import (
    SlideOptions,
    plan_tiles,
    resolution_request,
    stain_target,
)
from oncoscope.inference.status import (
    check_on_mismatch,
    redo_or_refuse,
    settings_differences,
)
from oncoscope.inference.tile_stream import PlannedTiles, StreamRun
from oncoscope.io.slide_files import SlideJob
from oncoscope.io.slides import Slide, open_slide

#: Default tile step: non-overlapping tiles, as MIL pipelines (CLAM, slideflow) use.
DEFAULT_STRIDE = 1.0


@dataclass(frozen=True)
class FeatureOptions(tile_runs.TileRunOptions):
    """How bags are made (see ``oncoscope features --help``): the options
    :class:`~oncoscope.inference.tile_runs.TileRunOptions` describes (``overwrite`` also
    replaces ``<stem>.h5`` files not made by this command; a bag made with other settings is
    redone or refused by ``on_mismatch``), with non-overlapping tiles by default, and:

    Attributes:
        tile_px: tile side at the read resolution (None: the encoder's input size; another
            side is resized to it).
    """

    stride: float = DEFAULT_STRIDE
    tile_px: int | None = None


class BagOutcome(tile_runs.SlideRun):
    """One slide (see :class:`~oncoscope.inference.tile_runs.SlideRun`): its ``output`` is
    its bag."""

    @property
    def bag(self) -> Path:
        """The slide's bag file."""
        return self.output


#: All slides of a run (:func:`extract_slides`): outcomes, failures, slides not done.
FeatureReport = BatchReport[BagOutcome]


def as_features(output: torch.Tensor) -> torch.Tensor:
    """The runners' ``head`` for bags: the encoder's float32 output as it is."""
    return output


def slide_options(encoder: Encoder, options: FeatureOptions) -> SlideOptions:
    """``oncoscope slide``'s options for the same tiles: the resolution resolved (the options',
    else a checkpoint's training resolution, else x20).

    Raises:
        InvalidOptionError: both ``mpp`` and ``magnification``; an unknown ``on_mismatch``.
    """
    check_on_mismatch(options.on_mismatch)
    request = resolution_request(
        options, encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size)
    )
    shared = {name.name: getattr(options, name.name) for name in fields(tile_runs.TileRunOptions)}
    return SlideOptions(**{**shared, "mpp": request.mpp, "magnification": request.magnification})


def tile_side(encoder: Encoder, options: FeatureOptions) -> int:
    """Tile side at the read resolution: ``options.tile_px`` or the encoder's input size."""
    return int(options.tile_px or encoder.image_size)


def feature_settings(
    encoder: Encoder, slide_path: str | Path, options: FeatureOptions
) -> dict[str, Any]:
    """What determines a slide's bag, recorded in it and compared on re-runs: the encoder's id
    and spec (less the weights file's path: its SHA-256 is in the id), the slide's name and
    size, the resolution (resolved), tile side, stride, tissue share, upsampling, scan
    overrides, precision (``auto`` resolved here), stain target. Batch size, workers and
    devices are left out."""
    chosen = slide_options(encoder, options)
    slide_path = Path(slide_path)
    try:
        size: int | None = slide_path.stat().st_size
    except OSError:
        size = None
    return {
        "encoder": encoder.id,
        "encoder_spec": {k: v for k, v in encoder.spec.items() if k != "weights"},
        "slide_name": slide_path.name,
        "slide_bytes": size,
        "mpp": chosen.mpp,
        "magnification": chosen.magnification,
        "tile_px": tile_side(encoder, options),
        "stride": options.stride,
        "min_tissue": options.min_tissue,
        "allow_upsampling": options.allow_upsampling,
        "scan_mpp": options.scan_mpp,
        "scan_magnification": options.scan_magnification,
        "precision": resolve_precision(
            options.precision, tile_runs.run_device(encoder.device, options)
        ),
        "stain": _stain(encoder, chosen),
    }


def extract_slide(
    encoder: Encoder,
    slide_path: str | Path,
    out: str | Path,
    options: FeatureOptions,
    *,
    on_tiles: Callable[[int, int], None] | None = None,
) -> BagOutcome:
    """Encode the tiles of one slide into ``out/<slide stem>.h5`` (see the module docstring):
    a run of :func:`extract_slides` over this one slide.

    The bag's ``summary`` attribute holds ``tiles``, ``seconds`` (the slide's own time, opening
    it to the features computed, before the bag is written; in a run over many slides, time
    spent on the others' tiles meanwhile is not counted), ``tiles_per_second``,
    ``phase_seconds`` (``tissue_and_grid``, ``tiles``, ``precision_agreement``), ``precision``,
    ``notes`` and, under a reduced precision, ``precision_agreement`` (``tiles``,
    ``cosine_min``, ``cosine_mean``, ``max_abs_difference``; see :func:`compare_features`).

    Args:
        on_tiles: called with ``(tiles done, tiles in the slide)`` as batches finish.

    Raises:
        OncoscopeError: an unreadable slide, no tissue, a resolution the slide cannot give, a
            bad stride; a ``<stem>.h5`` there that this command did not make (unless
            ``overwrite``); a bag made with other settings under ``on_mismatch="error"``.
        OSError: the bag or work file cannot be written (``filename`` names it).
    """
    slide_path = Path(slide_path)
    tile_runs.check_run_options(options)
    job = SlideJob(slide_path.stem, slide_path, None)
    errors, report = _run_bags(encoder, [job], Path(out), options, None, on_tiles, "raise")
    if errors:
        raise errors[0][1]
    return report.outcomes[0]


@dataclass(eq=False, kw_only=True)
class PlannedBag(PlannedTiles):
    """A slide ready for its tiles (see :meth:`_BagRun.plan`): the open slide, its grid, its bag
    and work folder, the settings the bag records."""

    job: SlideJob
    bag: Path
    work: Path
    settings: dict[str, Any]
    slide: Slide
    grid: TileGrid

    def close(self) -> None:
        """Close the slide and let go of the work file's memory map."""
        super().close()
        self.slide.close()

    def discard(self) -> None:
        """Close it and remove its work folder (its bag is only ever written whole)."""
        self.close()
        shutil.rmtree(self.work, ignore_errors=True)


def finish_bag(
    encoder: Encoder,
    planned: PlannedBag,
    precision: str,
    process: tuple[int, int] | None = None,
) -> BagOutcome:
    """Write the bag of a slide whose features are in its work file (and its ``agreement``
    set, if checked); the slide is closed and the work folder removed, whatever happens.
    ``process``: ``(rank, world size)`` of the process that encoded it in a distributed run,
    recorded in the summary as ``rank`` and ``world_size``.

    Raises:
        OSError: the bag cannot be written (``filename`` names it).
    """
    try:
        summary: dict[str, Any] = {
            "tiles": len(planned.grid),
            "precision": precision,
            "notes": planned.notes,
        }
        if planned.agreement is not None:
            summary["precision_agreement"] = planned.agreement
        if process is not None:
            summary["rank"], summary["world_size"] = process
        attrs = bag_attrs(encoder, planned.job.path, planned.grid, planned.settings)
        summary.update(planned.clock.record(len(planned.grid)))
        attrs["summary"] = summary
        features = np.load(planned.work / "features.npy", mmap_mode="r")
        with writing(planned.bag):
            write_bag(planned.bag, features, tile_coords(planned.grid), attrs)
        del features
    finally:
        planned.discard()
    return BagOutcome(planned.job.path, planned.bag, summary, planned.notes)


def _differences(bag: Path, settings: dict[str, Any]) -> str:
    """What differs between an existing bag's settings and these ('' when none).

    Raises:
        OncoscopeError: the file is not a bag made by ``oncoscope features``.
    """
    try:
        recorded = read_bag_attrs(bag).get("settings")
    except OncoscopeError as error:
        raise OncoscopeError(
            f"{bag.name}: {error.message}; it is not a bag of oncoscope features: move it, "
            "pass --overwrite, or use another --out",
            bag,
        ) from None
    if not isinstance(recorded, dict):
        raise OncoscopeError(
            f"{bag.name} exists and was not made by oncoscope features (no settings "
            "recorded): move it, pass --overwrite, or use another --out",
            bag,
        )
    return "; ".join(settings_differences(recorded, settings))


def tile_coords(grid: TileGrid) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``(n, 2)`` int64 level-0 ``(x, y)`` of the tiles' top-left corners, rounded."""
    coords: np.ndarray[Any, np.dtype[np.int64]] = np.rint(grid.positions_level0).astype(np.int64)
    return coords


def bag_attrs(
    encoder: Encoder, slide_path: Path, grid: TileGrid, settings: dict[str, Any]
) -> dict[str, Any]:
    """The bag's attributes (see :mod:`oncoscope.features.bags`)."""
    from oncoscope import __version__

    downsample = grid.target.downsample
    return {
        "slide": str(slide_path),
        "slide_name": settings["slide_name"],
        "slide_bytes": settings["slide_bytes"] if settings["slide_bytes"] is not None else -1,
        "tile_px": int(grid.tile_px),
        "tile_px_level0": round(grid.tile_px * downsample),
        "stride_px": int(grid.tile_px // grid.cells_per_tile),
        "mpp": float(grid.target.mpp),
        "magnification": float(grid.target.magnification),
        "encoder": encoder.id,
        "encoder_spec": json.dumps(encoder.spec),
        "oncoscope_version": __version__,
        "settings": json.dumps(settings),
    }


def compare_features(
    reduced: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """Features of the same tiles at a reduced precision and at fp32, compared: ``tiles``,
    ``cosine_min`` and ``cosine_mean`` (cosine similarity of each tile's two feature vectors;
    two zero vectors count as 1), ``max_abs_difference``.

    Example:
        >>> record = compare_features(np.array([[1.0, 0.0], [0.0, 0.0]]), np.eye(2)[[0, 1]] * 0)
        >>> record["tiles"], record["cosine_min"], record["cosine_mean"]
        (2, 0.0, 0.5)
    """
    reduced = np.asarray(reduced, dtype=np.float64)
    exact = np.asarray(reference, dtype=np.float64)
    norms = np.linalg.norm(reduced, axis=1) * np.linalg.norm(exact, axis=1)
    dots = (reduced * exact).sum(axis=1)
    both_zero = (np.linalg.norm(reduced, axis=1) == 0) & (np.linalg.norm(exact, axis=1) == 0)
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    return {
        "tiles": len(reduced),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_difference": float(np.abs(reduced - exact).max()),
    }


def _stain(encoder: Encoder, chosen: SlideOptions) -> dict[str, Any] | None:
    """The stain target the tiles are normalised to (see :func:`stain_target`)."""
    return stain_target(encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size), chosen)


def extract_slides(
    encoder: Encoder,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: FeatureOptions,
    *,
    on_slide: Callable[[Path, int], None] | None = None,
    on_tiles: Callable[[int, int], None] | None = None,
) -> FeatureReport:
    """Bags for many slides; a bad slide is recorded in ``failures`` and the others go on.

    In one process the slides stream through one encoder and one DataLoader, the next slide
    planned while the current one runs, as ``oncoscope slide`` runs them
    (:class:`~oncoscope.inference.tile_stream.StreamRun`); with ``devices``, the slides are
    shared out over Lightning's processes, each slide encoded by one rank, and the report is
    rank 0's (:func:`~oncoscope.features.distributed.extract_over_ranks`). A full disk (or
    quota) stops the run: the slide being written is recorded with the file, nothing of its
    bag is left, and the slides not finished are listed in ``not_done``.

    Raises:
        OncoscopeError: bad options or no slides (per-slide errors are reported, not raised).
        OSError: a file cannot be written for another reason than a full disk.
    """
    from oncoscope.io.slide_files import find_slides

    tile_runs.check_run_options(options)
    jobs = find_slides(inputs)
    slide_options(encoder, options)  # refuses bad options before any work
    cells_per_tile(options.stride, tile_side(encoder, options))
    return _run_bags(encoder, jobs, Path(out), options, on_slide, on_tiles, "stop")[1]


def _run_bags(
    encoder: Encoder,
    jobs: Sequence[SlideJob],
    out: Path,
    options: FeatureOptions,
    on_slide: Callable[[Path, int], None] | None,
    on_tiles: Callable[[int, int], None] | None,
    full_disk: str,
) -> tuple[list[tuple[SlideJob, OncoscopeError]], FeatureReport]:
    """The bags of ``jobs``, and each failed job's error."""
    if options.devices is not None:
        from oncoscope.features.distributed import extract_over_ranks

        errors, report = extract_over_ranks(encoder, jobs, out, options, on_slide, on_tiles)
        if full_disk == "raise" and report.failures and not errors:  # a full disk stopped it
            raise OSError(errno.ENOSPC, report.failures[0][1], report.failures[0][0])
        return errors, report
    precision = resolve_precision(options.precision, encoder.device)
    run = _BagRun(encoder, jobs, out, options, precision, (on_slide, on_tiles))
    spec = encoder.tile_spec(tile_side(encoder, options))
    run.run(
        encoder.model, spec, batch_size=options.batch_size, workers=options.workers,
        device=encoder.device, head=as_features, full_disk=full_disk,
        compiled=options.compile, decode=resolve_decode(options.decode, encoder.device),
    )  # fmt: skip
    report = BatchReport()
    return run.report(into=report), report


class _BagRun(StreamRun[SlideJob, PlannedBag, BagOutcome]):
    """``features``' run: slides planned by :meth:`plan`, bags written by :func:`finish_bag`,
    checked by :func:`compare_features`."""

    def __init__(
        self,
        encoder: Encoder,
        jobs: Sequence[SlideJob],
        out: Path,
        options: FeatureOptions,
        precision: str,
        progress: tuple[Callable[[Path, int], None] | None, Callable[[int, int], None] | None],
    ) -> None:
        super().__init__(jobs, precision, *progress)
        self.encoder, self.out, self.options = encoder, out, options
        self.process: tuple[int, int] | None = None  # (rank, world size) in a distributed run

    def plan(self, key: int, job: SlideJob) -> PlannedBag | None:
        """Get one slide ready for its tiles; None when its bag exists with these settings.

        The slide is opened once for its tissue mask and grid (:func:`plan_tiles`, as
        ``slide`` plans); its work file and checked tiles come from
        :meth:`~oncoscope.inference.tile_stream.StreamRun.work_values`.

        Raises:
            OncoscopeError: see :func:`extract_slide`.
            OSError: the work file cannot be written (``filename`` names it).
        """
        encoder, options = self.encoder, self.options
        bag = bag_path(self.out, job.path)
        settings = feature_settings(encoder, job.path, options)
        notes: list[str] = []
        if bag.exists() and not options.overwrite:
            said = _differences(bag, settings)
            if not said:
                return None
            made = f"{bag.name} was made"
            notes.append(redo_or_refuse(made, said, options.on_mismatch, job.path))
        clock = tile_runs.PhaseClock()
        chosen = slide_options(encoder, options)
        work = self.out / f".work-{job.path.stem}"
        scan = {"mpp": options.scan_mpp, "magnification": options.scan_magnification}
        slide = open_slide(job.path, **scan)
        try:
            spec = encoder.tile_spec(tile_side(encoder, options))
            grid = plan_tiles(spec, slide, chosen, notes)
            values, checked = self.work_values(
                work / "features.npy", len(grid), encoder.feature_dim, options.agreement_tiles
            )
            clock.done("tissue_and_grid")
            dataset = tile_runs.grid_dataset(slide, grid, options, _stain(encoder, chosen))
        except BaseException:
            slide.close()
            shutil.rmtree(work, ignore_errors=True)
            raise
        return PlannedBag(
            key=key, tiles=dataset, values=values, checked=checked, job=job, clock=clock,
            notes=notes, bag=bag, work=work, settings=settings, slide=slide, grid=grid,
        )  # fmt: skip

    def finish(self, planned: PlannedBag) -> BagOutcome:
        return finish_bag(self.encoder, planned, self.precision, self.process)

    def skipped(self, key: int, job: SlideJob) -> BagOutcome:
        return BagOutcome(job.path, self.output_of(job), None)

    def output_of(self, job: SlideJob) -> Path:
        return bag_path(self.out, job.path)

    def compare(
        self, reduced: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]
    ) -> dict[str, Any]:
        return compare_features(reduced, reference)
