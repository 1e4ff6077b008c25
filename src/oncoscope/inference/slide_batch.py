"""A run of ``oncoscope slide`` over many slides: plan each slide, run its tiles, finish it.

Three steps per slide, shared by the two runners:

- ``_SlideRun.plan``: the re-run check against ``status.json``, then open the slide, its tissue
  mask, the scale search with ``auto_scale``, the tile grid, the work file;
- the tiles: in one process, every slide of the run streams through one model and one
  DataLoader (:func:`oncoscope.inference.tile_stream.stream_tiles`) while the next slide is
  planned in a thread; with ``devices``, one slide at a time through Lightning
  (:func:`oncoscope.inference.tile_runs.run_tiles`);
- :func:`finish_slide`: the fp32 agreement, the cell map, the outputs, ``status.json`` last.

A slide's outputs do not depend on which runner ran it or on the other slides of the run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from oncoscope.batch import BatchReport, run_until_disk_full, writing
from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.hardware import resolve_precision
from oncoscope.inference.accumulate import ProbabilityAccumulator, preallocate
from oncoscope.inference.device_decode import resolve_decode
from oncoscope.inference.patches import TileGrid
from oncoscope.inference.predict_tiles import (
    agreement_quota,
    compare_precisions,
    precision_agreement,
)
from oncoscope.inference.slide_inference import (
    ACCUMULATE_CHUNK,
    LoadedClassifier,
    SlideOptions,
    SlideOutcome,
    _auto_scale,
    _stain_record,
    _write_outputs,
    discard_outputs,
    plan_tiles,
    slide_settings,
    stain_target,
)
from oncoscope.inference.status import (
    STATUS_NAME,
    clear_status,
    read_status,
    redo_or_refuse,
    settings_differences,
    write_status,
)
from oncoscope.inference.tile_runs import PhaseClock, grid_dataset, run_tiles
from oncoscope.inference.tile_stream import PlannedTiles, StreamRun
from oncoscope.io.atomic import atomic_path
from oncoscope.io.slide_files import SlideJob
from oncoscope.io.slides import Slide, open_slide
from oncoscope.pathology.annotations import load_labels, nothing_labelled
from oncoscope.pathology.tissue import slide_tissue

OnSlide = Callable[[Path, int], None]
OnTiles = Callable[[int, int], None]


@dataclass(eq=False, kw_only=True)
class PlannedSlide(PlannedTiles):
    """A slide ready for its tiles (see ``_SlideRun.plan``): the open slide, its grid, folder,
    options (the resolution the scale search chose, with ``auto_scale``) and settings, beside
    what :class:`~oncoscope.inference.tile_stream.PlannedTiles` holds."""

    job: SlideJob
    folder: Path
    options: SlideOptions
    settings: dict[str, Any]
    slide: Slide
    grid: TileGrid
    scale_search: dict[str, Any] | None = None

    @property
    def work(self) -> Path:
        """The slide's work folder (tile values while it runs)."""
        return self.folder / ".work"

    def close(self) -> None:
        """Close the slide and let go of the work file's memory map."""
        super().close()
        self.slide.close()

    def discard(self) -> None:
        """Close it and remove everything it wrote."""
        self.close()
        discard_outputs(self.folder)


def done_before(
    classifier: LoadedClassifier, job: SlideJob, folder: Path, options: SlideOptions
) -> tuple[bool, dict[str, Any], list[str]]:
    """Whether the slide is done with these settings (``status.json``), its settings, and the
    note when it was done with others (then redone, or refused under ``on_mismatch="error"``).

    Raises:
        OncoscopeError: done with other settings under ``on_mismatch="error"``.
    """
    settings = slide_settings(classifier, job.path, options, job.annotations)
    status = None if options.overwrite else read_status(folder)
    if status is None:
        return False, settings, []
    said = "; ".join(settings_differences(status.get("settings"), settings))
    if not said:
        return True, settings, []
    return False, settings, [redo_or_refuse("done before", said, options.on_mismatch, job.path)]


def finish_slide(
    classifier: LoadedClassifier, planned: PlannedSlide, precision: str
) -> SlideOutcome:
    """The cell map, the outputs, ``summary.json`` and ``status.json`` (last) of a slide whose
    tile values are in its work file (and its ``agreement`` set, if checked); the slide is
    closed, and if anything fails its outputs are removed.

    Raises:
        OncoscopeError: bad annotations or ``--heatmap-class``.
        OSError: a file cannot be written (``filename`` names it).
    """
    try:
        outcome = _write_slide(classifier, planned, precision)
    except BaseException:
        planned.discard()
        raise
    planned.close()
    return outcome


def _write_slide(
    classifier: LoadedClassifier, planned: PlannedSlide, precision: str
) -> SlideOutcome:
    clock, grid, folder, options = planned.clock, planned.grid, planned.folder, planned.options
    clock.restart()
    map_path = folder / "probabilities.npy"
    accumulator = ProbabilityAccumulator(
        planned.work, grid.shape_rows_cols, len(classifier.class_names)
    )
    tile_probs = np.load(planned.work / "tiles.npy", mmap_mode="r")
    for start in range(0, len(grid), ACCUMULATE_CHUNK):
        chunk = slice(start, start + ACCUMULATE_CHUNK)
        accumulator.add(grid.cells[chunk], grid.cells_per_tile, tile_probs[chunk])
    with writing(map_path), atomic_path(map_path) as temporary:
        mean = open_memmap(temporary, mode="w+", dtype=np.float32, shape=accumulator.sums.shape)
        preallocate(temporary)
        accumulator.mean(out=mean)
        mean.flush()
        del mean
    del tile_probs, accumulator
    clock.done("map")
    annotations = planned.job.annotations
    summary = _write_outputs(classifier, planned.slide, grid, folder, options, annotations)
    if annotations is not None and summary["annotations"]["cells"] == 0:
        labels = load_labels(annotations, planned.slide.dimensions)
        why = (
            nothing_labelled(annotations, labels, planned.slide.dimensions)
            or "label no classified cell"
        )
        planned.notes.append(f"annotations {annotations} {why}; no scores")
    planned.values = np.zeros((0, planned.values.shape[1]), dtype=np.float32)
    shutil.rmtree(planned.work, ignore_errors=True)
    clock.done("outputs")
    summary.update(
        tiles=len(grid),
        **clock.record(len(grid)),
        precision=precision,
        stain_normalized=_stain_record(classifier.spec, options),
    )
    if planned.agreement is not None:
        summary["precision_agreement"] = planned.agreement
    if planned.scale_search is not None:
        summary["scale_search"] = planned.scale_search
    with writing(folder / "summary.json"), atomic_path(folder / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    with writing(folder / STATUS_NAME):
        write_status(
            folder,
            {
                "slide": str(planned.job.path.absolute()),
                "checkpoint": str(classifier.path),
                "settings": planned.settings,
            },
        )
    return SlideOutcome(planned.job.path, folder, summary, planned.notes)


@dataclass
class SlideRunReport(BatchReport[SlideOutcome]):
    """A run's outcomes, failures and slides not done (:class:`~oncoscope.batch.BatchReport`),
    with ``errors`` (each failed job's error) and ``seconds`` (the whole run, wall clock)."""

    errors: list[tuple[SlideJob, OncoscopeError]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """``summary.json`` of each slide classified in this run (not those skipped)."""
        return [o.summary for o in self.outcomes if o.summary is not None]

    @property
    def tiles(self) -> int:
        """Tiles classified in this run."""
        return sum(int(s["tiles"]) for s in self.summaries)

    def agreement(self) -> dict[str, Any] | None:
        """The fp32 agreement check over the run (:func:`run_agreement`); None without one."""
        return run_agreement(self.summaries)


def run_agreement(summaries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The slides' fp32 agreement checks pooled over a run: ``slides`` and ``tiles`` checked,
    ``argmax_agreement`` with its Wilson 95% interval ``argmax_agreement_ci95`` (the tiles as
    independent draws), ``max_abs_difference``, ``mean_abs_difference`` (over the tiles), and
    ``slides_with_disagreement`` (their file names); None when no slide was checked.

    Example:
        >>> a = {"tiles": 3, "argmax_agreement": 1.0, "max_abs_difference": 0.01,
        ...      "mean_abs_difference": 0.004}
        >>> b = {**a, "tiles": 1, "argmax_agreement": 0.0, "mean_abs_difference": 0.2}
        >>> pooled = run_agreement([{"slide": "x.tif", "precision_agreement": a},
        ...                         {"slide": "y.tif", "precision_agreement": b}])
        >>> pooled["tiles"], pooled["argmax_agreement"], pooled["slides_with_disagreement"]
        (4, 0.75, ['y.tif'])
    """
    checked = [s for s in summaries if "precision_agreement" in s]
    records = [s["precision_agreement"] for s in checked]
    tiles = sum(int(r["tiles"]) for r in records)
    if tiles == 0:
        return None
    from scipy.stats import binomtest  # 0.7 s of import: only when there is a check to pool

    agreeing = [round(r["argmax_agreement"] * r["tiles"]) for r in records]
    interval = binomtest(sum(agreeing), tiles).proportion_ci(0.95, method="wilson")
    return {
        "slides": len(records),
        "tiles": tiles,
        "argmax_agreement": sum(agreeing) / tiles,
        "argmax_agreement_ci95": [float(interval.low), float(interval.high)],
        "max_abs_difference": max(float(r["max_abs_difference"]) for r in records),
        "mean_abs_difference": sum(r["mean_abs_difference"] * r["tiles"] for r in records) / tiles,
        "slides_with_disagreement": [
            Path(str(s["slide"])).name
            for s, r, k in zip(checked, records, agreeing, strict=True)
            if k < r["tiles"]
        ],
    }


def classify_slides(
    classifier: LoadedClassifier,
    jobs: Sequence[SlideJob],
    out: str | Path,
    options: SlideOptions,
    *,
    on_slide: OnSlide | None = None,
    on_tiles: OnTiles | None = None,
    full_disk: str = "stop",
) -> SlideRunReport:
    """Classify ``jobs`` into ``out/<slide stem>/``: one stream over all of them in this
    process, or one slide after the other through Lightning with ``options.devices``.

    A slide that fails is recorded in ``failures`` (and ``errors``) and the others go on. A
    full disk (or quota) stops the run: the slide being written is recorded as ``(the file
    being written, message)`` with nothing of it left behind, and the slides not finished in
    ``not_done``; with ``full_disk="raise"`` its :class:`OSError` is raised instead (the
    slides' outputs removed all the same). Outcomes and failures are in the jobs' order.

    Raises:
        OSError: a file cannot be written for another reason than a full disk.
    """
    batch = _Batch(classifier, jobs, Path(out), options, on_slide, on_tiles, full_disk)
    started = time.perf_counter()
    if options.devices is not None:
        report = _one_by_one(batch)
    else:
        precision = resolve_precision(options.precision, classifier.device)
        run = _SlideRun(batch, precision)
        run.run(
            classifier.model, classifier.spec, batch_size=options.batch_size,
            workers=options.workers, device=classifier.device, full_disk=full_disk,
            compiled=options.compile, decode=resolve_decode(options.decode, classifier.device),
        )  # fmt: skip
        report = SlideRunReport()
        report.errors = run.report(into=report)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _Batch:
    """What :func:`classify_slides` was asked to do."""

    classifier: LoadedClassifier
    jobs: Sequence[SlideJob]
    out: Path
    options: SlideOptions
    on_slide: OnSlide | None
    on_tiles: OnTiles | None
    full_disk: str


class _SlideRun(StreamRun[SlideJob, PlannedSlide, SlideOutcome]):
    """``slide``'s run: slides planned by :meth:`plan`, finished by :func:`finish_slide`,
    checked by :func:`compare_precisions`."""

    def __init__(self, batch: _Batch, precision: str, *, stream: bool = True) -> None:
        super().__init__(batch.jobs, precision, batch.on_slide, batch.on_tiles, stream=stream)
        self.batch = batch

    def plan(self, key: int, job: SlideJob) -> PlannedSlide | None:
        """Get one slide ready for its tiles; None when it is done already with these settings.

        Its ``status.json`` is removed first; its tissue mask, scale search (``auto_scale``)
        and tile grid are made on the slide opened once; its work file and checked tiles come
        from :meth:`~oncoscope.inference.tile_stream.StreamRun.work_values`. If anything fails,
        the slide's outputs are removed.

        Raises:
            OncoscopeError: an unreadable slide, no tissue, a resolution the slide cannot give,
                bad options, done before with other settings under ``on_mismatch="error"``.
            OSError: the work file cannot be written (``filename`` names it).
        """
        classifier, options = self.batch.classifier, self.batch.options
        folder = self.output_of(job)
        skip, settings, notes = done_before(classifier, job, folder, options)
        if skip:
            return None
        if options.auto_scale and (options.mpp is not None or options.magnification is not None):
            raise InvalidOptionError("give --auto-scale or --mpp/--magnification, not both")
        clear_status(folder)
        clock = PhaseClock()
        scan = {"mpp": options.scan_mpp, "magnification": options.scan_magnification}
        slide = open_slide(job.path, **scan)
        try:
            tissue = slide_tissue(slide)  # one mask for the scale search and the tile plan
            scale_search = None
            if options.auto_scale:
                options, scale_search = _auto_scale(
                    classifier, slide, tissue, folder, options, notes
                )
                clock.done("scale_search")
            grid = plan_tiles(classifier.spec, slide, options, notes, tissue=tissue)
            values, checked = self.work_values(
                folder / ".work" / "tiles.npy", len(grid), len(classifier.class_names),
                options.agreement_tiles,
            )  # fmt: skip
            clock.done("tissue_and_grid")
            dataset = grid_dataset(slide, grid, options, stain_target(classifier.spec, options))
        except BaseException:
            slide.close()
            discard_outputs(folder)
            raise
        return PlannedSlide(
            key=key, tiles=dataset, values=values, checked=checked, job=job, folder=folder,
            options=options, settings=settings, notes=notes, slide=slide, grid=grid,
            clock=clock, scale_search=scale_search,
        )  # fmt: skip

    def finish(self, planned: PlannedSlide) -> SlideOutcome:
        return finish_slide(self.batch.classifier, planned, self.precision)

    def skipped(self, key: int, job: SlideJob) -> SlideOutcome:
        return SlideOutcome(job.path, self.output_of(job), None)

    def output_of(self, job: SlideJob) -> Path:
        return self.batch.out / job.path.stem

    def compare(
        self, reduced: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]
    ) -> dict[str, Any]:
        return compare_precisions(reduced, reference)


def _one_by_one(batch: _Batch) -> SlideRunReport:
    """Slides one after the other, each through Lightning over ``options.devices``."""
    report = SlideRunReport()
    errors: dict[str, OncoscopeError] = {}

    def classify(key: int, job: SlideJob) -> SlideOutcome:
        try:
            return _distributed_slide(batch, key, job)
        except OncoscopeError as error:
            errors[str(job.path)] = error
            raise

    if batch.full_disk == "raise":
        for key, job in enumerate(batch.jobs):
            try:
                report.outcomes.append(classify(key, job))
            except OncoscopeError as error:
                report.failures.append((str(job.path), error.message))
    else:
        keys = {id(job): key for key, job in enumerate(batch.jobs)}
        done = run_until_disk_full(
            lambda job: classify(keys[id(job)], job), batch.jobs, batch.on_slide
        )
        report.outcomes, report.failures, report.not_done = (
            done.outcomes, done.failures, done.not_done,
        )  # fmt: skip
    report.errors = [(j, errors[str(j.path)]) for j in batch.jobs if str(j.path) in errors]
    return report


def _distributed_slide(batch: _Batch, key: int, job: SlideJob) -> SlideOutcome:
    classifier, options = batch.classifier, batch.options
    planned = _SlideRun(batch, "fp32", stream=False).plan(key, job)
    if planned is None:
        return SlideOutcome(job.path, batch.out / job.path.stem, None)
    try:
        precision = run_tiles(
            classifier.model, classifier.spec, planned.tiles, planned.work / "tiles.npy",
            len(classifier.class_names), options, classifier.device,
            on_tiles=batch.on_tiles,
        )  # fmt: skip
        planned.clock.done("tiles")
        if precision is None:  # a non-zero rank: rank 0 writes
            planned.close()
            return SlideOutcome(job.path, planned.folder, None, planned.notes, rank_zero=False)
        quota = agreement_quota(len(planned), len(batch.jobs), options.agreement_tiles)
        if precision != "fp32" and quota > 0:
            planned.agreement = precision_agreement(
                classifier.model.to(classifier.device),
                classifier.spec,
                planned.tiles,
                np.load(planned.work / "tiles.npy", mmap_mode="r"),
                batch_size=options.batch_size,
                device=classifier.device,
                sample=quota,
            )
            planned.clock.done("precision_agreement")
    except BaseException:
        planned.discard()
        raise
    return finish_slide(classifier, planned, precision)
