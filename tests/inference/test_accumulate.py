"""Averaging of overlapping tiles per cell, checked against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncoscope.inference.accumulate import ProbabilityAccumulator


def test_stride_half_averages_each_cell_over_the_tiles_covering_it(tmp_path: Path) -> None:
    # Stride 0.5: a tile covers 2 x 2 cells. Four tiles on a 3 x 3 grid of cells:
    #   tile (0,0) -> [1, 0], tile (0,1) -> [0, 1], tile (1,0) -> [0.5, 0.5], tile (1,1) -> [1, 0]
    acc = ProbabilityAccumulator(tmp_path, (3, 3), 2)
    cells = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    acc.add(cells, 2, probs)
    first = acc.mean()[..., 0]
    # by hand: each cell's mean over the tiles that cover it
    expected = np.array(
        [
            [1.0, 0.5, 0.0],  # (0,0): t00; (0,1): t00 t01; (0,2): t01
            [0.75, 0.625, 0.5],  # (1,0): t00 t10; (1,1): all four; (1,2): t01 t11
            [0.5, 0.75, 1.0],  # (2,0): t10; (2,1): t10 t11; (2,2): t11
        ]
    )
    np.testing.assert_allclose(first, expected)
    np.testing.assert_allclose(acc.mean().sum(axis=-1), 1.0)
    assert acc.counts.tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]


def test_cells_no_tile_covers_are_nan_and_tiles_past_the_edge_are_clipped(tmp_path: Path) -> None:
    acc = ProbabilityAccumulator(tmp_path, (2, 3), 1)
    acc.add(np.array([[1, 2]]), 2, np.array([[0.25]]))  # covers (1,2) only; the rest is outside
    mean = acc.mean()[..., 0]
    assert mean[1, 2] == 0.25
    assert np.isnan(mean[0]).all() and np.isnan(mean[1, :2]).all()


def test_sums_and_counts_live_in_files_on_disk(tmp_path: Path) -> None:
    acc = ProbabilityAccumulator(tmp_path, (500, 400), 3)
    for array, name in ((acc.sums, "sums.npy"), (acc.counts, "counts.npy")):
        assert isinstance(array, np.memmap)
        assert Path(array.filename).resolve() == (tmp_path / name).resolve()
    assert (tmp_path / "sums.npy").stat().st_size >= 500 * 400 * 3 * 8
