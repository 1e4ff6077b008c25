"""``oncoscope locate``: lesion candidates in CT volumes or slices, from a slice classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import (
    console,
    error_console,
    exit_on_failures,
    options_from,
    progress_bar,
    user_errors,
)
from oncoscope.cli.options import (
    INPUT,
    OutDir,
    SpacingMm,
    batch_size_option,
    checkpoint_argument,
    finite_option,
    fraction_option,
    landmarks_option,
    on_mismatch_option,
    overwrite_option,
    positive_option,
    vessel_labels_option,
)

CANDIDATES = "Candidates"
SCORING = "Scoring"


def register(app: typer.Typer) -> None:
    """Add the ``locate`` command to the app."""
    app.command("locate")(locate)


def locate(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path, checkpoint_argument("A CT slice classifier from `oncoscope train`")
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="CT volumes (NIfTI, MHA/NRRD, DICOM folders), slice PNGs or folders."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="A manifest whose --split slices are located too.", rich_help_panel=INPUT
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split of --data.", rich_help_panel=INPUT)
    ] = None,
    liver_mask: Annotated[
        Path | None,
        typer.Option(
            help="Liver segmentation (labels >= 1) on the volume's grid, or a folder of them "
            "(segmentation-N for volume-N); default: the EM liver ROI.",
            rich_help_panel=INPUT,
        ),
    ] = None,
    landmarks: Annotated[Path | None, landmarks_option(folder=True, panel=INPUT)] = None,
    vessel_labels: Annotated[str | None, vessel_labels_option("--liver-mask", panel=INPUT)] = None,
    spacing_mm: SpacingMm = None,
    threshold: Annotated[
        float | None,
        finite_option(
            "Map threshold in (0, 1) (default: the one `evaluate --localization` recorded "
            "beside the checkpoint).",
            panel=CANDIDATES,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="CAM method (default: the one the threshold was picked for).",
            rich_help_panel=CANDIDATES,
        ),
    ] = None,
    min_prob: Annotated[
        float,
        fraction_option(
            "Slices with a lower tumour probability get no candidates.", panel=CANDIDATES
        ),
    ] = 0.5,
    small_mm: Annotated[
        float,
        positive_option(
            "Candidates at most this largest in-plane diameter (mm) are small.", panel=CANDIDATES
        ),
    ] = 20.0,
    beyond_liver_mm: Annotated[
        float,
        finite_option(
            "With the EM liver ROI: keep a candidate that reaches into it up to this far (mm; "
            "pixels for slice images without spacing) outside it; 0 cuts it at the ROI's edge.",
            min=0.0,
            panel=CANDIDATES,
        ),
    ] = 5.0,
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Ground-truth segmentation (tumour = 2) on the volume's grid, or a folder of "
            "them: lesion-level detection scores.",
            rich_help_panel=SCORING,
        ),
    ] = None,
    resamples: Annotated[
        int,
        typer.Option(
            min=1, help="Bootstrap resamples of the detection CIs.", rich_help_panel=SCORING
        ),
    ] = 1000,
    batch_size: Annotated[int, batch_size_option("Slices")] = 8,
    out: OutDir = Path("locate"),
    overwrite: Annotated[
        bool, overwrite_option("Redo inputs done before, whatever their settings.")
    ] = False,
    on_mismatch: Annotated[
        str, on_mismatch_option("An input done before with other settings")
    ] = "redo",
) -> None:
    """Lesion candidates: per slice and joined in 3-D, with size, score and Couinaud segment.

    Writes OUT/candidates.csv, OUT/locate.json and per input OUT/<name>/ (candidates.nii.gz on
    the input's grid, overlays/, CSVs, status.json); inputs done before with the same settings
    are kept.
    """
    from oncoscope.ct.couinaud import parse_vessel_labels
    from oncoscope.errors import InvalidOptionError
    from oncoscope.io.volumes import parse_spacing_mm
    from oncoscope.locate.run import LocateOptions
    from oncoscope.locate.run import locate as run_locate

    with user_errors(out=out):
        source = ctx.get_parameter_source("beyond_liver_mm")
        if liver_mask is not None and source is not None and source.name != "DEFAULT":
            raise InvalidOptionError(
                "--beyond-liver-mm applies to the EM liver ROI; a --liver-mask is exact"
            )
        options = options_from(
            LocateOptions,
            ctx,
            vessel_labels=parse_vessel_labels(vessel_labels) if vessel_labels else None,
            spacing_mm=parse_spacing_mm(spacing_mm) if spacing_mm else None,
        )
    progress = progress_bar()  # started at the first input: refusals before it print one line
    task = progress.add_task("inputs", total=None)

    def on_item(path: str, problem: str | None, total: int) -> None:
        progress.start()
        progress.update(task, total=total, advance=1, description=Path(path).name)

    try:
        with user_errors():
            report = run_locate(
                checkpoint, inputs or [], out, options, data=data, split=split, on_item=on_item
            )
    finally:
        progress.stop()
    choice = report.threshold
    if choice is not None:
        console.print(f"threshold {choice.threshold:g} from {choice.source}")
    for name, summary in report.summaries.items():
        kept = " (done before, kept)" if summary.get("skipped") else ""
        console.print(f"{name}: {summary['candidates']} candidate(s){kept}")
        note = (summary.get("couinaud") or {}).get("approximate")
        if note and summary["candidates"]:
            error_console.print(
                f"warning: {name}: Couinaud segments are approximate (no landmarks or vessel "
                "labels)",
                highlight=False,
            )
    if report.detection is not None:
        first = report.detection["froc"][0]
        console.print(
            f"detection: sensitivity {first['sensitivity']['value']}, false positives per "
            f"volume {first['false_positives_per_volume']['value']} "
            f"({report.detection['lesions']} lesions in {report.detection['volumes']} volumes); "
            f"{report.detection['lesions_split']} lesion(s) split among candidates, "
            f"{report.detection['candidates_joined']} candidate(s) joining lesions"
        )
    console.print(f"candidates: {out / 'candidates.csv'}")
    console.print(f"summary:    {out / 'locate.json'}")
    exit_on_failures(report.failures, "input(s)")
