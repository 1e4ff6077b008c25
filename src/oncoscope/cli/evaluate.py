"""``oncoscope evaluate`` and ``oncoscope compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncoscope.cli._common import console, exit_on_failures, user_errors
from oncoscope.cli.options import (
    INPUT,
    BatchSize,
    Checkpoint,
    OutDir,
    Workers,
    finite_option,
    seed_option,
)

Resamples = Annotated[
    int, typer.Option(min=1, help="Bootstrap resamples of patients/slides for the 95% CIs.")
]
Seed = Annotated[int, seed_option("the bootstrap")]
Data = Annotated[Path, typer.Option(help="manifest.csv holding the split.", rich_help_panel=INPUT)]
Split = Annotated[str, typer.Option(help="Split to score.", rich_help_panel=INPUT)]


def evaluate(
    checkpoint: Checkpoint,
    data: Data,
    out: OutDir,
    split: Split = "test",
    val_split: Annotated[
        str, typer.Option(help="Split the operating point is picked on ('none': skip).")
    ] = "val",
    resamples: Resamples = 1000,
    seed: Seed = 0,
    aggregate: Annotated[
        str, typer.Option(help="Group score from image probabilities: auto, max or mean.")
    ] = "auto",
    positive: Annotated[
        str | None, typer.Option(help="Positive class of a two-class task (default: second).")
    ] = None,
    target_sensitivity: Annotated[
        float | None,
        finite_option(
            "Pick the threshold reaching this validation sensitivity (not Youden).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    batch_size: BatchSize = 32,
    workers: Workers = 0,
    localization: Annotated[
        bool,
        typer.Option(
            "--localization",
            help="Also score weak localisation of the CAM against the manifest's lesion masks.",
        ),
    ] = False,
    cam_method: Annotated[
        str,
        typer.Option(help="CAM method of --localization (gradcam, gradcam++, cam, guided, ...)."),
    ] = "gradcam",
    bags: Annotated[
        Path | None,
        typer.Option(help="MIL checkpoints: the feature bags (default: those trained on)."),
    ] = None,
) -> None:
    """Metrics with 95% CIs (image and patient/slide level), figures and report.html."""
    from oncoscope.evaluate.evaluation import EvaluationSettings, evaluate_checkpoint
    from oncoscope.evaluate.report import format_estimate

    with user_errors(out=out):
        settings = EvaluationSettings(
            split=split,
            val_split=None if val_split.lower() == "none" else val_split,
            resamples=resamples,
            seed=seed,
            aggregation=aggregate,
            positive=positive,
            threshold_method="youden" if target_sensitivity is None else "sensitivity",
            target_sensitivity=target_sensitivity,
        )
        result = evaluate_checkpoint(
            checkpoint,
            data,
            out,
            settings,
            batch_size=batch_size,
            num_workers=workers,
            localization=cam_method if localization else None,
            bags=bags,
        )
    metrics = result.metrics
    for level, block in (("image", metrics), ("group", metrics["group_level"])):
        macro = block["macro"]
        console.print(
            f"{level} level: accuracy {format_estimate(macro['accuracy'])}, "
            f"AUROC {format_estimate(macro['auroc'])}, "
            f"sensitivity {format_estimate(macro['recall'])}"
        )
        if block["intervals"]["warning"]:
            console.print(f"  warning: {level}-level {block['intervals']['warning']}")
    if "localization" in metrics:
        record = metrics["localization"]
        estimates = record["intervals"]["estimates"]
        console.print(
            f"localisation ({cam_method}): pointing game "
            f"{format_estimate(estimates['pointing_game'])} (random point in the liver "
            f"{estimates['pointing_game_random_liver']['value']:.3f}), "
            f"PxAP {format_estimate(estimates['pxap'])}; 95% intervals over "
            f"{record['intervals']['patients']} patients"
        )
        if record["intervals"]["warning"]:
            console.print(f"  warning: localisation {record['intervals']['warning']}")
        patients = sorted(record.get("by_patient", []), key=lambda row: row["pxap"])
        if len(patients) > 1:
            lowest = patients[0]
            table = result.metrics_json.parent / "localization" / "localization_by_patient.csv"
            console.print(
                f"  lowest PxAP: patient {lowest['patient']} {lowest['pxap']:.3f} over its "
                f"{lowest['slices']} slices (every patient: {table})"
            )
        if record["threshold_record"]:
            console.print(
                f"localisation threshold {record['threshold']:g} recorded for `oncoscope "
                f"locate`: {record['threshold_record']}"
            )
        if record["threshold_record_note"]:
            console.print(f"  note: {record['threshold_record_note']}")
    console.print(f"metrics: {result.metrics_json}")
    console.print(f"report:  {result.report_html}")
    if result.skipped:
        console.print(
            f"skipped {len(result.skipped)} unreadable image(s): the figures above are without them"
        )
    exit_on_failures(result.skipped, "image(s)")


def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (or checkpoints).")],
    data: Data,
    out: OutDir,
    split: Split = "test",
    reference: Annotated[
        str | None, typer.Option(help="Model the others are compared with (default: first).")
    ] = None,
    resamples: Resamples = 1000,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    workers: Workers = 0,
    bags: Annotated[
        Path | None,
        typer.Option(help="MIL runs: the feature bags (default: those the first was trained on)."),
    ] = None,
    localization: Annotated[
        str | None,
        typer.Option(
            help="CT models: also compare their weak localisation with this explain method "
            "(guided, smoothgrad, cam, gradcam, ...) against the manifest's lesion masks.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Models side by side with CIs, and paired-bootstrap differences from a reference."""
    from oncoscope.evaluate.compare import compare_runs
    from oncoscope.evaluate.report import format_estimate

    with user_errors(out=out):
        result = compare_runs(
            run_dirs,
            data,
            out,
            split=split,
            reference=reference,
            resamples=resamples,
            seed=seed,
            batch_size=batch_size,
            num_workers=workers,
            bags=bags,
            localization=localization,
        )
    console.print(f"models: {', '.join(result.models)} (reference {result.reference})")
    if result.comparison["intervals"]["warning"]:
        console.print(
            f"warning: {result.comparison['intervals']['warning']}; no difference is marked *"
        )
    located = result.comparison.get("localization")
    if located is not None:
        for name, block in located["models"].items():
            console.print(
                f"{name}: pointing game {format_estimate(block['pointing_game'])}, "
                f"PxAP {format_estimate(block['pxap'])} ({located['method']})"
            )
        if located["warning"]:
            console.print(f"warning: localisation {located['warning']}")
    console.print(f"comparison: {result.comparison_json}, {result.comparison_csv}")
    console.print(f"report:     {result.report_html}")


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(evaluate)
    app.command()(compare)
