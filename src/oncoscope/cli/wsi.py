"""``oncoscope wsi ...``: whole-slide images: slide facts, tissue tiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from oncoscope.cli._common import (
    ScanMagnification,
    ScanMpp,
    console,
    error_console,
    exit_on_failures,
    positive_number,
    progress_bar,
    user_errors,
)

wsi_app = typer.Typer(
    help="Whole-slide images: slide facts, tissue tiles with labels.", no_args_is_help=True
)


@wsi_app.command("info")
def wsi_info(
    slide: Annotated[Path, typer.Argument(help="A slide OpenSlide reads (SVS, NDPI, TIFF, ...).")],
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
    slides: Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    size: Annotated[
        int, typer.Option(min=8, help="Tile size in pixels at the target scale.")
    ] = 256,
    magnification: Annotated[
        float | None,
        typer.Option(help="Target magnification, e.g. 20 (default 20).", callback=positive_number),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(help="Target microns per pixel instead.", callback=positive_number),
    ] = None,
    overlap: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Share of a tile consecutive tiles overlap.")
    ] = 0.3,
    min_coverage: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Keep tiles with tissue/label coverage >= this.")
    ] = 0.5,
    random: Annotated[
        int, typer.Option(min=0, help="Extra tiles per slide at random in tissue.")
    ] = 0,
    annotations: Annotated[
        Path | None,
        typer.Option(help="GeoJSON or label-mask PNG (one slide), or a folder of <slide>.geojson."),
    ] = None,
    edge: Annotated[
        str, typer.Option(help="Tiles crossing the slide edge: drop, or shift one inward.")
    ] = "drop",
    tile_format: Annotated[
        str, typer.Option("--format", help="png files, or one hdf5 / zarr store per slide.")
    ] = "png",
    split: Annotated[
        str | None,
        typer.Option(
            help="Slide shares train:val:test (default 3:1:1; under 3 slides, all in train)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the random tiles.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Slides tiled in parallel.")] = 1,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad slide.")] = False,
    mpp_of_scan: ScanMpp = None,
    magnification_of_scan: ScanMagnification = None,
    stain_normalize: Annotated[
        Path | None, typer.Option(help="Reference tile (PNG) to stain-normalise tiles to.")
    ] = None,
    stain_method: Annotated[str, typer.Option(help="macenko or reinhard.")] = "macenko",
) -> None:
    """Tissue tiles (seed-004 overlapping grid + random) and a slide-split manifest.csv."""
    from oncoscope.dataset.split import parse_ratio
    from oncoscope.pathology.tile_dataset import TileFormat, TileOptions, tile_slides
    from oncoscope.pathology.tiling import EdgePolicy

    with user_errors(out=out):
        options = TileOptions(
            size_px=size,
            magnification=magnification,
            mpp=mpp,
            overlap=overlap,
            min_coverage=min_coverage,
            random=random,
            edge=cast(EdgePolicy, edge),
            tile_format=cast(TileFormat, tile_format),
            ratio=parse_ratio(split) if split is not None else None,
            seed=seed,
            scan_mpp=mpp_of_scan,
            scan_magnification=magnification_of_scan,
            stain_reference=str(stain_normalize) if stain_normalize else None,
            stain_method=stain_method,
        )
        with progress_bar() as progress:
            task = progress.add_task("slides", total=None)
            report = tile_slides(
                slides,
                out,
                options,
                annotations=annotations,
                workers=workers,
                strict=strict,
                on_slide_done=lambda _id, _error, total: progress.update(
                    task, total=total, advance=1
                ),
            )
    for path, message in report.warnings:
        error_console.print(f"warning: {path}: {message}", markup=False, highlight=False)
    if report.manifest is not None:
        table = Table(title="slide split")
        for column in ("split", "slides", "tiles", "labels"):
            table.add_column(column)
        for row in report.split_table():
            table.add_row(*(str(row[c]) for c in ("split", "slides", "tiles", "labels")))
        console.print(table)
        console.print(f"wrote {len(report.rows)} tiles and {report.manifest}")
    exit_on_failures(report.failures, "slide(s)")
