"""``oncoscope mil ...``: attention MIL on slide or patient labels over tile feature bags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import console, exit_on_failures, quiet_lightning, user_errors
from oncoscope.cli.options import (
    INPUT,
    MODEL,
    TRAINING,
    NumNodes,
    OutDir,
    OverwriteRun,
    Precision,
    Resume,
    Strategy,
    TrainDevices,
    checkpoint_argument,
    epochs_option,
    finite_option,
    learning_rate_option,
    out_option,
    overwrite_option,
    training_seed_option,
    workers_option,
)

#: ``--bags``: the feature bags of ``oncoscope features``.
Bags = Annotated[
    Path,
    typer.Option(help="Folder of feature bags <slide stem>.h5.", rich_help_panel=INPUT),
]

mil_app = typer.Typer(
    help="Attention MIL on slide/patient labels over feature bags (oncoscope features).",
    no_args_is_help=True,
)


@mil_app.command("train")
def mil_train(
    *,
    bags: Bags,
    labels: Annotated[
        Path,
        typer.Option(
            help="slides.csv: slide, label, split (train/val/test), [patient].",
            rich_help_panel=INPUT,
        ),
    ],
    bag_level: Annotated[
        str,
        typer.Option(
            help="slide: a bag per slide; patient: a patient's slides joined.",
            rich_help_panel=INPUT,
        ),
    ] = "slide",
    model: Annotated[
        str, typer.Option(help="abmil (gated attention) or clam_sb.", rich_help_panel=MODEL)
    ] = "abmil",
    hidden: Annotated[
        int, typer.Option(min=1, help="Tile embedding size.", rich_help_panel=MODEL)
    ] = 256,
    dropout: Annotated[
        float,
        finite_option(
            "Dropout on the embedding and attention layers.", min=0.0, max=0.99, panel=MODEL
        ),
    ] = 0.25,
    k_sample: Annotated[
        int,
        typer.Option(
            min=1,
            help="clam_sb: tiles at each end of the attention ranking.",
            rich_help_panel=MODEL,
        ),
    ] = 8,
    standardize: Annotated[
        bool,
        typer.Option(
            "--standardize",
            help="Scale each feature by the training tiles' mean and std (for encoders whose "
            "features are far from unit scale, e.g. random weights).",
            rich_help_panel=MODEL,
        ),
    ] = False,
    precision: Precision = "auto",
    epochs: Annotated[int, epochs_option()] = 20,
    lr: Annotated[float, learning_rate_option()] = 2e-4,
    weight_decay: Annotated[
        float, finite_option("Weight decay of the optimiser.", min=0.0, panel=TRAINING)
    ] = 1e-5,
    max_tiles: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tiles sampled per bag and step, training only.",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    class_weights: Annotated[
        bool,
        typer.Option(help="Weight the loss by inverse class frequency.", rich_help_panel=TRAINING),
    ] = True,
    seed: Annotated[int, training_seed_option()] = 0,
    workers: Annotated[int, workers_option(panel=TRAINING)] = 0,
    devices: TrainDevices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    out: Annotated[Path, out_option("Run directory.")],
    resume: Resume = False,
    overwrite: OverwriteRun = False,
) -> None:
    """Train attention MIL on slide labels; the best checkpoint is RUN/checkpoints/best.ckpt."""
    from oncoscope.mil.train import mil_config, train_mil
    from oncoscope.train.scaffold import owns_run_folder

    quiet_lightning()
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
            standardize=standardize,
            precision=precision,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            num_workers=workers,
            seed=seed,
        )
        result = train_mil(config, resume=resume, overwrite=overwrite)
    if not owns_run_folder():  # a further process of a run in several: rank 0 speaks
        return
    loss = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
    console.print(
        f"{model}: {result.epochs_run} epochs in {result.seconds:.0f} s ({result.precision}); "
        f"best val loss {loss}; best checkpoint {result.best_checkpoint}"
    )


@mil_app.command("predict")
def mil_predict(
    checkpoint: Annotated[Path, checkpoint_argument("A MIL checkpoint from `oncoscope mil train`")],
    bags: Bags,
    out: OutDir,
    labels: Annotated[
        Path | None,
        typer.Option(help="slides.csv: predict only its slides (needed for patient bags)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Tiles in the gallery and GeoJSON.")] = 16,
    overwrite: Annotated[
        bool, overwrite_option("Replace an earlier mil predict in --out.")
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
