"""What every command shares: consoles, the one-line error handler, progress bars, reports.

The options commands share are declared in :mod:`oncoscope.cli.options`.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oncoscope.errors import OncoscopeError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Paths are printed whole, never wrapped. Markup and emoji codes are off: lines carry user text
# (paths, options) in which "[b]", "[/]" or ":+1:" must print as typed. A line that styles its
# own text passes markup=True and escapes what the user gave (rich.markup.escape).
console = Console(soft_wrap=True, markup=False, emoji=False)
error_console = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)
state = {"debug": False}


#: Errors of the machine, not of the code, met while writing: disk full, quota exceeded, file too
#: large, read-only file system, permission denied. Reported in one line, like bad input.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES})


@contextmanager
def user_errors(out: Path | None = None) -> Iterator[None]:
    """Turn an OncoscopeError into one line on stderr and exit code 2 (unless --debug).

    So too an OSError of :data:`WRITE_ERRNOS` (a full disk...): ``error: FILE: reason``.

    Args:
        out: the command's ``--out`` folder, checked (:func:`check_out_dir`) before the body
            runs, so that a bad one is refused before any work.
    """
    try:
        if out is not None:
            check_out_dir(out)
        yield
    except OncoscopeError as error:
        if state["debug"]:
            raise
        error_console.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None
    except OSError as error:
        if state["debug"] or error.errno not in WRITE_ERRNOS:
            raise
        where = error.filename if error.filename is not None else "output"
        error_console.print(f"error: {where}: {error.strerror}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def check_out_dir(out: Path) -> None:
    """Check that ``out`` can be the output folder: an existing folder we can write in, or a
    path whose nearest existing ancestor is a folder we can write in. Nothing is created.

    Raises:
        OncoscopeError: ``out`` (or an ancestor) is an existing file, or the folder that would
            hold the output is not writable.
    """
    out = Path(out)
    absolute = out.absolute()
    try:
        if out.exists() and not out.is_dir():
            raise OncoscopeError("--out is an existing file; expected a folder", out)
        existing = out
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        absolute = existing.absolute()
        if not absolute.is_dir():
            raise OncoscopeError(f"cannot create the --out folder: {existing} is a file", out)
        # os.access says yes to root even on read-only mounts: try it instead
        handle, probe = tempfile.mkstemp(prefix=".oncoscope-write-test-", dir=absolute)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OncoscopeError(f"--out is not writable: {absolute}: {reason}", out) from None
    os.close(handle)
    Path(probe).unlink()


def progress_bar() -> Progress:
    """A rich progress bar on stderr that clears itself when done."""
    return Progress(
        TextColumn("{task.description}", markup=False),  # descriptions name files
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console,
        transient=True,
    )


def exit_on_failures(failures: list[tuple[str, str]], what: str = "input(s)") -> None:
    """Print each failed input as one ``error: PATH: message`` line and exit 2, if any."""
    if not failures:
        return
    error_console.print(f"{len(failures)} {what} failed:", highlight=False)
    for path, message in failures:
        error_console.print(f"  error: {path}: {message}", markup=False, highlight=False)
    raise typer.Exit(code=2)


def print_warning(where: object, message: str) -> None:
    """One ``warning: WHERE: message`` line on stderr, printed as typed."""
    error_console.print(f"warning: {where}: {message}", markup=False, highlight=False)


def quiet_lightning() -> None:
    """Keep Lightning's info lines and its own deprecation warnings off a training command's
    output (its progress bar and our summary stay)."""
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def quiet_compiler() -> None:
    """Keep ``torch.compile``'s notes on its C++ toolchain (``No CUDA runtime is found, using
    CUDA_HOME=...`` on a CPU machine) off a command's output; its errors still show."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def print_table(title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Print ``rows`` (dicts with the ``columns``) as a rich table: columns of numbers right
    aligned, the others left aligned."""
    table = Table(title=title)
    for column in columns:
        numbers = bool(rows) and all(isinstance(row[column], int | float) for row in rows)
        table.add_column(column, justify="right" if numbers else "left")
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    console.print(table)


@contextmanager
def counted_progress(items: str) -> Iterator[Callable[[int], None]]:
    """A progress bar of ``items`` on stderr for the ``with`` block; the function it gives
    counts one more item done of ``total`` (the callback of a batch over inputs)."""
    with progress_bar() as progress:
        task = progress.add_task(items, total=None)
        yield lambda total: progress.update(task, total=total, advance=1)


class ItemProgress:
    """Two progress bars of a batch command: inputs done of all, and the current input's units
    (tiles of a slide). Its methods are the batch's ``on_slide`` and ``on_tiles`` callbacks."""

    def __init__(self, progress: Progress, items: str, units: str) -> None:
        self._progress = progress
        self._overall = progress.add_task(items, total=None)
        self._current = progress.add_task(units, total=None, visible=False)
        self._started = 0

    def on_item(self, path: Path, total: int) -> None:
        """An input (one of ``total``) starts: the unit bar restarts, named for it."""
        self._progress.update(self._overall, total=total, completed=self._started)
        self._started += 1
        self._progress.reset(self._current, total=None, visible=True, description=path.name)

    def on_units(self, done: int, total: int) -> None:
        """``done`` units of the current input's ``total``."""
        self._progress.update(self._current, completed=done, total=total)

    def finish(self) -> None:
        """Every input started is done."""
        self._progress.update(self._overall, completed=self._started)


@contextmanager
def item_progress(items: str = "slides", units: str = "tiles") -> Iterator[ItemProgress]:
    """:class:`ItemProgress` bars on stderr for the ``with`` block, cleared at its end."""
    with progress_bar() as progress:
        bars = ItemProgress(progress, items, units)
        yield bars
        bars.finish()


class SlideOutcome(Protocol):
    """What a batch over slides says of one slide (``oncoscope slide``, ``features``)."""

    @property
    def slide(self) -> Path: ...
    @property
    def summary(self) -> dict[str, Any] | None: ...  # None: skipped (or not rank 0)
    @property
    def warnings(self) -> list[str]: ...
    @property
    def rank_zero(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=SlideOutcome)


def report_slides(
    outcomes: Sequence[OutcomeT],
    not_done: Sequence[str],
    failures: list[tuple[str, str]],
    output: Callable[[OutcomeT], Path],
    describe: Callable[[dict[str, Any]], str],
    totals: Sequence[str] = (),
) -> None:
    """Print what a batch over slides did, and exit 2 if a slide failed.

    Per slide (rank 0 of a distributed run only: the other processes say nothing) its
    warnings, then ``SLIDE: already done, skipped (OUTPUT)`` or ``SLIDE: describe(...) ->
    OUTPUT``; then the slides not done because the run stopped at a full disk, and the failures
    (:func:`exit_on_failures`).

    Args:
        output: where a slide's outputs are (its folder, its bag).
        describe: what was made, from the slide's ``summary.json``.
        totals: lines on the whole run, printed after the slides'.
    """
    for outcome in outcomes:
        if not outcome.rank_zero:
            continue
        for note in outcome.warnings:
            print_warning(outcome.slide, note)
        if outcome.summary is None:
            console.print(f"{outcome.slide}: already done, skipped ({output(outcome)})")
            continue
        console.print(
            f"{outcome.slide}: {describe(outcome.summary)} -> {output(outcome)}",
            highlight=False,
        )
    for line in totals:
        console.print(line, highlight=False)
    if not_done:
        error_console.print(
            f"{len(not_done)} slide(s) not done (the run stopped at a full disk):",
            highlight=False,
        )
        for path in not_done:
            error_console.print(f"  not done: {path}", markup=False, highlight=False)
    exit_on_failures(failures, "slide(s)")


def run_line(summaries: Sequence[dict[str, Any]], seconds: float) -> list[str]:
    """``run: N slides, T tiles in S s (R tiles/s over the run)`` when a run did more than one
    slide (``summaries``: those it did; ``seconds``: the whole run's wall clock), else none."""
    if len(summaries) < 2:
        return []
    tiles = sum(int(s["tiles"]) for s in summaries)
    rate = f"{tiles / seconds:.1f}" if seconds > 0 else "-"
    return [
        f"run: {len(summaries)} slides, {tiles} tiles in {seconds:.1f} s "
        f"({rate} tiles/s over the run)"
    ]


OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


def options_from(cls: type[OptionsT], ctx: typer.Context, **given: Any) -> OptionsT:
    """The options object ``cls`` (a dataclass) of a command: each field takes the value in
    ``given`` (one parsed from text), else the command-line option of the same name
    (``ctx.params``), else keeps its default.

    Raises:
        TypeError: a name in ``given`` that is not a field of ``cls`` (a mistake in the
            command, not in its use).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    options = {name: ctx.params[name] for name in names if name in ctx.params}
    return cls(**{**options, **given})
