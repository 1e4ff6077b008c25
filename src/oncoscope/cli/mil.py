"""``oncoscope mil ...``: attention MIL on slide or patient labels over tile feature bags."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import (
    console,
    exit_on_failures,
    finite_number,
    positive_number,
    user_errors,
)

mil_app = typer.Typer(
    help="Attention MIL on slide/patient labels over feature bags (oncoscope features).",
    no_args_is_help=True,
)


@mil_app.command("train")
def mil_train(
    bags: Annotated[Path, typer.Option(help="Folder of feature bags <slide stem>.h5.")],
    labels: Annotated[
        Path, typer.Option(help="slides.csv: slide, label, split (train/val/test), [patient].")
    ],
    out: Annotated[Path, typer.Option(help="Run directory.")],
    model: Annotated[str, typer.Option(help="abmil (gated attention) or clam_sb.")] = "abmil",
    bag_level: Annotated[
        str, typer.Option(help="slide: a bag per slide; patient: a patient's slides joined.")
    ] = "slide",
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    lr: Annotated[float, typer.Option(callback=positive_number, help="Learning rate.")] = 2e-4,
    weight_decay: Annotated[float, typer.Option(min=0.0, callback=finite_number)] = 1e-5,
    max_tiles: Annotated[
        int | None, typer.Option(min=1, help="Tiles sampled per bag and step, training only.")
    ] = None,
    class_weights: Annotated[
        bool, typer.Option(help="Weight the loss by inverse class frequency.")
    ] = True,
    hidden: Annotated[int, typer.Option(min=1, help="Tile embedding size.")] = 256,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.99, callback=finite_number)] = 0.25,
    k_sample: Annotated[
        int, typer.Option(min=1, help="clam_sb: tiles at each end of the attention ranking.")
    ] = 8,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    devices: Annotated[str, typer.Option(help="Lightning devices, e.g. auto, 1, 4.")] = "auto",
    strategy: Annotated[str, typer.Option(help="Lightning strategy, e.g. ddp.")] = "auto",
    num_nodes: Annotated[int, typer.Option(min=1)] = 1,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from RUN/checkpoints/last.ckpt.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in RUN (a new run needs it empty).")
    ] = False,
) -> None:
    """Train attention MIL on slide labels; the best checkpoint is RUN/checkpoints/best.ckpt."""
    from oncoscope.mil.train import mil_config, train_mil

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own deprecation
    with user_errors(out=out):
        config = mil_config(
            bags=bags,
            labels=labels,
            out=out,
            model=model,
            bag_level=bag_level,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            max_tiles=max_tiles,
            class_weights=class_weights,
            hidden=hidden,
            dropout=dropout,
            k_sample=k_sample,
            precision=precision,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            num_workers=workers,
            seed=seed,
        )
        result = train_mil(config, resume=resume, overwrite=overwrite)
    loss = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
    console.print(
        f"{model}: {result.epochs_run} epochs in {result.seconds:.0f} s ({result.precision}); "
        f"best val loss {loss}; best checkpoint {result.best_checkpoint}"
    )


@mil_app.command("predict")
def mil_predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A MIL checkpoint (RUN/checkpoints/best.ckpt).")
    ],
    bags: Annotated[Path, typer.Option(help="Folder of feature bags <slide stem>.h5.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    labels: Annotated[
        Path | None,
        typer.Option(help="slides.csv: predict only its slides (needed for patient bags)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Tiles in the gallery and GeoJSON.")] = 16,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier mil predict in --out.")
    ] = False,
) -> None:
    """predictions.csv, and per slide attention.npy, heatmaps, top tiles and GeoJSON."""
    from oncoscope.mil.predict import predict_bags

    with user_errors(out=out):
        result = predict_bags(
            checkpoint, bags, out, labels=labels, top_k=top_k, overwrite=overwrite
        )
    console.print(f"predictions: {result.predictions_csv}")
    console.print(f"attention:   {len(result.slide_folders)} slide folder(s) in {result.out}")
    for note in result.notes[:5]:
        console.print(f"note: {note}")
    if len(result.notes) > 5:
        console.print(f"note: {len(result.notes) - 5} more in {result.out / 'predict.json'}")
    exit_on_failures(result.failures, "bag(s)")
