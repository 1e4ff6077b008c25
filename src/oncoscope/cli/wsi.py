"""``oncoscope wsi ...``: whole-slide images: slide facts, tissue tiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from oncoscope.cli._common import (
    console,
    counted_progress,
    exit_on_failures,
    options_from,
    print_table,
    print_warning,
    user_errors,
)
from oncoscope.cli.options import (
    OUTPUTS,
    TILES,
    Mpp,
    OneSlide,
    OutDir,
    ScanMagnification,
    ScanMpp,
    SlideInputs,
    annotations_option,
    fraction_option,
    magnification_option,
    parallel_option,
    seed_option,
    strict_option,
)

wsi_app = typer.Typer(
    help="Whole-slide images: slide facts, tissue tiles with labels.", no_args_is_help=True
)


@wsi_app.command("info")
def wsi_info(
    slide: OneSlide,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Levels, dimensions, microns per pixel, magnification, vendor and bounds of a slide."""
    from oncoscope.io.slides import open_slide

    with user_errors(), open_slide(slide) as opened:
        facts = opened.info()
    if as_json:
        console.print_json(json.dumps(facts))
        return
    console.print(
        f"{facts['path']}: {facts['vendor']}, {facts['dimensions'][0]} x "
        f"{facts['dimensions'][1]} px, {facts['mpp']:.4g} um/px ({facts['mpp_source']}), "
        f"x{facts['magnification']:g}, bounds offset {tuple(facts['bounds_xy'])}",
        highlight=False,
    )
    table = Table(title="pyramid")
    for column in ("level", "width", "height", "downsample", "um/px"):
        table.add_column(column, justify="right")
    for level in facts["levels"]:
        w, h = level["dimensions"]
        ds = level["downsample"]
        table.add_row(str(level["level"]), str(w), str(h), f"{ds:.4g}", f"{facts['mpp'] * ds:.4g}")
    console.print(table)


@wsi_app.command("tile")
def wsi_tile(
    ctx: typer.Context,
    slides: SlideInputs,
    *,
    annotations: Annotated[Path | None, annotations_option()] = None,
    magnification: Annotated[float | None, magnification_option("20")] = None,
    mpp: Mpp = None,
    scan_mpp: ScanMpp = None,
    scan_magnification: ScanMagnification = None,
    size_px: Annotated[
        int,
        typer.Option(
            "--size", min=8, help="Tile size in pixels at the target scale.", rich_help_panel=TILES
        ),
    ] = 256,
    overlap: Annotated[
        float, fraction_option("Share of a tile consecutive tiles overlap.", max=0.99, panel=TILES)
    ] = 0.3,
    min_coverage: Annotated[
        float, fraction_option("Keep tiles with tissue/label coverage >= this.", panel=TILES)
    ] = 0.5,
    random: Annotated[
        int,
        typer.Option(
            min=0, help="Extra tiles per slide at random in tissue.", rich_help_panel=TILES
        ),
    ] = 0,
    edge: Annotated[
        str,
        typer.Option(
            help="Tiles crossing the slide edge: drop, or shift one inward.", rich_help_panel=TILES
        ),
    ] = "drop",
    stain_normalize: Annotated[
        Path | None,
        typer.Option(
            help="Reference tile (PNG) to stain-normalise tiles to.", rich_help_panel=TILES
        ),
    ] = None,
    stain_method: Annotated[
        str, typer.Option(help="macenko or reinhard.", rich_help_panel=TILES)
    ] = "macenko",
    out: OutDir,
    tile_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="png files, or one hdf5 / zarr store per slide.",
            rich_help_panel=OUTPUTS,
        ),
    ] = "png",
    split: Annotated[
        str | None,
        typer.Option(
            help="Slide shares train:val:test (default 3:1:1; under 3 slides, all in train).",
            rich_help_panel=OUTPUTS,
        ),
    ] = None,
    seed: Annotated[int, seed_option("the split and the random tiles")] = 0,
    workers: Annotated[int, parallel_option("Slides tiled in parallel.")] = 1,
    strict: Annotated[bool, strict_option("slide")] = False,
) -> None:
    """Tissue tiles (seed-004 overlapping grid + random) and a slide-split manifest.csv."""
    from oncoscope.dataset.split import parse_ratio
    from oncoscope.pathology.tile_dataset import TileOptions, tile_slides

    with user_errors(out=out):
        options = options_from(
            TileOptions,
            ctx,
            ratio=parse_ratio(split) if split is not None else None,
            stain_reference=str(stain_normalize) if stain_normalize else None,
        )
        with counted_progress("slides") as done:
            report = tile_slides(
                slides,
                out,
                options,
                annotations=annotations,
                workers=workers,
                strict=strict,
                on_slide_done=lambda _id, _error, total: done(total),
            )
    for path, message in report.warnings:
        print_warning(path, message)
    if report.manifest is not None:
        print_table("slide split", ("split", "slides", "tiles", "labels"), report.split_table())
        console.print(f"wrote {len(report.rows)} tiles and {report.manifest}")
    exit_on_failures(report.failures, "slide(s)")
