"""``oncoscope features``: tile features of whole slides into one feature bag per slide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


def register(app: typer.Typer) -> None:
    """Add the ``features`` command to the app."""
    app.command("features")(features)


def features(
    encoder: Annotated[
        str,
        typer.Argument(
            help="An oncoscope checkpoint (its penultimate features), or a timm model name "
            "(its offline weights, --weights FILE, or --scratch)."
        ),
    ],
    slides: Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (one <slide>.h5 per slide).")],
    weights: Annotated[
        Path | None,
        typer.Option(help="Local weights file for a timm model name (e.g. a foundation model)."),
    ] = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Random weights (seed 0) for a timm model name.")
    ] = False,
    model_kwargs: Annotated[
        str | None,
        typer.Option(
            help='Keyword arguments of the timm model as JSON, e.g. \'{"init_values": 1e-5, '
            '"dynamic_img_size": true}\'.'
        ),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            help="R,G,B mean (0..1) of a timm model's input normalisation, instead of timm's "
            "default for the name (e.g. 0.485,0.456,0.406 for UNI)."
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(help="R,G,B standard deviation (0..1), with --mean."),
    ] = None,
    magnification: Annotated[
        float | None,
        typer.Option(
            help="Magnification of the tiles (default: a checkpoint's training one, else 20).",
            callback=positive_number,
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(help="Microns per pixel of the tiles instead.", callback=positive_number),
    ] = None,
    tile_px: Annotated[
        int | None,
        typer.Option(
            min=8,
            help="Tile side in pixels at that resolution (default: the encoder's input size; "
            "another side is resized to it).",
        ),
    ] = None,
    stride: Annotated[
        float,
        typer.Option(
            max=1.0,
            help="Tile step as a fraction of the tile: 1 (no overlap), 0.5, 0.25, ...",
            callback=positive_number,
        ),
    ] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 16,
    workers: Annotated[
        int, typer.Option(min=0, help="Reader processes (0: read in the main process).")
    ] = 0,
    precision: Annotated[
        str, typer.Option(help="auto (bf16/fp16 where native, else fp32), fp32, bf16 or fp16.")
    ] = "auto",
    min_tissue: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least tissue share of a tile to encode it.")
    ] = 0.05,
    allow_upsampling: Annotated[
        bool, typer.Option(help="Allow a resolution finer than the scan's (interpolated).")
    ] = False,
    devices: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Run through Lightning's trainer.predict on N devices "
            "(tiles sharded by its distributed sampler).",
        ),
    ] = None,
    accelerator: Annotated[
        str, typer.Option(help="Lightning accelerator with --devices.")
    ] = "auto",
    num_nodes: Annotated[
        int,
        typer.Option(
            min=1, help="Nodes with --devices (Lightning's cluster environment, e.g. SLURM)."
        ),
    ] = 1,
    agreement_tiles: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Tiles re-encoded at fp32 under bf16/fp16 to measure the cosine similarity "
            "(default: 1% of the tiles, 16 to 256; 0: no check).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Redo every slide, replacing <slide>.h5 files already in --out."),
    ] = False,
    on_mismatch: Annotated[
        str,
        typer.Option(
            help="A bag made with other settings (encoder, resolution, tile size, stride, "
            "tissue, precision, ...): redo it, or error (refuse it, naming what differs)."
        ),
    ] = "redo",
    stain_normalize: Annotated[
        bool,
        typer.Option(
            help="Apply the stain target a checkpoint's training tiles were normalised to "
            "(as oncoscope slide does)."
        ),
    ] = True,
    mpp_of_scan: ScanMpp = None,
    magnification_of_scan: ScanMagnification = None,
) -> None:
    """Encode the tissue tiles of slides into feature bags for multiple-instance learning.

    Writes OUT/<slide>.h5 (features (n, d) float32, coords (n, 2) level-0 x, y, and the tile
    size, resolution and encoder); slides whose bag has the same settings are skipped.
    """
    from oncoscope.features.encoders import load_encoder, parse_model_kwargs, parse_rgb
    from oncoscope.features.extract import FeatureOptions, extract_slides, slide_options
    from oncoscope.io.slide_files import find_slides

    options = FeatureOptions(
        magnification=magnification,
        mpp=mpp,
        tile_px=tile_px,
        stride=stride,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        min_tissue=min_tissue,
        allow_upsampling=allow_upsampling,
        devices=devices,
        accelerator=accelerator,
        num_nodes=num_nodes,
        agreement_tiles=agreement_tiles,
        scan_mpp=mpp_of_scan,
        scan_magnification=magnification_of_scan,
        overwrite=overwrite,
        on_mismatch=on_mismatch,
        stain_normalize=stain_normalize,
    )
    with user_errors(out=out):
        if mpp is not None and magnification is not None:
            from oncoscope.errors import InvalidOptionError

            raise InvalidOptionError("give --mpp or --magnification, not both")
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
    with user_errors(), progress_bar() as progress:
        overall = progress.add_task("slides", total=None)
        current = progress.add_task("tiles", total=None, visible=False)
        started = [0]

        def on_slide(path: Path, total: int) -> None:
            progress.update(overall, total=total, completed=started[0])
            started[0] += 1
            progress.reset(current, total=None, visible=True, description=path.name)

        def on_tiles(done: int, total: int) -> None:
            progress.update(current, completed=done, total=total)

        report = extract_slides(loaded, slides, out, options, on_slide=on_slide, on_tiles=on_tiles)
        progress.update(overall, completed=started[0])
    for outcome in report.outcomes:
        if not outcome.rank_zero:  # the other processes of a distributed run say nothing
            continue
        for note in outcome.warnings:
            error_console.print(f"warning: {outcome.slide}: {note}", markup=False, highlight=False)
        if outcome.summary is None:
            console.print(f"{outcome.slide}: already done, skipped ({outcome.bag})")
            continue
        s = outcome.summary
        check = s.get("precision_agreement")
        agreement = (
            f", fp32 cosine min {check['cosine_min']:.4f} mean {check['cosine_mean']:.4f} "
            f"on {check['tiles']} tiles"
            if check
            else ""
        )
        console.print(
            f"{outcome.slide}: {s['tiles']} tiles x {loaded.feature_dim} features in "
            f"{s['seconds']:.1f} s ({s['tiles_per_second']:.1f}/s, {s['precision']}{agreement}) "
            f"-> {outcome.bag}",
            highlight=False,
        )
    if report.not_done:
        error_console.print(
            f"{len(report.not_done)} slide(s) not done (the run stopped at a full disk):",
            highlight=False,
        )
        for path in report.not_done:
            error_console.print(f"  not done: {path}", markup=False, highlight=False)
    exit_on_failures(report.failures, "slide(s)")
