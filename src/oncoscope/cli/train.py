"""``oncoscope train``, ``oncoscope models`` and ``oncoscope manifest``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from oncoscope.cli._common import check_out_dir, console, quiet_lightning, user_errors
from oncoscope.cli.options import (
    INPUT,
    MODEL,
    TRAINING,
    OverwriteRun,
    Resume,
    batch_size_option,
    epochs_option,
    learning_rate_option,
    num_nodes_option,
    out_option,
    precision_option,
    seed_option,
    strategy_option,
    train_devices_option,
    training_seed_option,
    workers_option,
)

#: ``--sampling`` as the config's ``balanced_sampling``.
_SAMPLING: dict[str, bool | str] = {"shuffle": False, "balanced": True}


def train(
    data: Annotated[
        Path | None, typer.Option(help="manifest.csv to train on.", rich_help_panel=INPUT)
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="quick, ct-cam, seed000, seed000-cam, seed001, seed004.", rich_help_panel=INPUT
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of training options.", rich_help_panel=INPUT)
    ] = None,
    check_images: Annotated[
        bool,
        typer.Option(
            help="Decode every image before training, not only a sample.", rich_help_panel=INPUT
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(help="Model name, or several comma-separated.", rich_help_panel=MODEL),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(min=8, help="Resize images to this side (px).", rich_help_panel=MODEL),
    ] = None,
    pretrained: Annotated[
        bool | None,
        typer.Option(
            "--pretrained/--scratch", help="Start from pretrained weights.", rich_help_panel=MODEL
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="Local weights file (implies --pretrained).", rich_help_panel=MODEL),
    ] = None,
    precision: Annotated[str | None, precision_option(" (32 and 16: earlier spellings)")] = None,
    epochs: Annotated[int | None, epochs_option()] = None,
    batch_size: Annotated[int | None, batch_size_option(panel=TRAINING)] = None,
    lr: Annotated[float | None, learning_rate_option()] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(help="adam, adamw, rmsprop or sgd.", rich_help_panel=TRAINING),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="none, step or cosine.", rich_help_panel=TRAINING)
    ] = None,
    stain_augment: Annotated[
        float | None,
        typer.Option(
            help="H&E stain jitter of histology tiles (0: off).", rich_help_panel=TRAINING
        ),
    ] = None,
    sampling: Annotated[
        str | None,
        typer.Option(
            help="shuffle, balanced (classes evenly) or liver-level (CT: classes evenly and "
            "healthy slices at the tumours' liver levels).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    seed: Annotated[int | None, training_seed_option()] = None,
    workers: Annotated[int | None, workers_option(panel=TRAINING)] = None,
    devices: Annotated[str | None, train_devices_option()] = None,
    strategy: Annotated[str | None, strategy_option()] = None,
    num_nodes: Annotated[int | None, num_nodes_option()] = None,
    out: Annotated[Path | None, out_option("Run directory (one per model with several).")] = None,
    resume: Resume = False,
    overwrite: OverwriteRun = False,
) -> None:
    """Train a classifier on a manifest; the best checkpoint is RUN/checkpoints/best.ckpt."""
    from oncoscope.errors import InvalidOptionError
    from oncoscope.models import check_model_name
    from oncoscope.train.config import resolve_config
    from oncoscope.train.run import check_pretrained_weights, check_run_folder
    from oncoscope.train.run import train as run_training
    from oncoscope.train.scaffold import owns_run_folder

    quiet_lightning()
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
        "balanced_sampling": _SAMPLING.get(sampling, sampling) if sampling else None,
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
        if sampling is not None and sampling not in (*_SAMPLING, "liver-level"):
            raise InvalidOptionError(
                f"--sampling must be shuffle, balanced or liver-level, got {sampling!r}"
            )
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
        for resolved in configs:  # then every model's weights, fetched now if need be
            check_pretrained_weights(resolved)
        for name, resolved, replaces in zip(names, configs, replacing, strict=True):
            if replaces:
                console.print(f"replacing the run in {resolved.out} (--overwrite)")
            result = run_training(
                resolved, resume=resume, overwrite=overwrite, check_images=check_images
            )
            if not owns_run_folder():  # a further process of a run in several: rank 0 speaks
                continue
            loss = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
            left = result.left_chance_at_epoch
            grown = "" if left is None else f" (left chance in epoch {left})"
            console.print(
                f"{name}: {result.epochs_run} epochs{grown} in {result.seconds:.0f} s from "
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
    longest = max(len(name) for name in MODELS)
    table.add_column(
        "name", min_width=longest, no_wrap=True
    )  # a name is what users type: never cut
    for column in ("parameters", "seed", "what"):
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
    seed: Annotated[int, seed_option("the group split")] = 0,
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
