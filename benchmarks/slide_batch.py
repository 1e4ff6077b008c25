"""A tray of small slides through one ``oncoscope slide`` run, beside the bare model (issue 18).

Run by hand, never in the test suite:

    .venv/bin/python benchmarks/slide_batch.py [--slides 100] [--workers 0 2]
        [--parts stream,inline,compiled,loop,command,command-devices,memory]
        [--memory-slides 1 10 100] [--workdir DIR] [--seconds 8]

On SYNTHETIC slides (never patient data): ``--distinct`` small slides of 2220 x 2967 px at
0.5 um/px (the size of ``slide_throughput.py``'s small slide: 60-70 tissue tiles of 224 px at
stride 1), copied to ``--slides`` files; the resnet18 checkpoint of ``slide_throughput.py``
(random weights, 2 classes, 224 px). Options as ``slide_throughput.py``: 0.5 um/px, stride 1,
batch 16, ``--precision auto``. Measures, each run between two bare forwards at the same
precision (the ratio is to the faster of the two):

- ``stream``: ``infer_slides`` over all slides in this process (loading the checkpoint
  included): tiles over the run's wall seconds;
- ``compiled``: the same with ``compile=True`` (``--compile``), compilation included; inductor's
  cache is in the work folder, so the first such run of a fresh ``--workdir`` compiles from
  scratch and later ones find the graph cached (not in the default parts);
- ``inline``: ``stream`` with each slide's outputs written in line, after its last batch, instead
  of in the finisher thread while the next slide runs (how the stream ran before; not in the
  default parts);
- ``loop``: the same slides one ``infer_slide`` call each (a DataLoader, a planning step and a
  default agreement check per slide: how a run went before slides were streamed);
- ``command``: the whole ``python -m oncoscope slide FOLDER`` command (start-up included);
- ``command-devices``: the same through Lightning's path (``--devices 1 --accelerator cpu``;
  not in the default parts);
- ``memory``: peak resident memory (VmHWM) of a fresh process classifying 1 slide and all of
  them (0 workers; ``--memory-slides`` lists other counts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from slide_throughput import SMALL_WH, bare_forward, make_checkpoint


def make_tray(folder: Path, slides: int, distinct: int) -> Path:
    """``slides`` small synthetic slides in ``folder/tray`` (``distinct`` different ones,
    copied round-robin)."""
    from oncoscope.pathology.synthetic import default_regions, write_synthetic_slide

    tray = folder / "tray"
    if tray.is_dir() and len(list(tray.glob("*.tif"))) == slides:
        return tray
    shutil.rmtree(tray, ignore_errors=True)
    tray.mkdir(parents=True)
    originals = []
    for i in range(distinct):
        path = folder / f"original{i}.tif"
        if not path.exists():
            regions = default_regions(SMALL_WH)
            write_synthetic_slide(path, SMALL_WH, mpp=0.5, regions=regions, quality=80 + i)
        originals.append(path)
    for i in range(slides):
        shutil.copyfile(originals[i % distinct], tray / f"biopsy{i:03d}.tif")
    return tray


def _options(workers: int, **more: Any) -> Any:
    from oncoscope.inference.slide_inference import SlideOptions

    return SlideOptions(
        mpp=0.5, stride=1.0, batch_size=16, workers=workers, precision="auto", overwrite=True,
        **more,
    )  # fmt: skip


def run_stream(
    checkpoint: Path,
    tray: Path,
    out: Path,
    workers: int,
    limit: int | None = None,
    compile: bool = False,
    inline_finish: bool = False,
) -> dict[str, Any]:
    from oncoscope.inference.slide_inference import infer_slides
    from oncoscope.inference.tile_stream import StreamRun

    slides = sorted(tray.glob("*.tif"))[:limit]
    StreamRun.finish_in_thread = not inline_finish
    try:
        start = time.perf_counter()
        report = infer_slides(checkpoint, slides, out, _options(workers, compile=compile))
        seconds = time.perf_counter() - start
    finally:
        StreamRun.finish_in_thread = True
    assert not report.failures, report.failures
    pooled = report.agreement()
    return {
        "slides": len(report.summaries),
        "tiles": report.tiles,
        "seconds": seconds,
        "tiles_per_second": report.tiles / seconds,
        "precision": report.summaries[0]["precision"],
        "agreement_tiles": pooled["tiles"] if pooled else 0,
        "slide_seconds_sum": sum(s["seconds"] for s in report.summaries),
    }


def run_loop(checkpoint: Path, tray: Path, out: Path, workers: int) -> dict[str, Any]:
    from oncoscope.inference.slide_inference import infer_slide, load_classifier

    start = time.perf_counter()
    classifier = load_classifier(checkpoint, torch.device("cpu"))
    tiles = checked = 0
    for slide in sorted(tray.glob("*.tif")):
        summary = infer_slide(classifier, slide, out, _options(workers)).summary
        assert summary is not None
        tiles += summary["tiles"]
        checked += summary.get("precision_agreement", {}).get("tiles", 0)
    seconds = time.perf_counter() - start
    return {
        "tiles": tiles,
        "seconds": seconds,
        "tiles_per_second": tiles / seconds,
        "agreement_tiles": checked,
    }


def run_command(
    checkpoint: Path, tray: Path, out: Path, workers: int, more: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The whole ``python -m oncoscope slide`` command over the tray (``more``: its further
    options), with the slides' own ``seconds`` summed beside its wall time."""
    command = [
        sys.executable, "-m", "oncoscope", "slide", str(checkpoint), str(tray), "--out", str(out),
        "--mpp", "0.5", "--stride", "1", "--batch-size", "16", "--workers", str(workers),
        "--overwrite", *more,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    summaries = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    tiles = sum(s["tiles"] for s in summaries)
    return {
        "tiles": tiles,
        "seconds": seconds,
        "tiles_per_second": tiles / seconds,
        "slide_seconds_sum": sum(s["seconds"] for s in summaries),
    }


_MEMORY_CHILD = """
import sys, resource
from pathlib import Path
from oncoscope.inference.slide_inference import SlideOptions, infer_slides
paths = sorted(Path(sys.argv[2]).glob('*.tif'))[: int(sys.argv[4])]
options = SlideOptions(mpp=0.5, stride=1.0, batch_size=16, precision='auto', overwrite=True)
report = infer_slides(sys.argv[1], paths, sys.argv[3], options)
assert not report.failures
status = Path('/proc/self/status').read_text().split('\\n')
print(next(line for line in status if line.startswith('VmHWM')).split()[1], report.tiles)
"""


def peak_memory(checkpoint: Path, tray: Path, out: Path, slides: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(checkpoint), str(tray), str(out), str(slides)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    kib, tiles = done.stdout.split()
    return {"slides": slides, "tiles": int(tiles), "peak_rss_mib": int(kib) / 1024}


def beside_bare(
    checkpoint: Path, precision: str, seconds: float, measure: Any
) -> tuple[dict[str, Any], float]:
    """``measure()`` between two bare forwards; its result and the faster bare figure."""
    before = bare_forward(checkpoint, precision, seconds)
    result = measure()
    after = bare_forward(checkpoint, precision, seconds)
    return result, max(before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--distinct", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--parts", default="stream,loop,command,memory")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each part, alternating")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--memory-slides", type=int, nargs="+", default=None,
        help="slides of each memory run (default: 1 and --slides)",
    )  # fmt: skip
    args = parser.parse_args()
    from oncoscope.hardware import resolve_precision

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="slide-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / "resnet18.ckpt"
    if not checkpoint.exists():
        make_checkpoint(checkpoint)
    tray = make_tray(workdir, args.slides, args.distinct)
    precision = resolve_precision("auto", torch.device("cpu"))
    parts = set(args.parts.split(","))
    machine = platform.processor() or platform.machine()
    print(
        f"# {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"precision {precision}, {args.slides} slides"
    )
    # warm-up, not measured: the first run in a process paid 20-50% more on this VM (imports,
    # thread pools, page cache), whichever runner came first
    run_stream(checkpoint, tray, workdir / "out-warmup", 0, limit=3)
    # inductor's on-disk cache in the work folder: the first compiled run of a fresh
    # --workdir compiles from scratch, later ones find the graph cached (as a second nightly
    # run on the same machine would)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(workdir / "inductor-cache"))
    runners = {
        "stream": run_stream,
        "compiled": lambda c, t, o, w: run_stream(c, t, o, w, compile=True),
        "inline": lambda c, t, o, w: run_stream(c, t, o, w, inline_finish=True),
        "loop": run_loop,
        "command": run_command,
        # Lightning's path, as `--devices 1 --accelerator cpu` asks for it (one process)
        "command-devices": lambda c, t, o, w: run_command(
            c, t, o, w, ("--devices", "1", "--accelerator", "cpu")
        ),
    }
    for workers in [w for w in args.workers for _ in range(args.repeats)]:
        for name, runner in runners.items():
            if name not in parts:
                continue
            out = workdir / f"out-{name}-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            result, bare = beside_bare(
                checkpoint, precision, args.seconds,
                lambda r=runner, o=out, w=workers: r(checkpoint, tray, o, w),
            )  # fmt: skip
            share = result["tiles_per_second"] / bare
            print(json.dumps({"part": name, "workers": workers, **result, "bare": bare,
                              "share_of_bare": share}))  # fmt: skip
    if "memory" in parts:
        for slides in args.memory_slides or (1, args.slides):
            out = workdir / f"out-memory-{slides}"
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps({"part": "memory", **peak_memory(checkpoint, tray, out, slides)}))


if __name__ == "__main__":
    main()
