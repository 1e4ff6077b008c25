"""``oncoscope locate``: lesion candidates in CT volumes or slices, from a slice classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import (
    SpacingMm,
    console,
    error_console,
    exit_on_failures,
    finite_number,
    positive_number,
    progress_bar,
    user_errors,
)


def register(app: typer.Typer) -> None:
    """Add the ``locate`` command to the app."""
    app.command("locate")(locate)


def locate(
    checkpoint: Annotated[Path, typer.Argument(help="A CT slice classifier checkpoint.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="CT volumes (NIfTI, MHA/NRRD, DICOM folders), slice PNGs or folders."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("locate"),
    data: Annotated[
        Path | None, typer.Option(help="A manifest whose --split slices are located too.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            callback=finite_number,
            help="Map threshold in (0, 1) (default: the one `evaluate --localization` "
            "recorded beside the checkpoint).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="CAM method (default: the one the threshold was picked for)."),
    ] = None,
    min_prob: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Slices with a lower tumour probability get no candidates."
        ),
    ] = 0.5,
    small_mm: Annotated[
        float,
        typer.Option(
            callback=positive_number,
            help="Candidates at most this largest in-plane diameter (mm) are small.",
        ),
    ] = 20.0,
    liver_mask: Annotated[
        Path | None,
        typer.Option(
            help="Liver segmentation (labels >= 1) on the volume's grid, or a folder of them "
            "(segmentation-N for volume-N); default: the EM liver ROI."
        ),
    ] = None,
    landmarks: Annotated[
        Path | None,
        typer.Option(help="Couinaud landmarks JSON (as `ct couinaud`), or a folder of them."),
    ] = None,
    vessel_labels: Annotated[
        str | None,
        typer.Option(
            help="Vessel labels of --liver-mask, e.g. ivc=3,hepatic_veins=4,portal_vein=5."
        ),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Ground-truth segmentation (tumour = 2) on the volume's grid, or a folder of "
            "them: lesion-level detection scores."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per forward pass.")] = 8,
    overwrite: Annotated[
        bool, typer.Option(help="Redo inputs done before, whatever their settings.")
    ] = False,
    on_mismatch: Annotated[
        str,
        typer.Option(
            help="An input done before with other settings: redo it, or error (refuse it, "
            "naming what differs)."
        ),
    ] = "redo",
    resamples: Annotated[
        int, typer.Option(min=1, help="Bootstrap resamples of the detection CIs.")
    ] = 1000,
    spacing_mm: SpacingMm = None,
) -> None:
    """Lesion candidates: per slice and joined in 3-D, with size, score and Couinaud segment.

    Writes OUT/candidates.csv, OUT/locate.json and per input OUT/<name>/ (candidates.nii.gz on
    the input's grid, overlays/, CSVs, status.json); inputs done before with the same settings
    are kept.
    """
    from oncoscope.ct.couinaud import parse_vessel_labels
    from oncoscope.io.volumes import parse_spacing_mm
    from oncoscope.locate.run import LocateOptions
    from oncoscope.locate.run import locate as run_locate

    with user_errors(out=out):
        options = LocateOptions(
            threshold=threshold,
            method=method,
            min_prob=min_prob,
            small_mm=small_mm,
            liver_mask=liver_mask,
            landmarks=landmarks,
            vessel_labels=parse_vessel_labels(vessel_labels) if vessel_labels else None,
            truth=truth,
            spacing_mm=parse_spacing_mm(spacing_mm) if spacing_mm else None,
            batch_size=batch_size,
            overwrite=overwrite,
            on_mismatch=on_mismatch,
            resamples=resamples,
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
            f"({report.detection['lesions']} lesions in {report.detection['volumes']} volumes)"
        )
    console.print(f"candidates: {out / 'candidates.csv'}")
    console.print(f"summary:    {out / 'locate.json'}")
    exit_on_failures(report.failures, "input(s)")
