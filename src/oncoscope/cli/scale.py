"""``oncoscope scale``: the magnification a trained classifier works best at on a slide."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from oncoscope.cli._common import console, print_warning, progress_bar, user_errors
from oncoscope.cli.options import (
    DEFAULT_SCALES_TEXT,
    AllowUpsampling,
    OneSlide,
    OutDir,
    ScanMagnification,
    ScanMpp,
    StainNormalize,
    annotations_option,
    batch_size_option,
    checkpoint_argument,
    scales_option,
    search_points_option,
    seed_option,
)


def scale(
    checkpoint: Annotated[
        Path, checkpoint_argument("An RGB patch classifier from `oncoscope train`")
    ],
    slide: OneSlide,
    *,
    annotations: Annotated[
        Path | None, annotations_option("of the slide", ": adds per-class accuracy")
    ] = None,
    scales: Annotated[
        str, scales_option("Magnifications to try, comma-separated.")
    ] = DEFAULT_SCALES_TEXT,
    allow_upsampling: AllowUpsampling = False,
    scan_mpp: ScanMpp = None,
    scan_magnification: ScanMagnification = None,
    points: Annotated[int, search_points_option("Random points in tissue.", panel=None)] = 100,
    seed: Annotated[int, seed_option("the random points")] = 0,
    bias: Annotated[
        bool,
        typer.Option(
            "--bias/--no-bias",
            help="Add the classifier's bias (true signed distance); default: the seed's X.W/|W|.",
        ),
    ] = False,
    batch_size: Annotated[int, batch_size_option("Crops")] = 16,
    stain_normalize: StainNormalize = True,
    out: OutDir,
) -> None:
    """Find the magnification a classifier works best at on a slide (seed 003, Algorithm 1).

    Writes OUT/scale.json, OUT/scale_histogram.png and OUT/scale_curves.png.
    """
    from oncoscope.inference.scale_search import parse_scales, search_scale, write_scale_outputs

    with user_errors(out=out):
        chosen = parse_scales(scales)
        with progress_bar() as bar, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # printed below from result.warnings
            task = bar.add_task("scales", total=len(chosen))
            result = search_scale(
                checkpoint,
                slide,
                scales=chosen,
                points=points,
                seed=seed,
                bias=bias,
                batch_size=batch_size,
                allow_upsampling=allow_upsampling,
                annotations=annotations,
                scan_mpp=scan_mpp,
                scan_magnification=scan_magnification,
                stain_normalize=stain_normalize,
                progress=lambda done, _total: bar.update(task, completed=done),
            )
        paths = write_scale_outputs(result, out)
    for message in result.warnings:
        print_warning(slide, message)
    votes = "  ".join(f"x{s:g}: {n}" for s, n in result.histogram.items())
    console.print(f"votes over {len(result.points)} points: {votes}", highlight=False)
    trained = (
        f" (the checkpoint was trained at x{result.trained_magnification:g})"
        if result.trained_magnification is not None
        else ""
    )
    console.print(f"[bold]scale: x{result.winner:g}[/bold]{trained}", markup=True, highlight=False)
    counts = ", ".join(f"{kind} {n}" for kind, n in result.curve_counts().items())
    console.print(f"curves: {counts}", highlight=False)
    if result.widen["message"]:
        console.print(f"advice: {result.widen['message']}", highlight=False)
    if result.table is not None:
        console.print(accuracy_table(result.table))
    console.print(f"written: {paths['json']}, {paths['histogram']}, {paths['curves']}")


def accuracy_table(table: dict[str, Any]) -> Table:
    """The seed's Table 1 as a rich table: per-class accuracy (%) per scale, with votes."""
    classes = list(table["classes"])
    points = table["points"]
    shown = Table(title="accuracy per class at each scale (%), points labelled by annotations")
    shown.add_column("scale", justify="right")
    for name in classes:
        shown.add_column(f"{name} (n={points[name]})", justify="right")
    shown.add_column("mean", justify="right")
    shown.add_column("votes", justify="right")
    for row in table["rows"]:
        marks = " *" if row["scale"] == table["winner"] else ""
        shown.add_row(
            f"x{row['scale']:g}{marks}",
            *(f"{100 * row['accuracy'][name]:.1f}" for name in classes),
            f"{100 * row['mean']:.1f}",
            str(row["votes"]),
        )
    shown.caption = f"* vote winner; best mean accuracy at x{table['best_scale']:g}"
    return shown


def register(app: typer.Typer) -> None:
    """Add ``oncoscope scale`` to the main app."""
    app.command("scale")(scale)
