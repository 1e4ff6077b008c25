"""Weak localisation of the demo's CT model over training seeds and precisions (run by hand).

Each seed writes the demo's phantom cohort (16 patients of 40 x 256 x 256 voxels, 4 without
lesions, ``ct prepare`` with the liver window and 10 healthy slices per patient, as
``oncoscope demo`` makes it), trains the ``ct-cam`` recipe on image labels only, predicts the
test split (accuracy, AUROC) and scores the plain CAM on the test patients' tumour slices with
``score_localization`` (threshold chosen on the val split): pointing game beside a random
point in the liver, PxAP, Dice, lesion hit rate by size. One JSON line per run, then a table
with the range over runs.

    .venv/bin/python benchmarks/demo_ct_localization.py --seeds 0 1 2 --precisions fp32

``--method smoothgrad`` scores SmoothGrad maps instead of the plain CAM (the demo's map).
``--recipe seed000 --model sa_efficientnet_lite0`` trains another recipe and model the same way
(the seed-000 recipe's own model is the paper-size SA-EfficientNet-B4, too slow for 2 cores).
``--model-kwargs '{"pool": "avg"}'`` replaces the recipe's model keywords (the heads that
failed: benchmarks/README.md); ``--chain em`` prepares the cohort with seed 001's chain
(``ct prepare --denoise median:3 --roi em``: every slice black outside its EM liver ROI);
``--work DIR`` keeps the cohorts (one per seed, reused) and runs; ``--config FILE`` adds
training options over the recipe as ``train --config`` does (``freeze_epochs: 1``);
``--patients 40 --cohort-seed 0`` trains every seed on one 40-patient cohort (6 test patients
with lesions instead of 2; ``cohort-0-p40/`` under ``--work``).
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
from phantom_localization import machine_line, print_ranges  # beside this script
from sklearn.metrics import roc_auc_score

from oncoscope.ct.chain import SliceChain
from oncoscope.ct.phantom import write_cohort
from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
from oncoscope.ct.window import PRESETS
from oncoscope.explain.localization_report import score_localization
from oncoscope.train.config import resolve_config
from oncoscope.train.predict import predict_split
from oncoscope.train.run import train

KEYS = ("auroc", "accuracy", "pointing_game", "pointing_game_random_liver", "pxap", "dice")


def cohort(folder: Path, seed: int, chain: SliceChain | None = None, patients: int = 16) -> Path:
    """The demo's CT cohort for ``seed`` under ``folder`` (made once); its manifest.

    ``chain``: seed 001's chain applied by ``ct prepare`` (its slices go to ``ct-chain/``).
    ``patients``: the demo's 16, a quarter of them lesion-free; more for a larger test split.
    """
    manifest = folder / ("ct" if chain is None else "ct-chain") / "manifest.csv"
    if not manifest.is_file():
        if not (folder / "phantoms").is_dir():
            write_cohort(
                folder / "phantoms",
                patients,
                shape=(40, 256, 256),
                lesion_free=patients // 4,
                seed=seed,
            )
        options = PrepareOptions(
            windows=(PRESETS["liver"],),
            healthy_per_patient=10,
            seed=seed,
            chain=chain or SliceChain(),
        )
        prepare_dataset(folder / "phantoms", manifest.parent, options, workers=1)
    return manifest


def run_once(
    manifest: Path,
    seed: int,
    precision: str,
    kwargs: dict[str, Any] | None,
    out: Path,
    method: str = "cam",
    recipe: str = "ct-cam",
    model: str | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` (its model, or its model keywords, replaced; ``config_file``'s options
    over it, as ``train --config`` reads them) and score it."""
    started = time.perf_counter()
    overrides: dict[str, Any] = {
        "data": manifest,
        "out": out / "run",
        "seed": seed,
        "num_workers": 0,
        "precision": precision,
    }
    if kwargs is not None:
        overrides["model_kwargs"] = kwargs
    if model is not None:
        overrides["model"] = model
    config = resolve_config(recipe=recipe, config_file=config_file, overrides=overrides)
    run = train(config, progress_bar=False)
    result = score_localization(
        run.best_checkpoint, manifest, "test", method=method, out_dir=out / "localization"
    )
    frame = predict_split(run.best_checkpoint, manifest, "test")
    metrics = {k: round(float(v), 3) for k, v in result["metrics"].items()}
    estimates = result["intervals"]["estimates"]
    intervals = {  # 95%, resampling the test patients
        f"{name}_ci": [
            round(float(estimates[name][end] or 0.0), 3) for end in ("ci_low", "ci_high")
        ]
        for name in ("pointing_game", "pxap", "lesion_hit_rate")
    }
    hits = {row["size_bin"]: f"{row['hits']}/{row['lesions']}" for row in result["by_size"]}
    return {
        "seed": seed,
        "precision": precision,
        "recipe": recipe,
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "freeze_epochs": config.freeze_epochs,
        "method": method,
        "auroc": round(float(roc_auc_score(frame["label"] == "tumour", frame["prob_tumour"])), 3),
        "accuracy": round(float((frame["pred"] == frame["label"]).mean()), 3),
        **metrics,
        "hits_by_size": hits,
        **intervals,
        "patients": result["intervals"]["patients"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--model-kwargs", type=json.loads, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--patients", type=int, default=16, help="phantoms per cohort (the demo's 16)"
    )
    parser.add_argument(
        "--cohort-seed", type=int, default=None, help="one cohort for every seed (default: its own)"
    )
    parser.add_argument("--method", default="cam", help="map scored (explain's methods)")
    parser.add_argument("--recipe", default="ct-cam", help="training recipe (train --recipe)")
    parser.add_argument("--model", default=None, help="replaces the recipe's model")
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML of training options (train --config)"
    )
    parser.add_argument(
        "--chain", choices=["none", "em"], default="none", help="em: ct prepare's seed-001 chain"
    )
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # two shared cores: one thread is several times faster
    print(machine_line())
    work = args.work or Path(tempfile.mkdtemp(prefix="demo-ct-loc-"))
    rows = []
    for seed in args.seeds:
        chain = SliceChain(median_size_px=3, roi="em") if args.chain == "em" else None
        drawn = seed if args.cohort_seed is None else args.cohort_seed
        name = f"cohort-{drawn}" if args.patients == 16 else f"cohort-{drawn}-p{args.patients}"
        manifest = cohort(work / name, drawn, chain, args.patients)
        for precision in args.precisions:
            out = Path(tempfile.mkdtemp(prefix=f"run-{seed}-{precision}-", dir=work))
            row = run_once(
                manifest,
                seed,
                precision,
                args.model_kwargs,
                out,
                args.method,
                recipe=args.recipe,
                model=args.model,
                config_file=args.config,
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_ranges(args.recipe, rows, KEYS, args.precisions, args.seeds)


if __name__ == "__main__":
    main()
