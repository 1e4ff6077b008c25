"""Run one job per input, in this process or a process pool, turning user errors into results.

A batch command (``ct prepare``, ``wsi tile``, ``explain``) reports its bad inputs at the end and
still processes the others: each job's :class:`~oncoscope.errors.OncoscopeError` is returned in
place of its result, and anything else (a bug) propagates. :class:`TableReport` is what such a
command reports: the rows of the table it wrote and its failures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oncoscope.errors import InvalidOptionError, OncoscopeError

Item = TypeVar("Item")
Result = TypeVar("Result")


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
