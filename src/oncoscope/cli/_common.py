"""What every command shares: consoles, the one-line error handler, progress bars."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from oncoscope.errors import OncoscopeError

console = Console(soft_wrap=True)  # paths are printed whole, never wrapped
error_console = Console(stderr=True, soft_wrap=True)
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


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an OncoscopeError into one line on stderr and exit code 2 (unless --debug)."""
    try:
        yield
    except OncoscopeError as error:
        if state["debug"]:
            raise
        error_console.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def progress_bar() -> Progress:
    """A rich progress bar on stderr that clears itself when done."""
    return Progress(
        TextColumn("{task.description}"),
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
