"""Many slides' tiles through one model and one set of reader processes, planned one slide ahead.

A batch of small slides (biopsies of 60-70 tiles) spent more on per-slide set-up than on the
model when each slide had its own DataLoader, its own fp32 re-read for the agreement check and
its tissue step in line (issue 18). Here, over a whole run:

- one DataLoader, started once: its reader processes persist across slides and open each slide
  once through their pool (:func:`oncoscope.io.slides.pooled_slide`); the requests it reads are
  ``(slide, batch of tile indices)``, made in this process as slides arrive, so a worker never
  holds a slide's whole tile list;
- a planner thread (:class:`PlanAhead`) opens the next slide, makes its tissue mask and grid
  while the current one runs, at most ``ahead`` slides ahead (memory stays that of a few slides);
- batches never mix slides: a slide's tiles go through the model in the same batches as when it
  is run alone, so its outputs are the same as a one-slide run's;
- under a reduced precision, the tiles chosen for the fp32 agreement check
  (:func:`oncoscope.inference.predict_tiles.agreement_quota`: spread over the run's slides, no
  fixed per-slide count) are run again at fp32 from the batch already in memory: no second read.
- with ``decode="device"`` the readers send JPEG tiles compressed and they are decoded on the
  model's device (:mod:`oncoscope.inference.device_decode`);
- a slide whose tiles are all stored is finished (its map and figures written) by a finisher
  thread while the next slide's batches run, at most one slide at a time, so the model does
  not wait for a slide's outputs; a full disk there stops the run at the next batch.

Hand-written because a DataLoader iterates one dataset fixed when it starts (a loader per slide
restarts its workers per slide) and Lightning's predict loop takes whole dataloaders; here the
requests themselves say which slide to read, so slides can join a loader that is running.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from oncoscope.batch import DISK_FULL, BatchReport, PathJob
from oncoscope.errors import OncoscopeError
from oncoscope.inference.device_decode import EncodedTiles, tiles_on_device
from oncoscope.inference.patches import TileDataset
from oncoscope.inference.predict_tiles import (
    Head,
    agreement_quota,
    compile_model,
    forward_probabilities,
    pad_batch,
    softmax_head,
    spread,
    to_model_input,
)
from oncoscope.inference.tile_runs import PhaseClock, work_file
from oncoscope.models.spec import ModelSpec

Job = TypeVar("Job")
Planned = TypeVar("Planned", bound="StreamedSlide")


@dataclass(eq=False)
class StreamedSlide:
    """One slide's part in a stream: the tiles to read, where their values go, and which tiles
    are also run at fp32.

    Attributes:
        key: the slide's place in the run (its job's index).
        tiles: the slide's tiles (read in this process from its open slide; worker processes
            get each batch as :meth:`~oncoscope.inference.patches.TileDataset.subset`).
        values: ``(tiles, width)`` float32 (a memory map) the model's stored outputs go into,
            by tile index.
        checked: sorted tile indices also run at fp32 (empty: no check).
        reference: ``(len(checked), width)`` float32, their fp32 outputs once run.
        pending: checked tiles' model inputs waiting for their fp32 run, with their rows in
            ``reference`` (run together when a batch's worth is waiting, or at the slide's
            last batch: a few full fp32 forwards rather than one per batch).
        done: tiles run so far.
        seconds: ``tiles`` (time of the run's loop spent on this slide's batches, waiting for
            them included) and ``precision_agreement`` (the fp32 re-runs).
    """

    key: int
    tiles: TileDataset
    values: np.ndarray[Any, np.dtype[np.float32]]
    checked: np.ndarray[Any, np.dtype[np.int64]] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    reference: np.ndarray[Any, np.dtype[np.float32]] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float32)
    )
    pending: list[tuple[torch.Tensor, np.ndarray[Any, np.dtype[np.int64]]]] = field(
        default_factory=list
    )
    done: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"tiles": 0.0, "precision_agreement": 0.0}
    )

    def __post_init__(self) -> None:
        self.checked = np.unique(np.asarray(self.checked, dtype=np.int64))
        self.reference = np.zeros((len(self.checked), self.values.shape[1]), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.tiles)


@dataclass(frozen=True)
class TileRequest:
    """A batch to read: ``tiles`` (the batch's own tiles, in order) of the slide ``key``, whose
    tile indices are ``indices``; ``encoded``: read as
    :meth:`~oncoscope.inference.patches.TileDataset.read_encoded` (decoded on the device)."""

    key: int
    indices: np.ndarray[Any, np.dtype[np.int64]]
    tiles: TileDataset
    encoded: bool = False


class RequestReader(Dataset[tuple[torch.Tensor | EncodedTiles, int, torch.Tensor, str | None]]):
    """Reads a :class:`TileRequest` into ``(uint8 (b, H, W, 3), key, int64 (b,) indices,
    error)`` (an :class:`EncodedTiles` in place of the pixels for an ``encoded`` request): a
    slide that cannot be read comes back as its message (``error``) with no pixels, so one bad
    slide does not stop the reader processes the others share."""

    def __len__(self) -> int:  # keys are requests, not positions
        raise TypeError("a RequestReader is read by its requests")

    def __getitem__(  # type: ignore[override]
        self, request: TileRequest
    ) -> tuple[torch.Tensor | EncodedTiles, int, torch.Tensor, str | None]:
        slots = np.arange(len(request.indices))
        try:
            tiles = request.tiles
            batch = tiles.read_encoded(slots) if request.encoded else tiles.read_batch(slots)
        except OncoscopeError as error:
            side = request.tiles.tile_px
            none = torch.empty((0, side, side, 3), dtype=torch.uint8)
            return none, request.key, torch.from_numpy(request.indices[:0]), error.message
        return batch, request.key, torch.from_numpy(request.indices), None


class _Requests:
    """The DataLoader's sampler: batches of each slide as :class:`PlanAhead` delivers them."""

    def __init__(
        self,
        slides: Iterator[StreamedSlide],
        batch_size: int,
        live: dict[int, StreamedSlide],
        encoded: bool = False,
    ) -> None:
        self.slides = slides
        self.batch_size = batch_size
        self.live = live
        self.encoded = encoded

    def __iter__(self) -> Iterator[TileRequest]:
        for slide in self.slides:
            self.live[slide.key] = slide
            for start in range(0, len(slide), self.batch_size):
                if slide.key not in self.live:  # failed while its batches were being made
                    break
                indices = np.arange(start, min(start + self.batch_size, len(slide)))
                yield TileRequest(slide.key, indices, slide.tiles.subset(indices), self.encoded)


class StreamCallbacks(Generic[Planned]):
    """What a stream tells its caller; every method runs in the caller's thread.

    Override :meth:`finished` (a slide's every tile is stored) and :meth:`failed` (a slide
    could not be read; its other batches are dropped); :meth:`started` and :meth:`tiles` are
    for progress.
    """

    def started(self, slide: Planned) -> None:
        """The first batch of ``slide`` is about to run."""

    def tiles(self, slide: Planned) -> None:
        """A batch of ``slide`` was stored (``slide.done`` of ``len(slide)``)."""

    def finished(self, slide: Planned) -> None:
        """Every tile of ``slide`` is stored (and its fp32 references, if any)."""

    def failed(self, slide: Planned, message: str) -> None:
        """``slide`` could not be read: ``message`` says why."""


def stream_tiles(
    model: nn.Module,
    spec: ModelSpec,
    slides: Iterator[Planned],
    callbacks: StreamCallbacks[Planned],
    *,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | None = None,
    precision: str = "fp32",
    head: Head = softmax_head,
    compiled: bool = False,
    decode: str = "cpu",
) -> None:
    """Run ``model`` over the tiles of every slide ``slides`` yields, with one DataLoader.

    Each batch's outputs (``head`` of the model's float32 output) go into its slide's
    ``values`` by tile index; a slide's checked tiles are run again at fp32 into its
    ``reference`` when ``precision`` is not fp32. ``callbacks.finished`` runs as soon as a
    slide's last batch is stored, while the next slide's batches are being read.

    Args:
        slides: the planned slides in run order (e.g. a :class:`PlanAhead`); the iterator may
            raise to stop the run (a full disk while planning).
        batch_size, workers: tiles per batch, reader processes (0: this process).
        device: where the model runs (default CPU).
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved).
        compiled: run the batches through :func:`compile_model` of ``model``, every batch
            padded to ``batch_size`` (the fp32 check runs ``model`` itself).
        decode: ``cpu`` (readers decode the tiles) or ``device`` (JPEG tiles decoded on
            ``device``; see :func:`oncoscope.inference.device_decode.resolve_decode`).
    """
    device = device or torch.device("cpu")
    forward = compile_model(model) if compiled else model
    live: dict[int, Planned] = {}
    loader: DataLoader[Any] = DataLoader(
        RequestReader(),  # type: ignore[arg-type]
        sampler=_Requests(slides, batch_size, live, decode == "device"),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    last = time.perf_counter()
    with torch.inference_mode():
        for pixels, key, indices, error in loader:
            slide = live.get(int(key))
            if slide is None:  # a slide that failed: its prefetched batches are dropped
                last = time.perf_counter()
                continue
            if error is not None:
                del live[slide.key]
                callbacks.failed(slide, str(error))
                last = time.perf_counter()
                continue
            if slide.done == 0:
                callbacks.started(slide)
            rows = indices.numpy()
            try:
                x = to_model_input(_decoded(pixels, slide, rows, device), spec, device)
            except OncoscopeError as unread:  # a batch the device could not decode, read again
                del live[slide.key]
                callbacks.failed(slide, unread.message)
                last = time.perf_counter()
                continue
            batch = pad_batch(x, batch_size) if compiled else x
            out = forward_probabilities(forward, batch, precision, head)[: len(rows)]
            slide.values[rows] = out.cpu().numpy()
            slide.done += len(rows)
            now = time.perf_counter()
            slide.seconds["tiles"] += now - last
            if precision != "fp32" and len(slide.checked):
                _check_at_fp32(model, x, rows, slide, head, batch_size)
                slide.seconds["precision_agreement"] += time.perf_counter() - now
            callbacks.tiles(slide)
            if slide.done >= len(slide):
                del live[slide.key]
                callbacks.finished(slide)
            last = time.perf_counter()


def _decoded(
    pixels: torch.Tensor | EncodedTiles,
    slide: StreamedSlide,
    rows: np.ndarray[Any, Any],
    device: torch.device,
) -> torch.Tensor:
    """A batch's tiles on ``device``; a batch whose JPEG streams the device cannot decode is
    read again on the CPU (a broken tile then ends in the slide reader's error)."""

    return tiles_on_device(pixels, device, lambda: slide.tiles.read_batch(rows))


def _check_at_fp32(
    model: nn.Module,
    x: torch.Tensor,
    rows: np.ndarray[Any, Any],
    slide: StreamedSlide,
    head: Head,
    batch_size: int,
) -> None:
    """Keep the batch's checked tiles for their fp32 run into ``slide.reference``; run what is
    kept once ``batch_size`` tiles wait or the slide's last batch has run."""
    where = np.searchsorted(slide.checked, rows)
    hit = (where < len(slide.checked)) & (
        slide.checked[np.minimum(where, len(slide.checked) - 1)] == rows
    )
    if hit.any():
        chosen = torch.from_numpy(np.flatnonzero(hit)).to(x.device)
        slide.pending.append((x.index_select(0, chosen), where[hit]))
    waiting = sum(len(places) for _, places in slide.pending)
    if waiting and (waiting >= batch_size or slide.done >= len(slide)):
        inputs = torch.cat([kept for kept, _ in slide.pending])
        places = np.concatenate([places for _, places in slide.pending])
        slide.pending.clear()
        for start in range(0, len(inputs), batch_size):
            exact = forward_probabilities(model, inputs[start : start + batch_size], "fp32", head)
            slide.reference[places[start : start + batch_size]] = exact.cpu().numpy()


class PlanAhead(Generic[Job, Planned]):
    """Plans jobs in a background thread, at most ``ahead`` ready before they are taken.

    Iterating yields each job's planned slide in job order; a job the planner settles itself
    (``plan`` returns None: done before, or an :class:`~oncoscope.errors.OncoscopeError` it
    raised) is passed to ``settled`` in the iterating thread, in order, and not yielded. Any
    other exception ``plan`` raises (an :class:`OSError` of a full disk, a bug) is raised by
    the iteration, and planning stops.

    Args:
        plan: ``(job index, job) -> planned slide | None``.
        settled: ``(job index, job, error or None)`` for jobs not yielded.
        discard: undoes a planned slide never yielded (the run stopped first).
        ahead: planned slides waiting at most (their slides are open, their grids in memory).
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        plan: Callable[[int, Job], Planned | None],
        settled: Callable[[int, Job, OncoscopeError | None], None],
        *,
        discard: Callable[[Planned], None],
        ahead: int = 1,
    ) -> None:
        self.jobs = jobs
        self.plan = plan
        self.settled = settled
        self.discard = discard
        self.ahead = ahead
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oncoscope-plan", daemon=True)
        self.taken = 0  # jobs whose planning the iteration has taken

    def _put(self, item: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        for index, job in enumerate(self.jobs):
            if self._stop.is_set():
                return
            try:
                item: tuple[int, Any] = (index, self.plan(index, job))
            except OncoscopeError as error:
                item = (index, error)
            except BaseException as error:  # raised by the iteration, in its thread
                self._put((index, _Raised(error)))
                return
            if not self._put(item):
                self._discard(item[1])
                return
        self._put((len(self.jobs), _End()))

    def __iter__(self) -> Iterator[Planned]:
        if self.ahead == 0:  # in the iterating thread, when asked
            yield from self._inline()
            return
        self._thread.start()
        try:
            while True:
                index, item = self._queue.get()
                if isinstance(item, _End):
                    return
                self.taken = index + 1
                if isinstance(item, _Raised):
                    raise item.error
                if item is None or isinstance(item, OncoscopeError):
                    self.settled(index, self.jobs[index], item)
                    continue
                yield item
        finally:
            self.close()

    def _inline(self) -> Iterator[Planned]:
        for index, job in enumerate(self.jobs):
            self.taken = index + 1
            try:
                planned = self.plan(index, job)
            except OncoscopeError as error:
                self.settled(index, job, error)
                continue
            if planned is None:
                self.settled(index, job, None)
                continue
            yield planned

    def close(self) -> None:
        """Stop planning (after the slide being planned) and discard what was planned but not
        taken."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while True:
            try:
                self._discard(self._queue.get_nowait()[1])
            except queue.Empty:
                return

    def _discard(self, item: Any) -> None:
        if item is not None and not isinstance(item, (OncoscopeError, _End, _Raised)):
            self.discard(item)


@dataclass(frozen=True)
class _End:
    pass


@dataclass(frozen=True)
class _Raised:
    error: BaseException


@dataclass(eq=False, kw_only=True)
class PlannedTiles(StreamedSlide):
    """A slide of a :class:`StreamRun`, planned: its job, its clock (``tissue_and_grid`` done
    by the planner), the notes for the user, and its fp32 agreement once checked."""

    job: PathJob
    clock: PhaseClock
    notes: list[str]
    agreement: dict[str, Any] | None = None

    def close(self) -> None:
        """Release what it holds open (the slide, the work file's map) and the checked tiles
        still waiting for their fp32 run."""
        self.values = np.zeros((0, self.values.shape[1]), dtype=np.float32)
        self.pending.clear()

    def discard(self) -> None:
        """Close it and remove everything it wrote."""
        self.close()


Tiles = TypeVar("Tiles", bound=PlannedTiles)
Outcome = TypeVar("Outcome")
JobT = TypeVar("JobT", bound=PathJob)


class StreamRun(StreamCallbacks[Tiles], Generic[JobT, Tiles, Outcome]):
    """A command's run over many slides through one stream: plan each job in a thread
    (:class:`PlanAhead`), run every slide's tiles (:func:`stream_tiles`), finish each slide as
    its last batch is stored; a bad slide is reported and the others go on; a full disk stops
    the run (the slide being written is reported with the file, nothing of it kept; the slides
    not finished are listed as not done).

    A slide is finished in a finisher thread (``finish_in_thread``; False: in line, after its
    last batch) while the next slide's tiles run; one slide at a time, so a slide waits for the
    one before it, and outcomes are in the jobs' order whichever way.

    Subclasses say what a slide is: :meth:`plan`, :meth:`finish`, :meth:`skipped`,
    :meth:`output_of` and :meth:`compare` (the fp32 agreement of the stored values).
    """

    #: Finish slides in the finisher thread (False: in line; for measuring what it saves).
    finish_in_thread: bool = True

    def __init__(
        self,
        jobs: Sequence[JobT],
        precision: str,
        on_slide: Callable[[Path, int], None] | None = None,
        on_tiles: Callable[[int, int], None] | None = None,
        *,
        stream: bool = True,
    ) -> None:
        self.jobs = jobs
        self.slides_in_run = len(jobs)  # the run's fp32 check is shared over these slides
        self.stream = stream
        self.ahead = 1  # slides planned in a thread ahead of the stream (0: in line)
        self.precision = precision
        self.on_slide = on_slide
        self.on_tiles = on_tiles
        self.outcomes: dict[int, Outcome] = {}
        self.errors: dict[int, OncoscopeError] = {}
        self.in_flight: dict[int, Tiles] = {}
        self.stopped: tuple[int | None, str, str] | None = None
        self._finisher: ThreadPoolExecutor | None = None
        self._finishing: Future[None] | None = None

    def plan(self, key: int, job: JobT) -> Tiles | None:
        """The job ready for its tiles; None when it is done already."""
        raise NotImplementedError

    def work_values(
        self, path: Path, tiles: int, width: int, requested: int | None
    ) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.int64]]]:
        """A planned slide's ``values`` and ``checked`` tiles: in a streamed run, a fresh
        ``(tiles, width)`` work file at ``path`` (:func:`~oncoscope.inference.tile_runs.work_file`)
        and, under a reduced precision, the tiles :func:`agreement_quota` gives it of the run's
        check (``requested``: ``--agreement-tiles``); otherwise empty (the runner writes its
        own file)."""
        if not self.stream:
            return np.zeros((0, width), np.float32), np.zeros(0, np.int64)
        values = work_file(path, (tiles, width))
        if self.precision == "fp32":
            return values, np.zeros(0, np.int64)
        return values, spread(tiles, agreement_quota(tiles, self.slides_in_run, requested))

    def finish(self, planned: Tiles) -> Outcome:
        """Write a slide whose tiles are all stored (removing its outputs if that fails)."""
        raise NotImplementedError

    def skipped(self, key: int, job: JobT) -> Outcome:
        """The outcome of a job done already."""
        raise NotImplementedError

    def output_of(self, job: JobT) -> Path:
        """Where the job writes (a folder or a file): a full disk there stops this job."""
        raise NotImplementedError

    def compare(
        self, reduced: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]
    ) -> dict[str, Any]:
        """The agreement of the checked tiles' values and their fp32 references."""
        raise NotImplementedError

    def run(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        batch_size: int,
        workers: int,
        device: torch.device,
        head: Head = softmax_head,
        full_disk: str = "stop",
        compiled: bool = False,
        decode: str = "cpu",
    ) -> None:
        """Plan and stream every job (see the class docstring); ``full_disk="raise"`` raises
        the full disk's :class:`OSError` instead of recording it; ``compiled`` and ``decode``:
        see :func:`stream_tiles`.

        Raises:
            OSError: a file cannot be written for another reason than a full disk.
        """
        planner: PlanAhead[JobT, Tiles] = PlanAhead(
            self.jobs, self.plan, self.settled, discard=lambda planned: planned.discard(),
            ahead=self.ahead,
        )  # fmt: skip
        if self.finish_in_thread:
            self._finisher = ThreadPoolExecutor(1, thread_name_prefix="oncoscope-finish")
        try:
            stream_tiles(
                model, spec, self._track(iter(planner)), self, batch_size=batch_size,
                workers=workers, device=device, precision=self.precision, head=head,
                compiled=compiled, decode=decode,
            )  # fmt: skip
            self._finished_before(wait=True)
        except OSError as error:
            if error.errno not in DISK_FULL or full_disk == "raise":
                raise
            self._stopped_by(error)
        finally:
            planner.close()
            self._close_finisher()
            for planned in self.in_flight.values():
                planned.discard()

    def settled(self, key: int, job: JobT, error: OncoscopeError | None) -> None:
        self._announce(key)
        if error is None:
            self.outcomes[key] = self.skipped(key, job)
        else:
            self.errors[key] = error

    def started(self, slide: Tiles) -> None:
        self._finished_before(wait=False)
        self._announce(slide.key)

    def tiles(self, slide: Tiles) -> None:
        self._finished_before(wait=False)
        if self.on_tiles is not None:
            self.on_tiles(slide.done, len(slide))

    def finished(self, slide: Tiles) -> None:
        slide.clock.add("tiles", slide.seconds["tiles"])
        if self.precision != "fp32" and len(slide.checked):
            slide.clock.add("precision_agreement", slide.seconds["precision_agreement"])
            slide.agreement = self.compare(slide.values[slide.checked], slide.reference)
        if self._finisher is None:
            self._finish(slide)
            return
        self._finished_before(wait=True)
        self._finishing = self._finisher.submit(self._finish, slide)

    def _finish(self, slide: Tiles) -> None:
        try:
            self.outcomes[slide.key] = self.finish(slide)
        except OncoscopeError as error:
            self.errors[slide.key] = error
        finally:
            self.in_flight.pop(slide.key, None)

    def _finished_before(self, *, wait: bool) -> None:
        """Collect the slide being finished in the finisher thread (waiting for it when
        ``wait``; else only if it is done); its :class:`OSError` (a full disk) is raised here,
        in the stream's thread, which stops the run."""
        finishing = self._finishing
        if finishing is None or not (wait or finishing.done()):
            return
        self._finishing = None
        finishing.result()

    def _close_finisher(self) -> None:
        """Wait for the slide being finished, whatever stopped the run (its own error is
        dropped: the run is stopping for another), and end the thread."""
        if self._finishing is not None:
            with contextlib.suppress(BaseException):  # the error stopping the run goes on
                self._finishing.result()
            self._finishing = None
        if self._finisher is not None:
            self._finisher.shutdown()
            self._finisher = None

    def failed(self, slide: Tiles, message: str) -> None:
        self.in_flight.pop(slide.key, None)
        slide.discard()
        self.errors[slide.key] = OncoscopeError(message, slide.job.path)

    def report(self, into: BatchReport[Outcome]) -> list[tuple[JobT, OncoscopeError]]:
        """Fill ``into`` with the outcomes, failures and slides not done, in the jobs' order;
        return each failed job with its error."""
        errors = []
        stopped_key = self.stopped[0] if self.stopped is not None else None
        for key, job in enumerate(self.jobs):
            if key in self.outcomes:
                into.outcomes.append(self.outcomes[key])
            elif key in self.errors:
                into.failures.append((str(job.path), self.errors[key].message))
                errors.append((job, self.errors[key]))
            elif self.stopped is not None and key == stopped_key:
                into.failures.append((self.stopped[1], self.stopped[2]))
            elif self.stopped is not None:
                into.not_done.append(str(job.path))
        if self.stopped is not None and stopped_key is None:
            into.failures.append((self.stopped[1], self.stopped[2]))
        return errors

    def _announce(self, key: int) -> None:
        if self.on_slide is not None:
            self.on_slide(self.jobs[key].path, len(self.jobs))

    def _track(self, planned: Iterator[Tiles]) -> Iterator[Tiles]:
        """The planned slides, each kept in ``in_flight`` until it is finished or fails (what
        is left there when the run stops is discarded)."""
        for slide in planned:
            self.in_flight[slide.key] = slide
            yield slide

    def _stopped_by(self, error: OSError) -> None:
        """A full disk: the job it stopped is the one whose output holds the file."""
        name = Path(str(error.filename or ""))
        outputs = [self.output_of(job) for job in self.jobs]
        key = next((k for k, o in enumerate(outputs) if name.is_relative_to(o)), None)
        name_ = self.jobs[key].path.name if key is not None else "the slide being written"
        message = (
            f"{error.strerror or 'the disk is full'} while writing it; nothing of {name_} was "
            "kept: free space and run again"
        )
        self.stopped = (key, str(error.filename or ""), message)
