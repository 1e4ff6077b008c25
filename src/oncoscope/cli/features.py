"""``oncoscope features``: tile features of whole slides into one feature bag per slide."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from oncoscope.cli._common import (
    item_progress,
    options_from,
    quiet_compiler,
    report_slides,
    run_line,
    user_errors,
)
from oncoscope.cli.options import (
    MODEL,
    TILES,
    Accelerator,
    AllowUpsampling,
    Compile,
    Decode,
    Magnification,
    Mpp,
    NumNodes,
    Precision,
    ScanMagnification,
    ScanMpp,
    SlideDevices,
    SlideInputs,
    StainNormalize,
    Stride,
    Workers,
    agreement_tiles_option,
    batch_size_option,
    min_tissue_option,
    on_mismatch_option,
    out_option,
    overwrite_option,
)


def register(app: typer.Typer) -> None:
    """Add the ``features`` command to the app."""
    app.command("features")(features)


def features(
    ctx: typer.Context,
    encoder: Annotated[
        str,
        typer.Argument(
            help="An oncoscope checkpoint (its penultimate features), or a timm model name "
            "(its offline weights, --weights FILE, or --scratch)."
        ),
    ],
    slides: SlideInputs,
    *,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Local weights file for a timm model name (e.g. a foundation model).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    scratch: Annotated[
        bool,
        typer.Option(
            "--scratch",
            help="Random weights (seed 0) for a timm model name.",
            rich_help_panel=MODEL,
        ),
    ] = False,
    model_kwargs: Annotated[
        str | None,
        typer.Option(
            help='Keyword arguments of the timm model as JSON, e.g. \'{"init_values": 1e-5, '
            '"dynamic_img_size": true}\'.',
            rich_help_panel=MODEL,
        ),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            help="R,G,B mean (0..1) of a timm model's input normalisation, instead of timm's "
            "default for the name (e.g. 0.485,0.456,0.406 for UNI).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(help="R,G,B standard deviation (0..1), with --mean.", rich_help_panel=MODEL),
    ] = None,
    magnification: Magnification = None,
    mpp: Mpp = None,
    allow_upsampling: AllowUpsampling = False,
    scan_mpp: ScanMpp = None,
    scan_magnification: ScanMagnification = None,
    tile_px: Annotated[
        int | None,
        typer.Option(
            min=8,
            help="Tile side in pixels at that resolution (default: the encoder's input size; "
            "another side is resized to it).",
            rich_help_panel=TILES,
        ),
    ] = None,
    stride: Stride = 1.0,
    min_tissue: Annotated[float, min_tissue_option("encode")] = 0.05,
    batch_size: Annotated[int, batch_size_option("Tiles")] = 16,
    workers: Workers = 0,
    precision: Precision = "auto",
    compile: Compile = False,
    decode: Decode = "auto",
    agreement_tiles: Annotated[
        int | None, agreement_tiles_option("re-encoded", "the cosine similarity")
    ] = None,
    stain_normalize: StainNormalize = True,
    devices: SlideDevices = None,
    accelerator: Accelerator = "auto",
    num_nodes: NumNodes = 1,
    out: Annotated[Path, out_option("Output folder (one <slide>.h5 per slide).")],
    overwrite: Annotated[
        bool, overwrite_option("Redo every slide, replacing <slide>.h5 files already in --out.")
    ] = False,
    on_mismatch: Annotated[
        str,
        on_mismatch_option(
            "A bag made with other settings (encoder, resolution, tile size, stride, tissue, "
            "precision, ...)"
        ),
    ] = "redo",
) -> None:
    """Encode the tissue tiles of slides into feature bags for multiple-instance learning.

    Writes OUT/<slide>.h5 (features (n, d) float32, coords (n, 2) level-0 x, y, and the tile
    size, resolution and encoder); slides whose bag has the same settings are skipped.
    """
    from oncoscope.features.encoders import load_encoder, parse_model_kwargs, parse_rgb
    from oncoscope.features.extract import FeatureOptions, extract_slides, slide_options
    from oncoscope.io.slide_files import find_slides
    from oncoscope.io.slides import ResolutionRequest

    with user_errors(out=out):
        options = options_from(FeatureOptions, ctx)
        if options.compile:
            quiet_compiler()
        ResolutionRequest(mpp=mpp, magnification=magnification)  # not both: before any work
        find_slides(slides)  # missing inputs are refused before the encoder is loaded
        loaded = load_encoder(
            encoder,
            weights=weights,
            scratch=scratch,
            model_kwargs=parse_model_kwargs(model_kwargs),
            mean=parse_rgb("--mean", mean),
            std=parse_rgb("--std", std),
        )
        slide_options(loaded, options)
    started = time.perf_counter()
    with user_errors(), item_progress() as bars:
        report = extract_slides(
            loaded, slides, out, options, on_slide=bars.on_item, on_tiles=bars.on_units
        )
    made = [o.summary for o in report.outcomes if o.summary is not None and o.rank_zero]
    totals = run_line(made, time.perf_counter() - started)

    def bag_made(summary: dict[str, Any]) -> str:
        check = summary.get("precision_agreement")
        agreement = (
            f", fp32 cosine min {check['cosine_min']:.4f} mean {check['cosine_mean']:.4f} "
            f"on {check['tiles']} tiles"
            if check
            else ""
        )
        return (
            f"{summary['tiles']} tiles x {loaded.feature_dim} features in "
            f"{summary['seconds']:.1f} s ({summary['tiles_per_second']:.1f}/s, "
            f"{summary['precision']}{agreement})"
        )

    report_slides(
        report.outcomes, report.not_done, report.failures, lambda o: o.bag, bag_made, totals
    )
