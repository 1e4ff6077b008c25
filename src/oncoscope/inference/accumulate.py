"""Average overlapping tile predictions per output cell, in arrays on disk.

Each tile's class probabilities are added to every cell it covers (``k x k`` cells at stride
``1/k``) and a count per cell is kept; the map is ``sums / counts``, NaN where no tile was
classified. Sums and counts are ``.npy`` memory maps (:func:`numpy.lib.format.open_memmap`), so
RAM does not grow with the slide: the OS pages them. No smoothing of any kind.
Written here because no library averages overlapping sliding-window classifications onto a
cell grid.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

#: Rows of the map handled at once when the mean is written.
ROW_CHUNK = 256


class ProbabilityAccumulator:
    """Sums and counts of tile probabilities over a grid of cells, on disk.

    Args:
        folder: where ``sums.npy`` (float64 ``(rows, cols, classes)``) and ``counts.npy``
            (uint32 ``(rows, cols)``) are made.
        shape_rows_cols: cells of the grid.
        num_classes: probabilities per tile.
    """

    def __init__(self, folder: str | Path, shape_rows_cols: tuple[int, int], num_classes: int):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows, cols = shape_rows_cols
        self.shape_rows_cols = (rows, cols)
        self.sums: np.memmap[Any, np.dtype[np.float64]] = open_memmap(
            folder / "sums.npy", mode="w+", dtype=np.float64, shape=(rows, cols, num_classes)
        )
        preallocate(folder / "sums.npy")
        self.counts: np.memmap[Any, np.dtype[np.uint32]] = open_memmap(
            folder / "counts.npy", mode="w+", dtype=np.uint32, shape=(rows, cols)
        )
        preallocate(folder / "counts.npy")

    def add(
        self,
        cells: np.ndarray[Any, Any],
        cells_per_tile: int,
        probabilities: np.ndarray[Any, Any],
    ) -> None:
        """Add tiles: ``cells`` ``(n, 2)`` top-left ``(row, col)``, ``probabilities`` ``(n, C)``.

        Tiles must be distinct (each ``(row, col)`` once per call). Cells past the grid are
        ignored.

        Example (two tiles of 2 x 2 cells overlapping on one column):
            >>> import tempfile
            >>> acc = ProbabilityAccumulator(tempfile.mkdtemp(), (2, 3), 1)
            >>> acc.add(np.array([[0, 0], [0, 1]]), 2, np.array([[1.0], [0.0]]))
            >>> acc.mean()[0, :, 0].tolist()
            [1.0, 0.5, 0.0]
        """
        cells = np.asarray(cells, dtype=np.int64)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        rows, cols = self.shape_rows_cols
        for dr in range(cells_per_tile):
            for dc in range(cells_per_tile):
                r, c = cells[:, 0] + dr, cells[:, 1] + dc
                inside = (r < rows) & (c < cols)
                r, c = r[inside], c[inside]
                self.sums[r, c] += probabilities[inside]
                self.counts[r, c] += 1

    def mean(
        self, out: np.ndarray[Any, np.dtype[np.float32]] | None = None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """``sums / counts`` as float32 ``(rows, cols, classes)``, NaN where the count is 0.

        Args:
            out: an array (e.g. a memory map) to write into, chunk by chunk of rows.
        """
        if out is None:
            out = np.empty(self.sums.shape, dtype=np.float32)
        for top in range(0, self.shape_rows_cols[0], ROW_CHUNK):
            counts = self.counts[top : top + ROW_CHUNK, :, None].astype(np.float64)
            sums = self.sums[top : top + ROW_CHUNK]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[top : top + ROW_CHUNK] = np.where(counts > 0, sums / counts, np.nan)
        return out

    def flush(self) -> None:
        """Write the memory maps to disk."""
        self.sums.flush()
        self.counts.flush()


def preallocate(path: str | Path) -> None:
    """Reserve the disk blocks of a file made by :func:`~numpy.lib.format.open_memmap`.

    Such files are sparse: without this, a full disk shows only when the memory map's pages
    are written back, as a SIGBUS that kills the process. File systems that cannot reserve
    space (``EOPNOTSUPP``, ``EINVAL``) are left as they are.

    Raises:
        OSError: the disk (or quota) is full (``filename`` is ``path``), or the file cannot be
            opened.
    """
    path = Path(path)
    with path.open("r+b") as stream:
        try:
            os.posix_fallocate(stream.fileno(), 0, os.fstat(stream.fileno()).st_size)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return
            raise OSError(error.errno, error.strerror, str(path)) from None
