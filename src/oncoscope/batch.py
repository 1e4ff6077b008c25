"""Run one job per input, in this process or a process pool, turning user errors into results.

A batch command (``ct prepare``, ``wsi tile``, ``explain``, ``slide``, ``features``) reports its
bad inputs at the end and still processes the others: each job's
:class:`~oncoscope.errors.OncoscopeError` is returned in place of its result, and anything else
(a bug) propagates. :class:`TableReport` is what such a command reports: the rows of the table
it wrote and its failures. :func:`run_until_disk_full` is the in-process loop of the slide
commands, which also stop at a full disk.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from oncoscope.errors import InvalidOptionError, OncoscopeError

Item = TypeVar("Item")
Result = TypeVar("Result")

#: ``errno`` values of a full disk or an exhausted quota: they stop a batch.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class PathJob(Protocol):
    """A job named by its input file."""

    @property
    def path(self) -> Path:
        """The input file."""
        ...


Job = TypeVar("Job", bound=PathJob)


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an :class:`OSError` raised while it is written (most writers do not
    say which file a full disk stopped), for :func:`run_until_disk_full` to report."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


@dataclass
class BatchReport(Generic[Result]):
    """All inputs of a run: the results of the good ones, ``(path, message)`` of the bad ones,
    and the inputs not attempted because the run stopped (a full disk)."""

    outcomes: list[Result] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)


@dataclass
class TableReport:
    """The outcome of a batch that writes one table: its output folder, the table's rows, and
    ``(path, message)`` of every input that failed."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def run_guarded(
    job: Callable[[Item], Result], items: Sequence[Item], workers: int
) -> Iterator[tuple[Item, Result | OncoscopeError]]:
    """Yield each item with its result or its user error, in completion order.

    Args:
        job: a picklable callable (a module-level function or a ``functools.partial`` of one)
            when ``workers > 1``.
        items: the inputs.
        workers: processes (1 = in this process, in order).

    Raises:
        InvalidOptionError: ``workers`` below 1.

    Example:
        >>> [r for _, r in run_guarded(abs, [-2, 3], workers=1)]
        [2, 3]
    """
    if workers < 1:
        raise InvalidOptionError(f"--workers must be at least 1, got {workers}")
    if workers == 1 or len(items) <= 1:
        for item in items:
            yield item, _guarded(job, item)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = {pool.submit(_guarded, job, item): item for item in items}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # a caller that stops early (a full disk) starts no more jobs
            for future in futures:
                future.cancel()


def _guarded(job: Callable[[Item], Result], item: Item) -> Result | OncoscopeError:
    try:
        return job(item)
    except OncoscopeError as error:
        return error


def run_until_disk_full(
    job: Callable[[Job], Result],
    jobs: Sequence[Job],
    on_job: Callable[[Path, int], None] | None = None,
) -> BatchReport[Result]:
    """Run ``job`` over ``jobs`` in order, in this process (:func:`run_guarded` with one
    worker): a job's :class:`~oncoscope.errors.OncoscopeError` is recorded in ``failures`` as
    ``(its input, message)`` and the others go on.

    A full disk (or quota, :data:`DISK_FULL`) stops the run: the job being written is recorded
    as ``(the file being written, message)`` (``job`` is expected to have removed what it
    wrote), and the jobs after it in ``not_done``.

    Args:
        job: the work on one input.
        jobs: the inputs, each with its ``path``.
        on_job: called with ``(path, jobs in the run)`` before each job.

    Raises:
        OSError: a file cannot be written for another reason than a full disk.

    Example:
        >>> from types import SimpleNamespace as Job
        >>> report = run_until_disk_full(lambda j: j.path.name, [Job(path=Path("a.tif"))])
        >>> report.outcomes, report.failures, report.not_done
        (['a.tif'], [], [])
    """
    report: BatchReport[Result] = BatchReport()
    started: list[int] = []

    def counted(item: Job) -> Result:
        started.append(len(started))
        if on_job is not None:
            on_job(item.path, len(jobs))
        return job(item)

    try:
        for item, outcome in run_guarded(counted, jobs, workers=1):
            if isinstance(outcome, OncoscopeError):
                report.failures.append((str(item.path), outcome.message))
            else:
                report.outcomes.append(outcome)
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        stopped = jobs[started[-1]]
        report.failures.append(
            (
                str(error.filename or stopped.path),
                f"{error.strerror or 'the disk is full'} while writing it; nothing of "
                f"{stopped.path.name} was kept: free space and run again",
            )
        )
        report.not_done = [str(later.path) for later in jobs[started[-1] + 1 :]]
    return report
