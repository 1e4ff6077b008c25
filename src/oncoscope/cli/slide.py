"""``oncoscope slide``: a trained patch classifier over whole slides, into probability maps."""

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
    """Add the ``slide`` command to the app."""
    app.command("slide")(slide)


def slide(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint from `oncoscope train`.")],
    slides: Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (one folder per slide).")],
    magnification: Annotated[
        float | None,
        typer.Option(
            help="Magnification of the tiles (default: the checkpoint's, else 20).",
            callback=positive_number,
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(help="Microns per pixel of the tiles instead.", callback=positive_number),
    ] = None,
    auto_scale: Annotated[
        bool,
        typer.Option(
            "--auto-scale",
            help="Find the magnification first (oncoscope scale, seed 003) and use its winner.",
        ),
    ] = False,
    scales: Annotated[
        str, typer.Option(help="Magnifications the --auto-scale search tries.")
    ] = "10,12,14,17,20,25,30,35,43",
    scale_points: Annotated[
        int, typer.Option(min=1, help="Random tissue points of the --auto-scale search.")
    ] = 100,
    stride: Annotated[
        float,
        typer.Option(
            max=1.0,
            help="Tile step as a fraction of the tile: 1, 0.5, 0.25, ...",
            callback=positive_number,
        ),
    ] = 0.5,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 16,
    workers: Annotated[
        int, typer.Option(min=0, help="Reader processes (0: read in the main process).")
    ] = 0,
    precision: Annotated[
        str, typer.Option(help="auto (bf16/fp16 where native, else fp32), fp32, bf16 or fp16.")
    ] = "auto",
    annotations: Annotated[
        Path | None,
        typer.Option(
            help="GeoJSON or label mask (one slide), or a folder of <slide>.geojson: "
            "scores the map against them."
        ),
    ] = None,
    min_tissue: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least tissue share of a tile to classify it.")
    ] = 0.05,
    heatmap_class: Annotated[
        str | None, typer.Option(help="Class drawn in heatmap.png (default: tumour-like, or max).")
    ] = None,
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
            help="Tiles re-run at fp32 under bf16/fp16 to measure the argmax agreement "
            "(default: 1% of the tiles, 16 to 256; 0: no check).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Redo slides already done, whatever their settings.")
    ] = False,
    on_mismatch: Annotated[
        str,
        typer.Option(
            help="A slide done before with other settings (checkpoint, resolution, stride, "
            "tissue, precision, ...): redo it, or error (refuse it, naming what differs)."
        ),
    ] = "redo",
    stain_normalize: Annotated[
        bool,
        typer.Option(
            help="Normalise tiles to the stain target the checkpoint's training tiles were "
            "normalised to (wsi tile --stain-normalize); --no-stain-normalize: the slide's own "
            "colours."
        ),
    ] = True,
    mpp_of_scan: ScanMpp = None,
    magnification_of_scan: ScanMagnification = None,
) -> None:
    """Classify slides patch by patch: probability maps, heatmap, segmentation, QuPath regions.

    Writes OUT/<slide>/ probabilities.npy, probabilities.tif, heatmap.png, segmentation.png,
    regions.geojson, summary.json and status.json; slides already done with the same settings
    are skipped.
    """
    from oncoscope.inference.scale_search import parse_scales
    from oncoscope.inference.slide_inference import SlideOptions, infer_slides

    with user_errors(out=out):
        scale_set = tuple(parse_scales(scales))
    options = SlideOptions(
        auto_scale=auto_scale,
        scales=scale_set,
        scale_points=scale_points,
        magnification=magnification,
        mpp=mpp,
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
        heatmap_class=heatmap_class,
        scan_mpp=mpp_of_scan,
        scan_magnification=magnification_of_scan,
        overwrite=overwrite,
        on_mismatch=on_mismatch,
        stain_normalize=stain_normalize,
    )
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

        report = infer_slides(
            checkpoint,
            slides,
            out,
            options,
            annotations=annotations,
            on_slide=on_slide,
            on_tiles=on_tiles,
        )
        progress.update(overall, completed=started[0])
    for outcome in report.outcomes:
        if not outcome.rank_zero:  # the other processes of a distributed run say nothing
            continue
        for note in outcome.warnings:
            error_console.print(f"warning: {outcome.slide}: {note}", markup=False, highlight=False)
        if outcome.summary is None:
            console.print(f"{outcome.slide}: already done, skipped ({outcome.folder})")
            continue
        s = outcome.summary
        shares = ", ".join(f"{n} {v['fraction']:.1%}" for n, v in s["classes"].items())
        console.print(
            f"{outcome.slide}: {s['tiles']} tiles in {s['seconds']:.1f} s "
            f"({s['tiles_per_second']:.1f}/s, {s['precision']}); {shares} -> {outcome.folder}",
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
