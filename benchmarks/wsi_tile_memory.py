"""Peak memory of ``wsi tile`` against slide size: 10 000^2 vs 100 000^2 synthetic slides.

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/wsi_tile_memory.py [--sizes 10000 100000] [--workdir DIR]

Each slide is SYNTHETIC: mostly blank glass with the same three tissue blobs (so both slides
give the same number of tiles and only the slide's size differs), written tile by tile so even
the 100 000^2 one is small on disk and never held in memory. Each ``wsi tile`` runs in a fresh
process; its peak memory is VmHWM from /proc (ru_maxrss would carry over the generator's peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(slide: Path, out: Path) -> dict[str, float]:
    from oncoscope.pathology.tile_dataset import TileOptions, tile_slides

    start = time.perf_counter()
    report = tile_slides([slide], out, TileOptions(size_px=256, magnification=20, ratio=(1, 0, 0)))
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    return {"seconds": round(seconds, 1), "tiles": len(report.rows), "peak_rss_mib": round(peak)}


def _write(path: Path, side: int) -> float:
    from shapely.geometry import Point, box

    from oncoscope.pathology.annotations import Annotation
    from oncoscope.pathology.synthetic import write_synthetic_slide

    regions = [
        Annotation("tumour", box(1000, 1000, 4000, 4000)),
        Annotation("stroma", Point(6500, 6500).buffer(2000)),
        Annotation("normal", box(side - 3000, side - 2500, side - 1000, side - 1000)),
    ]
    start = time.perf_counter()
    write_synthetic_slide(path, (side, side), regions=regions, tile_px=512)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # slide, out (child)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="wsi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| slide (px) | file size | write s | wsi tile s | tiles | peak RSS |")
    print("|---|---|---|---|---|---|")
    for side in args.sizes:
        slide = work / f"slide-{side}.tif"
        written = _write(slide, side)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(slide), str(work / f"out-{side}")],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        size_mib = slide.stat().st_size / 2**20
        print(
            f"| {side} x {side} | {size_mib:.0f} MiB | {written:.0f} | {result['seconds']} | "
            f"{result['tiles']} | {result['peak_rss_mib']} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
