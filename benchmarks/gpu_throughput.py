"""Tiles per second of ``oncoscope slide`` on one GPU, beside the bare model: the GPU path.

Prepared to run in one go on a lent GPU machine (never in the test suite); on a CPU it runs
as a dry run of the same steps (``--device cpu --quick``):

    .venv/bin/python benchmarks/gpu_throughput.py [--device cuda] [--models resnet18,vit]
        [--workers 4 8] [--batch-size 64] [--seconds 10] [--workdir DIR] [--quick]

On a SYNTHETIC JPEG-tiled pyramidal TIFF (never patient data; 24 000^2 px at 0.25 um/px,
read at 0.5 um/px, stride 0.5; ``--quick``: 4 000^2, stride 1), for resnet18 and a ViT-B/16
(timm ``vit_base_patch16_224``), random weights, 2 classes, 224 px, in oncoscope's checkpoint
format. Measures, printed as JSON lines:

- ``bare``: the model's forward alone on random normalised batches on the device, at fp32
  and at the precision ``--precision auto`` resolves to there (bf16 on a GPU that has it);
- ``slide``: ``infer_slide`` end to end (the slide opened, tissue, tiles, map, outputs) at
  ``auto`` precision with the fp32 agreement check, for ``--decode cpu`` (readers decode) and
  ``--decode device`` (nvJPEG) with each ``--workers``, and with ``--compile`` for the best
  of them; each with its ``phase_seconds``, its tiles per second over the tiles phase and
  over the whole slide, and both as a share of the bare forward measured just before;
- ``agreement``: the argmax agreement of the reduced precision with fp32 that the run
  reports, and how far device-decoded probabilities are from reader-decoded ones (nvJPEG and
  libjpeg-turbo may differ by a level or two in a few pixels).

TIAToolbox beside it needs TIAToolbox installed on the GPU machine (``tiatoolbox_anchor.py``
with ``--device``); the machines lent here reach no package index, so it is not run here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from slide_throughput import make_checkpoint

MODELS = {"resnet18": "resnet18", "vit": "vit_base_patch16_224"}


def bare(
    checkpoint: Path, device: torch.device, precision: str, batch: int, seconds: float
) -> float:
    """Tiles/s of the model's forward alone, as ``oncoscope slide`` loads it."""
    from oncoscope.inference.predict_tiles import forward_probabilities
    from oncoscope.inference.slide_inference import load_classifier

    model = load_classifier(checkpoint, device).model
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            forward_probabilities(model, x, precision)
        _sync(device)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 4 * batch:
            forward_probabilities(model, x, precision).cpu()  # as the runner copies them back
            done += batch
        _sync(device)
    return done / (time.perf_counter() - start)


def slide_run(
    checkpoint: Path, slide: Path, out: Path, device: torch.device, **options: Any
) -> dict[str, Any]:
    """One ``infer_slide`` of the slide; its summary's timings and where it wrote."""
    from oncoscope.inference.slide_inference import SlideOptions, infer_slide, load_classifier

    classifier = load_classifier(checkpoint, device)
    chosen = SlideOptions(mpp=0.5, precision="auto", overwrite=True, **options)
    started = time.perf_counter()
    summary = infer_slide(classifier, slide, out, chosen).summary
    wall = time.perf_counter() - started
    assert summary is not None
    phases = summary["phase_seconds"]
    return {
        "tiles": summary["tiles"],
        "seconds": round(summary["seconds"], 2),
        "command_seconds": round(wall, 2),
        "tiles_per_second": round(summary["tiles_per_second"], 1),
        "tiles_phase_per_second": round(summary["tiles"] / phases["tiles"], 1),
        "precision": summary["precision"],
        "agreement": summary.get("precision_agreement"),
        "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="resnet18,vit")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a small slide: a dry run")
    args = parser.parse_args()

    from oncoscope.hardware import cpu_model, resolve_precision
    from oncoscope.pathology.synthetic import write_synthetic_slide

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    auto = resolve_precision("auto", device)
    print(f"# {name}; torch {torch.__version__}; auto precision {auto}", flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="oncoscope-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    side, stride = (4000, 1.0) if args.quick else (24000, 0.5)
    started = time.perf_counter()
    slide = write_synthetic_slide(work / "large.tif", (side, side), quality=85).path
    print(json.dumps({"slide": str(slide), "side_px": side, "written_seconds": round(
        time.perf_counter() - started, 1)}), flush=True)  # fmt: skip
    seconds = 2.0 if args.quick else args.seconds
    for key in args.models.split(","):
        path = work / f"{key}.pt"
        checkpoint = make_checkpoint(path, MODELS[key])
        rates = {p: bare(checkpoint, device, p, args.batch_size, seconds) for p in ("fp32", auto)}
        bare_row = {f"{p}_tiles_per_second": round(r, 1) for p, r in rates.items()}
        print(json.dumps({"model": MODELS[key], "part": "bare", **bare_row}), flush=True)
        probabilities: dict[str, np.ndarray] = {}
        runs = [
            (decode, workers, False) for decode in ("cpu", "device") for workers in args.workers
        ]
        runs.append(("device", max(args.workers), True))
        for decode, workers, compiled in runs:
            out = work / f"out-{key}-{decode}-{workers}-{int(compiled)}"
            record = slide_run(
                checkpoint, slide, out, device, stride=stride, batch_size=args.batch_size,
                workers=workers, decode=decode, compile=compiled,
            )  # fmt: skip
            maps = np.load(out / slide.stem / "probabilities.npy")
            probabilities.setdefault(decode, maps)
            record.update(
                model=MODELS[key], part="slide", decode=decode, workers=workers,
                compile=compiled,
                share_of_bare=round(record["tiles_per_second"] / rates[auto], 3),
                tiles_phase_share_of_bare=round(record["tiles_phase_per_second"] / rates[auto], 3),
            )  # fmt: skip
            print(json.dumps(record), flush=True)
            shutil.rmtree(out, ignore_errors=True)
        difference = np.abs(probabilities["device"] - probabilities["cpu"])
        agreement = {
            "model": MODELS[key],
            "part": "agreement",
            "device_vs_reader_decode_max_abs": float(np.nanmax(difference)),
            "device_vs_reader_decode_mean_abs": float(np.nanmean(difference)),
        }
        print(json.dumps(agreement), flush=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
