"""Weak localisation on twin phantoms over training seeds and precisions (run by hand).

Each run writes the 15-pair twin cohort of ``oncoscope.ct.twins`` for its seed, trains with
``oncoscope.train.train`` on image labels only (20 epochs, cosine schedule, balanced
sampling, one thread) and scores the map on the held-out pairs with
``score_localization`` (threshold chosen on the val pairs). One JSON line per run, then a
table with the range over runs.

    .venv/bin/python benchmarks/phantom_localization.py --preset cnn-avg-cam \
        --seeds 0 1 2 --precisions 32 bf16

Presets:
    ``cnn-avg-cam``: ``simple_cnn`` (16, 32, 64 kernels, three 3x3 conv + 2x2 pool blocks,
    receptive field 22 px at stride 8, no dropout) with ``global_pool="avg"``; plain CAM, which
    is exactly the class scores the classifier averaged.
    ``cnn-max-cam``: the same with ``global_pool="max"`` (and the default dropout 0.5).
    ``resnet-max-gradcam``: timm ``test_resnet`` with ``global_pool="max"`` and
    ``output_stride=8``; Grad-CAM at the stride-8 stage (``layer2``). Its dilated deeper stages
    see the whole 96 px image, so where the map peaks depends on the training trajectory.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from oncoscope.ct.twins import write_twin_cohort
from oncoscope.doctor import cpu_has_native_bf16
from oncoscope.explain.localization_report import score_localization
from oncoscope.train.config import TrainConfig
from oncoscope.train.run import train

PRESETS: dict[str, dict[str, Any]] = {
    "cnn-avg-cam": {
        "model": "simple_cnn",
        "model_kwargs": {
            "channels": [16, 32, 64],
            "global_pool": "avg",
            "hidden": [],
            "dropout": 0.0,
        },
        "method": "cam",
        "stage": -1,
    },
    "cnn-max-cam": {
        "model": "simple_cnn",
        "model_kwargs": {"channels": [16, 32, 64], "global_pool": "max", "hidden": []},
        "method": "cam",
        "stage": -1,
    },
    "resnet-max-gradcam": {
        "model": "test_resnet",
        "model_kwargs": {"global_pool": "max", "output_stride": 8},
        "method": "gradcam",
        "stage": -3,
    },
}


def run_once(preset: str, seed: int, precision: str, folder: Path) -> dict[str, Any]:
    """Train and score one (preset, seed, precision); the metrics of ``score_localization``."""
    settings = PRESETS[preset]
    manifest = write_twin_cohort(folder, seed=seed)
    started = time.perf_counter()
    config = TrainConfig.model_validate(
        {
            "data": manifest,
            "out": folder / "run",
            "model": settings["model"],
            "model_kwargs": settings["model_kwargs"],
            "epochs": 20,
            "batch_size": 16,
            "lr": 1e-3,
            "scheduler": "cosine",
            "num_workers": 0,
            "augment": "none",
            "balanced_sampling": True,
            "seed": seed,
            "precision": precision,
        }
    )
    run = train(config, progress_bar=False)
    result = score_localization(
        run.best_checkpoint,
        manifest,
        "test",
        method=settings["method"],
        stage=settings["stage"],
        out_dir=folder / "localization",
    )
    metrics = {k: round(float(v), 3) for k, v in result["metrics"].items()}
    return {
        "preset": preset,
        "seed": seed,
        "precision": precision,
        **metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cnn-avg-cam")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # two shared cores: one thread is several times faster
    print(machine_line())
    rows = []
    for seed in args.seeds:
        for precision in args.precisions:
            with tempfile.TemporaryDirectory() as folder:
                row = run_once(args.preset, seed, precision, Path(folder))
            print(json.dumps(row), flush=True)
            rows.append(row)
    keys = ("pointing_game", "pointing_game_random_liver", "pxap", "dice", "lesion_hit_rate")
    print_ranges(args.preset, rows, keys, args.precisions, args.seeds)


def machine_line() -> str:
    """``# CPU model; native bf16: ...; torch version`` for the head of a result."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"# {model}; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}"


def print_ranges(
    title: str,
    rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    precisions: list[str],
    seeds: list[int],
) -> None:
    """A Markdown table: one row per precision, the range over runs of each of ``keys``."""
    print(f"\n| {title} | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for precision in precisions:
        chosen = [r for r in rows if r["precision"] == precision]
        cells = [f"{min(r[k] for r in chosen):.2f}-{max(r[k] for r in chosen):.2f}" for k in keys]
        print(f"| {precision}, seeds {seeds} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
