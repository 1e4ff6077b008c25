"""What every command shares: consoles, the one-line error handler, progress bars."""

from __future__ import annotations

import errno
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from oncoscope.errors import OncoscopeError

# Paths are printed whole, never wrapped. Markup and emoji codes are off: lines carry user text
# (paths, options) in which "[b]", "[/]" or ":+1:" must print as typed. A line that styles its
# own text passes markup=True and escapes what the user gave (rich.markup.escape).
console = Console(soft_wrap=True, markup=False, emoji=False)
error_console = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)
state = {"debug": False}


def positive_number(value: float | None) -> float | None:
    """Option callback: a finite number above 0 (None passes: an optional option not given).

    Used with ``typer.Option(callback=positive_number)`` on every option that is a size, a
    resolution or a fraction of a tile, so that NaN, infinities, 0 and negatives are refused
    at parse time as a usage error (exit code 2) naming the option.

    Raises:
        typer.BadParameter: NaN, an infinity, 0 or a negative number.
    """
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number above 0, got {value:g}")
    return value


def finite_number(value: float | None) -> float | None:
    """Option callback: a finite number (None passes); NaN and infinities are refused at parse
    time as a usage error (exit code 2) naming the option. Ranges are the option's ``min``/``max``.

    Raises:
        typer.BadParameter: NaN or an infinity.
    """
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value:g}")
    return value


#: ``--mpp-of-scan``: the scan's microns per pixel, for slides whose files lack it.
ScanMpp = Annotated[
    float | None,
    typer.Option(
        help="Microns per pixel of the scan, for slides lacking it.", callback=positive_number
    ),
]
#: ``--magnification-of-scan``: the scan's objective power, for slides whose files lack it.
ScanMagnification = Annotated[
    float | None,
    typer.Option(
        help="Objective power of the scan, for slides lacking it.", callback=positive_number
    ),
]

#: ``--spacing-mm``: voxel size for CT files whose own is zero, negative or NaN.
SpacingMm = Annotated[
    str | None,
    typer.Option(
        "--spacing-mm",
        help="D,H,W voxel size in mm (slice, row, column) for files whose spacing is zero, "
        "negative or NaN; files with a valid spacing keep theirs.",
    ),
]


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
