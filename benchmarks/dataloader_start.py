"""What a per-slide DataLoader start costs ``oncoscope slide`` on a small slide (issue 18).

Run by hand, never in the test suite (under a minute on 2 cores):

    .venv/bin/python benchmarks/dataloader_start.py [--workers 0 2] [--repeats 5] [--workdir DIR]

On the SYNTHETIC small slide of ``slide_throughput.py`` (2220 x 2967 px at 0.5 um/px, 65
tissue tiles of 224 px at stride 1), with the tile grid planned once, it reads every tile of the
slide (no model) through:

- ``fresh``: a new DataLoader per slide, as ``infer_slides`` makes one today
  (:func:`oncoscope.inference.predict_tiles.tile_loader`): its worker processes start, open the
  slide and read; the pool of open slides is emptied first, as for a new slide;
- ``persistent``: one DataLoader with ``persistent_workers=True`` over the same tiles, read
  ``--repeats`` times: the first pass starts the workers, the later ones reuse them (the
  slide's handle stays open in each worker), as workers kept across slides would.

The per-slide start cost is the fresh pass's seconds less a persistent later pass's (medians);
beside it, the seconds of a bare forward of the 65 tiles at the precision ``auto`` gives here.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from slide_throughput import SMALL_WH, bare_forward, make_checkpoint
from torch.utils.data import DataLoader


def read_all(loader: DataLoader[object]) -> tuple[float, float, int]:
    """Seconds to the first batch, seconds for every batch, and tiles read."""
    start = time.perf_counter()
    first = None
    tiles = 0
    for batch, _ in loader:
        first = first if first is not None else time.perf_counter() - start
        tiles += len(batch)
    return first or 0.0, time.perf_counter() - start, tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from oncoscope.hardware import resolve_precision
    from oncoscope.inference.patches import TileDataset
    from oncoscope.inference.predict_tiles import tile_loader
    from oncoscope.inference.slide_inference import SlideOptions, load_classifier, plan_tiles
    from oncoscope.io.slides import close_pool, open_slide
    from oncoscope.pathology.synthetic import write_synthetic_slide

    work = args.workdir or Path(tempfile.mkdtemp(prefix="loader-start-"))
    work.mkdir(parents=True, exist_ok=True)
    slide = work / "small.tif"
    if not slide.exists():
        write_synthetic_slide(slide, SMALL_WH, mpp=0.5, magnification=20)
    cpu = torch.device("cpu")
    checkpoint = make_checkpoint(work / "resnet18.ckpt")
    spec = load_classifier(checkpoint, cpu).spec
    start = time.perf_counter()
    with open_slide(slide) as opened:
        grid = plan_tiles(spec, opened, SlideOptions(mpp=0.5, stride=1.0))
    setup = time.perf_counter() - start
    dataset = TileDataset(slide, grid.positions_level0, 224, grid.target)
    auto = resolve_precision("auto", cpu)
    per_second = bare_forward(checkpoint, auto, 3.0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}; {len(dataset)} tiles; "
        f"tissue+grid {setup:.3f} s; bare forward of the tiles at {auto}: "
        f"{len(dataset) / per_second:.3f} s"
    )
    print("\n| workers | fresh loader: first batch / all (s) | persistent: first pass / later "
          "pass (s) | start cost per slide (s) |\n|---|---|---|---|")  # fmt: skip
    for workers in args.workers:
        fresh = []
        for _ in range(args.repeats):
            close_pool()
            fresh.append(read_all(tile_loader(dataset, 16, workers, cpu)))
        close_pool()
        kept: DataLoader[object] = DataLoader(
            dataset.batches(16),
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )
        passes = [read_all(kept)[1] for _ in range(args.repeats + 1)]
        fresh_first = statistics.median(f[0] for f in fresh)
        fresh_all = statistics.median(f[1] for f in fresh)
        later = statistics.median(passes[1:])
        print(
            f"| {workers} | {fresh_first:.3f} / {fresh_all:.3f} | {passes[0]:.3f} / "
            f"{later:.3f} | {fresh_all - later:.3f} |",
            flush=True,
        )
        del kept


if __name__ == "__main__":
    main()
