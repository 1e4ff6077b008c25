"""``oncoscope wsi tile`` over a tray of small slides, in slides per minute, beside plain
OpenSlide writing the same tiles (issue 18).

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/wsi_tile_batch.py [--slides 100] [--workdir DIR]

On the SYNTHETIC tray of ``slide_batch.py`` (small 2220 x 2967 px slides at 0.5 um/px, copied
from ``--distinct`` originals): ``python -m oncoscope wsi tile TRAY --out OUT --mpp 0.5 --size
224 --overlap 0`` (the whole command: start-up, tissue masks, tiles as PNG, overlays,
manifest), then the anchor: one Python process that opens each slide with OpenSlide, reads
the very tiles ``wsi tile`` kept (from its manifest) with ``read_region`` at level 0, and saves
them as PNG at the same compression level; nothing else. Each is run ``--repeats`` times,
alternating; the best of each is kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from slide_batch import make_tray


def wsi_tile(tray: Path, out: Path) -> float:
    """Seconds of the whole ``oncoscope wsi tile`` command over the tray."""
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "oncoscope", "wsi", "tile", str(tray), "--out", str(out),
        "--mpp", "0.5", "--size", "224", "--overlap", "0",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


_ANCHOR = """
import csv, sys, time
from collections import defaultdict
from pathlib import Path
start = time.perf_counter()
import openslide
from PIL import Image
rows = defaultdict(list)
with open(sys.argv[1], newline="") as handle:
    for row in csv.DictReader(handle):
        rows[row["source"]].append((int(row["x"]), int(row["y"])))
out = Path(sys.argv[2])
for number, (source, positions) in enumerate(sorted(rows.items())):
    folder = out / str(number)
    folder.mkdir(parents=True)
    with openslide.OpenSlide(source) as slide:
        for x, y in positions:
            tile = slide.read_region((x, y), 0, (224, 224)).convert("RGB")
            tile.save(folder / f"x{x}_y{y}.png", compress_level=3)
print(time.perf_counter() - start)
"""


def anchor(manifest: Path, out: Path) -> float:
    """Seconds of the plain-OpenSlide process (its own start-up included)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _ANCHOR, str(manifest), str(out)], check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--distinct", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsi-tile-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tray = make_tray(workdir, args.slides, args.distinct)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(wsi_tile(tray, workdir / "tiles"))
        theirs.append(anchor(workdir / "tiles" / "manifest.csv", workdir / "anchor"))
    with (workdir / "tiles" / "manifest.csv").open(newline="") as handle:
        tiles = sum(1 for _ in csv.DictReader(handle))
    best, anchor_best = min(ours), min(theirs)
    print(
        json.dumps(
            {
                "slides": args.slides,
                "tiles": tiles,
                "wsi_tile_seconds": ours,
                "anchor_seconds": theirs,
                "wsi_tile_slides_per_minute": 60 * args.slides / best,
                "anchor_slides_per_minute": 60 * args.slides / anchor_best,
                "ratio": anchor_best / best,
            }
        )
    )


if __name__ == "__main__":
    main()
