"""Tiles over the tissue of a slide on the output-cell grid, and a Dataset that reads them.

The output grid divides the slide into square cells of one stride step: with a tile of
``tile_px`` pixels at the target resolution and ``--stride 1/k``, a cell is ``tile_px / k``
target pixels, and a tile whose top-left corner is cell ``(row, col)`` covers cells
``row .. row + k - 1`` and ``col .. col + k - 1``. Cells start at the slide's level-0 origin;
the last row and column may reach past the slide's edge (read as background). A tile is kept
by the coverage rule of :mod:`oncoscope.pathology.tissue` (its exact tissue fraction above 0 and
at least ``min_tissue``), on the slide's one tissue mask, as ``wsi tile`` keeps its tiles.

:class:`TileDataset` reads tiles from the slide the command opened when it runs in that
process, and through :func:`oncoscope.io.slides.pooled_slide` in DataLoader workers and other
processes (each opens the slide once and reuses the handle). It returns ``uint8`` RGB
``(H, W, 3)`` tensors: normalising on the model's device is cheaper than shipping floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from oncoscope.errors import InvalidOptionError
from oncoscope.inference.device_decode import EncodedBatchBuilder, EncodedTiles
from oncoscope.io.slides import Resolution, Slide, pooled_slide
from oncoscope.pathology.tissue import TissueMask, kept, tile_fractions


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one slide are, on the output-cell grid.

    Attributes:
        target: the resolution tiles are read at.
        tile_px: tile side in pixels at the target resolution (the model's input size).
        cells_per_tile: ``k``, cells per tile side (``1 / stride``).
        cell_size_level0: level-0 pixels per cell side.
        shape_rows_cols: cells of the grid.
        cells: ``(n, 2) int64`` ``(row, col)`` of each tile's top-left cell.
    """

    target: Resolution
    tile_px: int
    cells_per_tile: int
    cell_size_level0: float
    shape_rows_cols: tuple[int, int]
    cells: np.ndarray[Any, np.dtype[np.int64]]

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def positions_level0(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """``(n, 2)`` level-0 ``(x, y)`` of each tile's top-left corner."""
        positions: np.ndarray[Any, np.dtype[np.float64]] = (
            self.cells[:, ::-1].astype(np.float64) * self.cell_size_level0
        )
        return positions


def cells_per_tile(stride: float, tile_px: int) -> int:
    """``k = 1 / stride``, checked to be a whole number dividing the tile side.

    Raises:
        InvalidOptionError: a stride outside (0, 1], not ``1/k``, or ``k`` not dividing
            ``tile_px``.

    Example:
        >>> cells_per_tile(0.5, 224), cells_per_tile(1.0, 224), cells_per_tile(0.25, 224)
        (2, 1, 4)
    """
    if not 0 < stride <= 1:
        raise InvalidOptionError(f"--stride must be in (0, 1], got {stride}")
    k = round(1 / stride)
    if abs(k * stride - 1) > 1e-6 or tile_px % k:
        raise InvalidOptionError(
            f"--stride {stride:g} must be 1/k with k dividing the tile size {tile_px} px "
            "(e.g. 1, 0.5, 0.25)"
        )
    return k


def tile_grid(
    slide_wh: tuple[int, int],
    target: Resolution,
    tile_px: int,
    stride: float,
    tissue: TissueMask,
    min_tissue: float = 0.05,
) -> TileGrid:
    """Tiles over the tissue on the output-cell grid (see the module docstring).

    Args:
        slide_wh: level-0 size of the slide.
        target: resolution the tiles are read at.
        tile_px: tile side at that resolution (the model's input size).
        stride: step between tiles as a fraction of the tile (1, 0.5, 0.25, ...).
        tissue: the slide's tissue mask (:func:`oncoscope.pathology.tissue.slide_tissue`).
        min_tissue: least share (0..1) of a tile that must be tissue for it to be classified
            (:func:`oncoscope.pathology.tissue.kept`).

    Raises:
        InvalidOptionError: see :func:`cells_per_tile`; ``min_tissue`` outside [0, 1].
    """
    if not 0 <= min_tissue <= 1:
        raise InvalidOptionError(f"--min-tissue must be in [0, 1], got {min_tissue}")
    k = cells_per_tile(stride, tile_px)
    cell0 = tile_px // k * target.downsample
    rows, cols = math.ceil(slide_wh[1] / cell0), math.ceil(slide_wh[0] / cell0)
    cells = np.indices((rows, cols)).reshape(2, -1).T.astype(np.int64)
    extent = tile_px * target.downsample
    fractions = tile_fractions(tissue, cells[:, ::-1] * cell0, (extent, extent))
    return TileGrid(target, tile_px, k, cell0, (rows, cols), cells[kept(fractions, min_tissue)])


class TileDataset(Dataset[tuple[torch.Tensor, int]]):
    """Tiles of one slide as ``(uint8 (H, W, 3) tensor, tile index)``.

    For streaming, :meth:`batches` gives the same tiles a whole batch per item.

    Args:
        path: the slide file.
        positions_level0: ``(n, 2)`` level-0 ``(x, y)`` of the tiles' top-left corners.
        tile_px: tile side at the target resolution.
        target: the resolution (see :meth:`oncoscope.io.slides.Slide.resolution`).
        scan_mpp, scan_magnification: overrides of the scan's mpp / objective power.
        stain: a fitted stain target (:meth:`oncoscope.pathology.stain.StainNormalizer.state`,
            as a checkpoint records it) every tile is normalised to after reading; None: none.
        slide: the slide already open in this process (read from here, not reopened; never
            pickled: worker processes open their own through the pool).
    """

    def __init__(
        self,
        path: str | Path,
        positions_level0: np.ndarray[Any, Any],
        tile_px: int,
        target: Resolution,
        scan_mpp: float | None = None,
        scan_magnification: float | None = None,
        stain: dict[str, Any] | None = None,
        slide: Slide | None = None,
    ) -> None:
        self.path = str(path)
        self._slide = slide
        self.positions = np.asarray(positions_level0, dtype=np.float64)
        self.tile_px = tile_px
        self.target = target
        self.scan = {"mpp": scan_mpp, "magnification": scan_magnification}
        self.stain = stain
        self._normaliser: Any = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slide"] = None  # an open handle cannot cross processes
        return state

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tile = torch.empty((1, self.tile_px, self.tile_px, 3), dtype=torch.uint8)
        self.read_into(np.array([index]), tile.numpy())
        return tile[0], index

    def read_into(
        self, indices: np.ndarray[Any, Any], out: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> None:
        """Read the tiles at ``indices`` into ``out`` (``(len(indices), H, W, 3) uint8``)."""
        slide = self._open()
        size = (self.tile_px, self.tile_px)
        self._make_normaliser()
        for slot, (x, y) in enumerate(self.positions[indices].tolist()):
            slide.read_at((x, y), size, self.target, out[slot])
            if self._normaliser is not None:
                out[slot] = self._normaliser(out[slot])

    def read_batch(self, indices: np.ndarray[Any, Any]) -> torch.Tensor:
        """The tiles at ``indices`` as one ``(len(indices), H, W, 3) uint8`` tensor."""
        side = self.tile_px
        batch = torch.empty((len(indices), side, side, 3), dtype=torch.uint8)
        self.read_into(indices, batch.numpy())
        return batch

    def read_encoded(self, indices: np.ndarray[Any, Any]) -> EncodedTiles:
        """The tiles at ``indices`` as a batch to decode on the model's device: compressed
        JPEG tiles where the slide has them, tiles decoded here for the rest (see
        :mod:`oncoscope.inference.device_decode`). With a stain target every tile is decoded
        here (the normalisation runs on the CPU)."""
        side = self.tile_px
        pixels = np.empty((len(indices), side, side, 3), dtype=np.uint8)
        builder = EncodedBatchBuilder(pixels)
        if self.stain is not None:
            self.read_into(indices, pixels)
            return builder.build()
        slide = self._open()
        for slot, (x, y) in enumerate(self.positions[indices].tolist()):
            found = slide.jpeg_pieces_at((x, y), (side, side), self.target)
            if found is None:
                slide.read_at((x, y), (side, side), self.target, pixels[slot])
                continue
            pieces, outside = found
            if outside and slide.tiff_tiles is not None:
                pixels[slot] = slide.tiff_tiles.background
            builder.add(slot, pieces)
        return builder.build()

    def _open(self) -> Slide:
        """The slide: the one opened in this process, or (in a reader process) the pool's."""
        if self._slide is None or get_worker_info() is not None:  # a forked worker opens its own
            return pooled_slide(self.path, **self.scan)
        return self._slide

    def subset(self, indices: np.ndarray[Any, Any]) -> TileDataset:
        """The tiles at ``indices`` (in that order) as a dataset of their own, read from the
        same open slide in this process: small to send to a reader process."""
        self._make_normaliser()  # once, shared by the parts read in this process
        part = TileDataset.__new__(TileDataset)
        part.__dict__.update(self.__dict__)
        part.positions = self.positions[np.asarray(indices, dtype=np.int64)]
        return part

    def _make_normaliser(self) -> None:
        if self.stain is not None and self._normaliser is None:
            from oncoscope.pathology.stain import StainNormalizer

            self._normaliser = StainNormalizer.from_state(self.stain)

    def batches(self, batch_size: int, indices: np.ndarray[Any, Any] | None = None) -> TileBatches:
        """These tiles (or those at ``indices``, in that order) in batches of ``batch_size``."""
        return TileBatches(self, batch_size, indices)


class TileBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Whole batches of a :class:`TileDataset`: ``(uint8 (b, H, W, 3), int64 (b,) indices)``.

    Each tile is read straight into its slot of the batch tensor, so a batch costs one copy of
    its pixels after decoding (no per-tile arrays, no collate); load it with
    ``DataLoader(batch_size=None)``. Batches are consecutive tiles in the given order; the last
    one may be smaller.
    """

    def __init__(
        self, tiles: TileDataset, batch_size: int, indices: np.ndarray[Any, Any] | None = None
    ) -> None:
        if batch_size < 1:
            raise InvalidOptionError(f"--batch-size must be at least 1, got {batch_size}")
        self.tiles = tiles
        self.batch_size = batch_size
        self.indices = np.arange(len(tiles)) if indices is None else np.asarray(indices)
        self.indices = self.indices.astype(np.int64)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= item < len(self):
            raise IndexError(item)
        chosen = self.indices[item * self.batch_size : (item + 1) * self.batch_size]
        return self.tiles.read_batch(chosen), torch.from_numpy(chosen.copy())
