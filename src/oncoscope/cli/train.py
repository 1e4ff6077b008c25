"""``oncoscope train``, ``oncoscope models`` and ``oncoscope manifest``."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from oncoscope.cli._common import check_out_dir, console, positive_number, user_errors


def train(
    data: Annotated[Path | None, typer.Option(help="manifest.csv to train on.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (one per model with several).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name, or several comma-separated.")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Named recipe: quick, ct-cam, seed000, seed001, seed004.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of training options.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    image_size: Annotated[
        int | None, typer.Option(min=8, help="Resize images to this side (px).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(callback=positive_number, help="Learning rate.")
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, adamw, rmsprop or sgd.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="none, step or cosine.")] = None,
    stain_augment: Annotated[
        float | None, typer.Option(help="H&E stain jitter of histology tiles (0: off).")
    ] = None,
    pretrained: Annotated[
        bool | None, typer.Option("--pretrained/--scratch", help="Start from pretrained weights.")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Local weights file (implies --pretrained).")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32, bf16 or fp16 (32 and 16: earlier spellings).")
    ] = None,
    devices: Annotated[str | None, typer.Option(help="Lightning devices, e.g. auto, 1, 4.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy, e.g. ddp.")] = None,
    num_nodes: Annotated[int | None, typer.Option(min=1)] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Data loader processes.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN/checkpoints/last.ckpt.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in RUN (a new run needs it empty).")
    ] = False,
    check_images: Annotated[
        bool, typer.Option(help="Decode every image before training, not only a sample.")
    ] = False,
) -> None:
    """Train a classifier on a manifest; the best checkpoint is RUN/checkpoints/best.ckpt."""
    from oncoscope.errors import InvalidOptionError
    from oncoscope.models import check_model_name
    from oncoscope.train.config import resolve_config
    from oncoscope.train.run import check_run_folder
    from oncoscope.train.run import train as run_training

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation
    flags: dict[str, Any] = {
        "data": data,
        "out": out,
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": image_size,
        "lr": lr,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "stain_augment": stain_augment,
        "pretrained": pretrained,
        "weights": weights,
        "precision": precision,
        "devices": devices,
        "strategy": strategy,
        "num_nodes": num_nodes,
        "num_workers": workers,
        "seed": seed,
    }
    with user_errors():
        first = resolve_config(
            recipe=recipe, config_file=config, overrides={**flags, "model": model}
        )
        check_out_dir(first.out)
        names = [n.strip() for n in first.model.split(",") if n.strip()]
        if len(set(names)) != len(names):
            raise InvalidOptionError(f"a model is named twice in --model {first.model}")
        configs = []
        replacing = []
        for name in names:  # every name, option and run folder is checked before any training
            check_model_name(name)
            run_out = first.out / name if len(names) > 1 else first.out
            configs.append(
                resolve_config(
                    recipe=recipe,
                    config_file=config,
                    overrides={**flags, "model": name, "out": run_out},
                )
            )
            replacing.append(bool(check_run_folder(run_out, resume=resume, overwrite=overwrite)))
        for name, resolved, replaces in zip(names, configs, replacing, strict=True):
            if replaces:
                console.print(f"replacing the run in {resolved.out} (--overwrite)")
            result = run_training(
                resolved, resume=resume, overwrite=overwrite, check_images=check_images
            )
            loss = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
            console.print(
                f"{name}: {result.epochs_run} epochs in {result.seconds:.0f} s from "
                f"{result.initial_weights} "
                f"({result.precision}); best val loss {loss}; best checkpoint "
                f"{result.best_checkpoint}"
            )


def models(
    num_classes: Annotated[
        int, typer.Option(min=1, help="Classifier outputs for the count.")
    ] = 1000,
) -> None:
    """The named models with their parameter counts (any other timm name also works)."""
    from oncoscope.models import MODELS
    from oncoscope.models.registry import listed_parameters

    table = Table(title="oncoscope models")
    for column in ("name", "parameters", "seed", "what"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for entry in MODELS.values():
        count = listed_parameters(entry.name, num_classes)
        table.add_row(entry.name, f"{count:,}", entry.seed, entry.description)
    console.print(table)


def manifest(
    folder: Annotated[
        Path, typer.Argument(help="FOLDER/CLASS/images or FOLDER/{train,val,test}/CLASS/images.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default FOLDER/manifest.csv).")
    ] = None,
    split: Annotated[str, typer.Option(help="Group shares train:val:test.")] = "3:1:1",
    seed: Annotated[int, typer.Option()] = 0,
    group_pattern: Annotated[
        str | None, typer.Option(help="Regex taking the patient/slide id from a file name.")
    ] = None,
) -> None:
    """Write a manifest.csv for an ImageFolder layout (class = sub-folder)."""
    from oncoscope.dataset.imagefolder import COLUMNS, imagefolder_rows
    from oncoscope.dataset.manifest import write_manifest
    from oncoscope.dataset.split import parse_ratio

    with user_errors():
        target = out or folder / "manifest.csv"
        rows = imagefolder_rows(
            folder, ratio=parse_ratio(split), seed=seed, group_pattern=group_pattern
        )
        base = folder.resolve()
        parent = target.resolve().parent
        for row in rows:
            row["path"] = Path(os.path.relpath(base / row["path"], parent)).as_posix()
        write_manifest(rows, target, COLUMNS)
    counts = {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val", "test")}
    console.print(f"wrote {len(rows)} rows to {target} ({counts})")


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(train)
    app.command()(models)
    app.command()(manifest)
