"""Throughput of ``oncoscope features`` beside ``oncoscope slide``, and its peak memory.

Run by hand, never in the test suite (a few minutes on 2 cores):

    .venv/bin/python benchmarks/features_throughput.py [--parts e2e,memory] [--repeats 3]
        [--precision auto] [--workers 0] [--workdir DIR]

On SYNTHETIC slides (never patient data), with the same encoder for both commands: a resnet18
checkpoint with random weights, 224 px, in oncoscope's checkpoint format
(``benchmarks/slide_throughput.py``'s), stride 1, 0.5 um/px, batch 16, the same precision.

- ``e2e``: a 4000 x 4000 synthetic slide at 0.5 um/px; ``slide`` (``infer_slide``) and
  ``features`` (``extract_slide``) one after the other, ``--repeats`` times each, alternating;
  tiles/s is tiles over the wall seconds of the whole per-slide call (opening the slide to
  every output written: maps for ``slide``, the bag for ``features``); the best run of each
  is kept and their ratio printed.
- ``memory``: peak resident memory (VmHWM) of a fresh process running ``features`` on a
  10 000^2 and a 100 000^2 slide with the same tissue (the sparse TIFFs of
  ``slide_throughput.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slide_throughput import make_checkpoint, write_sparse_slide

E2E_WH = (4000, 4000)


def run_slide(checkpoint: Path, slide: Path, out: Path, precision: str, workers: int) -> float:
    """Tiles/s of ``oncoscope slide`` on one slide, whole call."""
    from oncoscope.inference.slide_inference import SlideOptions, infer_slide, load_classifier

    classifier = load_classifier(checkpoint, torch.device("cpu"))
    options = SlideOptions(
        mpp=0.5, stride=1.0, batch_size=16, workers=workers, precision=precision, overwrite=True
    )
    start = time.perf_counter()
    summary = infer_slide(classifier, slide, out, options).summary
    seconds = time.perf_counter() - start
    assert summary is not None
    return float(summary["tiles"]) / seconds


def run_features(
    checkpoint: Path, slide: Path, out: Path, precision: str, workers: int
) -> tuple[float, dict[str, Any]]:
    """Tiles/s of ``oncoscope features`` on one slide, whole call, and its summary."""
    from oncoscope.features.encoders import load_encoder
    from oncoscope.features.extract import FeatureOptions, extract_slide

    encoder = load_encoder(checkpoint, device=torch.device("cpu"))
    options = FeatureOptions(
        mpp=0.5, stride=1.0, batch_size=16, workers=workers, precision=precision, overwrite=True
    )
    start = time.perf_counter()
    summary = extract_slide(encoder, slide, out, options).summary
    seconds = time.perf_counter() - start
    assert summary is not None
    return float(summary["tiles"]) / seconds, summary


def memory_child(checkpoint: Path, slide: Path, out: Path) -> dict[str, Any]:
    rate, summary = run_features(checkpoint, slide, out, "auto", 0)
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    return {"tiles": summary["tiles"], "tiles_per_second": rate, "peak_rss_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="e2e,memory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(*map(Path, args.memory_child))))
        return
    from oncoscope.hardware import cpu_model, resolve_precision
    from oncoscope.pathology.synthetic import write_synthetic_slide

    parts = set(args.parts.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="features-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(
        f"machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, precision {precision}"
    )
    checkpoint = make_checkpoint(work / "resnet18.ckpt")
    if "e2e" in parts:
        slide = work / "e2e.tif"
        if not slide.exists():
            write_synthetic_slide(slide, E2E_WH, mpp=0.5, magnification=20)
        rates: dict[str, list[float]] = {"slide": [], "features": []}
        tiles = 0
        for _ in range(args.repeats):
            rates["slide"].append(
                run_slide(checkpoint, slide, work / "maps", precision, args.workers)
            )
            rate, summary = run_features(checkpoint, slide, work / "bags", precision, args.workers)
            rates["features"].append(rate)
            tiles = int(summary["tiles"])
        best = {name: max(values) for name, values in rates.items()}
        print(f"\n{tiles} tiles of 224 px at 0.5 um/px, resnet18, batch 16, {precision}")
        print("| command | tiles/s (best of runs) | runs |\n|---|---|---|")
        for name, values in rates.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"| {name} | {best[name]:.1f} | {shown} |")
        print(f"features / slide: {best['features'] / best['slide']:.2f}x")
    if "memory" in parts:
        print("\n| slide | tiles | tiles/s | peak RSS |\n|---|---|---|---|")
        for side in (10_000, 100_000):
            slide = work / f"sparse-{side}.tif"
            if not slide.exists():
                write_sparse_slide(slide, side)
            done = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(checkpoint), str(slide),
                 str(work / f"bags-{side}")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {side}^2 | {result['tiles']} | {result['tiles_per_second']:.1f} | "
                f"{result['peak_rss_mib']} MiB |"
            )


if __name__ == "__main__":
    main()
