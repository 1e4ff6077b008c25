"""``oncoscope slide``: a trained patch classifier over whole slides, into probability maps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    DEFAULT_SCALES_TEXT,
    OUTPUTS,
    RESOLUTION,
    Accelerator,
    AllowUpsampling,
    Checkpoint,
    Compile,
    Decode,
    Magnification,
    Mpp,
    NumNodes,
    Precision,
    PredictDevices,
    ScanMagnification,
    ScanMpp,
    SlideInputs,
    StainNormalize,
    Stride,
    Workers,
    agreement_tiles_option,
    annotations_option,
    batch_size_option,
    min_tissue_option,
    on_mismatch_option,
    out_option,
    overwrite_option,
    scales_option,
    search_points_option,
)

if TYPE_CHECKING:
    from oncoscope.inference.slide_batch import SlideRunReport


def register(app: typer.Typer) -> None:
    """Add the ``slide`` command to the app."""
    app.command("slide")(slide)


def slide(
    ctx: typer.Context,
    checkpoint: Checkpoint,
    slides: SlideInputs,
    *,
    annotations: Annotated[
        Path | None, annotations_option(use=": scores the map against them")
    ] = None,
    magnification: Magnification = None,
    mpp: Mpp = None,
    auto_scale: Annotated[
        bool,
        typer.Option(
            "--auto-scale",
            help="Find the magnification first (oncoscope scale, seed 003) and use its winner.",
            rich_help_panel=RESOLUTION,
        ),
    ] = False,
    scales: Annotated[
        str, scales_option("Magnifications the --auto-scale search tries.")
    ] = DEFAULT_SCALES_TEXT,
    scale_points: Annotated[
        int, search_points_option("Random tissue points of the --auto-scale search.")
    ] = 100,
    allow_upsampling: AllowUpsampling = False,
    scan_mpp: ScanMpp = None,
    scan_magnification: ScanMagnification = None,
    stride: Stride = 0.5,
    min_tissue: Annotated[float, min_tissue_option("classify")] = 0.05,
    batch_size: Annotated[int, batch_size_option("Tiles")] = 16,
    workers: Workers = 0,
    precision: Precision = "auto",
    compile: Compile = False,
    decode: Decode = "auto",
    agreement_tiles: Annotated[
        int | None, agreement_tiles_option("re-run", "the argmax agreement")
    ] = None,
    stain_normalize: StainNormalize = True,
    devices: PredictDevices = None,
    accelerator: Accelerator = "auto",
    num_nodes: NumNodes = 1,
    out: Annotated[Path, out_option("Output folder (one folder per slide).")],
    heatmap_class: Annotated[
        str | None,
        typer.Option(
            help="Class drawn in heatmap.png (default: tumour-like, or max).",
            rich_help_panel=OUTPUTS,
        ),
    ] = None,
    overwrite: Annotated[
        bool, overwrite_option("Redo slides already done, whatever their settings.")
    ] = False,
    on_mismatch: Annotated[
        str,
        on_mismatch_option(
            "A slide done before with other settings (checkpoint, resolution, stride, tissue, "
            "precision, ...)"
        ),
    ] = "redo",
) -> None:
    """Classify slides patch by patch: probability maps, heatmap, segmentation, QuPath regions.

    Writes OUT/<slide>/ probabilities.npy, probabilities.tif, heatmap.png, segmentation.png,
    regions.geojson, summary.json and status.json; slides already done with the same settings
    are skipped.
    """
    from oncoscope.inference.scale_search import parse_scales
    from oncoscope.inference.slide_inference import SlideOptions, infer_slides

    with user_errors(out=out):
        options = options_from(SlideOptions, ctx, scales=tuple(parse_scales(scales)))
        if options.compile:
            quiet_compiler()
    with user_errors(), item_progress() as bars:
        report = infer_slides(
            checkpoint,
            slides,
            out,
            options,
            annotations=annotations,
            on_slide=bars.on_item,
            on_tiles=bars.on_units,
        )
    report_slides(
        report.outcomes,
        report.not_done,
        report.failures,
        lambda o: o.folder,
        _maps_made,
        totals=_run_totals(report),
    )


def _run_totals(report: SlideRunReport) -> list[str]:
    """The run's lines when it classified more than one slide: slides, tiles and tiles/s over
    the whole run (wall clock), and the fp32 agreement pooled over its slides."""
    lines = run_line(report.summaries, report.seconds)
    pooled = report.agreement()
    if lines and pooled is not None:
        low, high = pooled["argmax_agreement_ci95"]
        lines.append(
            f"fp32 check over the run: {pooled['argmax_agreement']:.1%} argmax agreement on "
            f"{pooled['tiles']} tiles of {pooled['slides']} slides (95% CI {low:.1%}-{high:.1%}), "
            f"max |difference| {pooled['max_abs_difference']:.3g}"
            + (
                f"; disagreeing: {', '.join(pooled['slides_with_disagreement'])}"
                if pooled["slides_with_disagreement"]
                else ""
            )
        )
    return lines


def _maps_made(summary: dict[str, Any]) -> str:
    """``N tiles in S s (R/s, precision); CLASS SHARE, ...`` of a classified slide."""
    shares = ", ".join(f"{n} {v['fraction']:.1%}" for n, v in summary["classes"].items())
    return (
        f"{summary['tiles']} tiles in {summary['seconds']:.1f} s "
        f"({summary['tiles_per_second']:.1f}/s, {summary['precision']}); {shares}"
    )
