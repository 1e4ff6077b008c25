"""TIAToolbox 2.1.3 ``PatchPredictor`` throughput over one slide: the anchor for oncoscope's.

Runs ONLY under the separate TIAToolbox venv (``bash benchmarks/tiatoolbox_venv.sh`` builds it at
/work/tia-venv) and never imports oncoscope; ``benchmarks/slide_throughput.py`` calls it with that
venv's python. Prints one JSON line on stdout (logs go to stderr)::

    /work/tia-venv/bin/python benchmarks/tiatoolbox_anchor.py --slide S.tif --mpp 0.5 \\
        --patch 224 --stride 224 --batch 16 --workers 0 [--data-only | --bare] [--classes 2]

What runs, all TIAToolbox's own defaults unless named here:

- model: ``tiatoolbox.models.architecture.vanilla.CNNModel("resnet18", num_classes)``, the
  toolbox's wrapper of torchvision's resnet18 (random weights, no download; softmax head; its
  ``infer_batch`` casts the uint8 NHWC batch to fp32 NCHW under ``torch.inference_mode``); no
  ``torch.compile`` (the engine compiles only on a compatible NVIDIA GPU), CPU, fp32.
- ``PatchPredictor(model, batch_size, num_workers, device="cpu").run([slide], patch_mode=False,
  ioconfig=IOPatchPredictorConfig(input_resolutions=[{"units": "mpp", "resolution": MPP}],
  patch_input_shape=(P, P), stride_shape=(S, S)), save_dir=TMP, output_type="zarr")``;
  tissue mask: the engine's default ``auto_get_mask=True``, i.e. ``WSIReader.tissue_mask`` (Otsu)
  at 1.25x objective power (6 mpp when the slide has no power), any patch overlapping tissue kept
  (``min_mask_ratio=0``). ``seconds`` covers ``run()``: opening the slide, the tissue mask,
  reading, inference and writing the zarr output; not building the model.
- ``--data-only``: the same ``WSIPatchDataset``/DataLoader through the engine's own
  ``get_dataloader`` (same ioconfig, mask, workers and batch), every batch drawn, no model;
  ``seconds`` covers building the dataset (tissue mask included) and the iteration;
  ``setup_seconds`` is the dataset build alone.
- ``--bare``: the same model's forward on a random fp32 batch, patches/s over ``--repeats``
  batches after one warm-up, for the ratio end-to-end / bare.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _ioconfig(args: argparse.Namespace) -> Any:
    from tiatoolbox.models.engine.io_config import (  # type: ignore[import-not-found]
        IOPatchPredictorConfig,
    )

    return IOPatchPredictorConfig(
        input_resolutions=[{"units": "mpp", "resolution": args.mpp}],
        patch_input_shape=(args.patch, args.patch),
        stride_shape=(args.stride, args.stride),
    )


def _end_to_end(predictor: Any, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tia-anchor-") as tmp:
        start = time.perf_counter()
        predictor.run(
            [Path(args.slide)],
            patch_mode=False,
            ioconfig=_ioconfig(args),
            save_dir=Path(tmp) / "out",
            output_type="zarr",
            device="cpu",
        )
        seconds = time.perf_counter() - start
    return {"patches": len(predictor.dataloader.dataset), "seconds": seconds}


def _data_only(predictor: Any, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    loader = predictor.get_dataloader(
        images=Path(args.slide), patch_mode=False, ioconfig=_ioconfig(args), auto_get_mask=True
    )
    setup = time.perf_counter() - start
    patches = 0
    for batch in loader:
        patches += len(batch["image"])
    return {"patches": patches, "seconds": time.perf_counter() - start, "setup_seconds": setup}


def _bare(model: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    x = torch.rand(args.batch, 3, args.patch, args.patch) * 255
    model.eval()
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(x)
    return {"patches": args.repeats * args.batch, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slide", help="whole-slide image path (not needed with --bare)")
    parser.add_argument("--mpp", type=float, default=0.5, help="read resolution, microns/px")
    parser.add_argument("--patch", type=int, default=224, help="patch side, px at --mpp")
    parser.add_argument("--stride", type=int, default=224, help="stride, px at --mpp")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--classes", type=int, default=2)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--data-only", action="store_true", help="data path alone, no model")
    mode.add_argument("--bare", action="store_true", help="bare model forward, no slide read")
    parser.add_argument("--repeats", type=int, default=20, help="batches timed for --bare")
    args = parser.parse_args()
    if args.slide is None and not args.bare:
        parser.error("--slide is required unless --bare")

    # TIAToolbox sends INFO logs to stdout unless the root logger already has a handler; its
    # imports live here so that the main project's pytest (doctest collection) can import this file.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    import tiatoolbox  # type: ignore[import-not-found]
    from tiatoolbox.models.architecture.vanilla import (  # type: ignore[import-not-found]
        CNNModel,
    )
    from tiatoolbox.models.engine.patch_predictor import (  # type: ignore[import-not-found]
        PatchPredictor,
    )

    torch.manual_seed(0)
    model = CNNModel("resnet18", num_classes=args.classes)
    if args.bare:
        name, result = "bare_forward", _bare(model, args)
    else:
        predictor = PatchPredictor(
            model, batch_size=args.batch, num_workers=args.workers, device="cpu", verbose=False
        )
        if args.data_only:
            name, result = "data_only", _data_only(predictor, args)
        else:
            name, result = "end_to_end", _end_to_end(predictor, args)
    record = {
        "tool": "tiatoolbox",
        "version": tiatoolbox.__version__,
        "mode": name,
        "patches": result["patches"],
        "seconds": round(result["seconds"], 3),
        "patches_per_second": round(result["patches"] / result["seconds"], 2),
        "workers": args.workers,
        **{k: round(v, 3) for k, v in result.items() if k not in ("patches", "seconds")},
        "slide": args.slide,
        "mpp": args.mpp,
        "patch": args.patch,
        "stride": args.stride,
        "batch": args.batch,
        "model": "resnet18",
        "classes": args.classes,
        "precision": "fp32",
        "device": "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "tissue_mask": "tiatoolbox default: Otsu at 1.25x power, min_mask_ratio 0",
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
