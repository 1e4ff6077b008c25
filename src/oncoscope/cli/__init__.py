"""The ``oncoscope`` command line: thin typer commands over the modules below.

Errors a user can cause are :class:`oncoscope.errors.OncoscopeError`; they print one line
(``error: FILE: problem``) and exit with code 2, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from oncoscope import __version__
from oncoscope.allocator import keep_large_blocks
from oncoscope.cli._common import console, quiet_lightning, state, user_errors
from oncoscope.cli.benchmark import register as register_benchmark
from oncoscope.cli.ct import ct_app, print_split_table
from oncoscope.cli.evaluate import register as register_evaluation_commands
from oncoscope.cli.explain import register as register_explain
from oncoscope.cli.features import register as register_features_command
from oncoscope.cli.locate import register as register_locate
from oncoscope.cli.mil import mil_app
from oncoscope.cli.options import OutDir
from oncoscope.cli.scale import register as register_scale_command
from oncoscope.cli.slide import register as register_slide_command
from oncoscope.cli.train import register as register_learning_commands
from oncoscope.cli.view import register as register_view_command
from oncoscope.cli.wsi import wsi_app

app = typer.Typer(
    name="oncoscope",
    help="Find cancer in medical images with convolutional networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ct_app, name="ct")
register_learning_commands(app)
register_evaluation_commands(app)
register_benchmark(app)
register_explain(app)
register_locate(app)
app.add_typer(wsi_app, name="wsi")
app.add_typer(mil_app, name="mil")
register_slide_command(app)
register_features_command(app)
register_scale_command(app)
register_view_command(app)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"oncoscope {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """oncoscope: liver CT slices and H&E whole-slide images, from data to reports."""
    state["debug"] = debug or os.environ.get("ONCOSCOPE_DEBUG") == "1"
    keep_large_blocks()  # CPU training steps up to twice as fast (oncoscope/allocator.py)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Versions of Python, torch, timm, OpenSlide; compute device; offline weights present."""
    from oncoscope.doctor import report

    facts = report()
    if as_json:
        console.print_json(json.dumps(facts))
        return
    table = Table(title="oncoscope doctor", show_header=False)
    for name, value in facts["versions"].items():
        table.add_row(name, value)
    for name, value in facts["device"].items():
        table.add_row(f"device: {name}", str(value))
    console.print(table)
    weights = facts["offline_weights"]
    if not weights:
        console.print("offline weights: none found (pass --weights FILE to load a local file)")
    for source, files in weights.items():
        console.print(f"offline weights: {source}: {', '.join(files)}")


@app.command()
def demo(
    out: OutDir = Path("oncoscope-demo"),
    patients: Annotated[int, typer.Option(min=5, help="Synthetic patients to generate.")] = 16,
    lesion_free: Annotated[
        int | None,
        typer.Option(min=0, help="How many of them have no lesion (default: a quarter)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of phantoms, split, noise and training.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes for ct prepare and loading.")] = 2,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Train the quick recipe.")
    ] = True,
) -> None:
    """Run the CT and slide pipelines end to end on SYNTHETIC data (no patient data)."""
    from oncoscope.demo import CT_MAP, run_demo

    quiet_lightning()

    with user_errors(out=out):
        result = run_demo(
            out,
            n_patients=patients,
            lesion_free=lesion_free,
            seed=seed,
            workers=workers,
            train=train,
            step=lambda text: console.print(f"[bold]•[/bold] {escape(text)}", markup=True),
        )
    print_split_table(result.prepare.split_table())
    chain = result.chain
    console.print(f"synthetic phantoms (not patient data): {result.phantoms}")
    console.print(f"slice dataset:        {result.prepare.manifest}")
    console.print(f"preprocessing steps:  {result.preprocess_dir}")
    console.print(f"preprocessing panel:  {result.panel}")
    if chain.roi_dice is not None:
        console.print(
            f"EM liver ROI Dice against the phantom's liver on that slice: {chain.roi_dice:.3f}"
        )
    for outcome, held_out, unit, chance in (
        (result.training, "test patients", "slices", "0.5"),
        (result.tile_training, "test slide", "tiles", "0.333"),
    ):
        if outcome is not None:
            console.print(f"trained on {unit}:    {outcome.run.best_checkpoint}")
            console.print(
                f"held-out {held_out} ({outcome.test_images} {unit}): accuracy "
                f"{outcome.test_accuracy:.3f}, balanced accuracy "
                f"{outcome.test_balanced_accuracy:.3f} (chance: {chance})"
            )
    wsi = result.wsi
    labels = "; ".join(
        f"{row['split']}: {row['labels']}" for row in wsi.tiles.split_table() if row["tiles"]
    )
    console.print(f"synthetic slide (not patient data): {wsi.slide} with {wsi.annotations}")
    console.print(f"slide tiles:          {wsi.tiles.manifest} ({len(wsi.tiles.rows)}: {labels})")
    console.print(f"tile grid overlay:    {wsi.overlay}")
    analysis = result.analysis
    if analysis is not None:
        console.print(
            f"evaluation report:    {analysis.ct_report} (slices), {analysis.tile_report}"
        )
        located = analysis.localization.get("metrics")
        if located:
            console.print(
                f"weak localisation:    {CT_MAP} pointing game {located['pointing_game']:.3f} "
                f"(random point in the liver {located['pointing_game_random_liver']:.3f}), "
                f"PxAP {located['pxap']:.3f}"
            )
        console.print(f"{CT_MAP} maps:      {analysis.explain_csv}")
        if analysis.located is not None:
            found = analysis.located
            segments = ", ".join(sorted({str(row["segment"]) for row in found.rows})) or "none"
            console.print(
                f"lesions located:      {len(found.rows)} candidate(s) in segments {segments}: "
                f"{found.out_dir / 'candidates.csv'}"
            )
        for path in analysis.couinaud:
            console.print(f"Couinaud segments:    {path}")
        console.print(f"slide heatmap:        {analysis.slide_folder} (with scale.json)")
    console.print(f"look at it all:       oncoscope view {out}")
