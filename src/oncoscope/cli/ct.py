"""``oncoscope ct ...``: slice datasets, the preprocessing chain, phantoms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from oncoscope.cli._common import (
    console,
    counted_progress,
    error_console,
    exit_on_failures,
    options_from,
    print_table,
    progress_bar,
    user_errors,
)
from oncoscope.cli.options import (
    INPUT,
    OUTPUTS,
    OutDir,
    SpacingMm,
    finite_option,
    landmarks_option,
    overwrite_option,
    parallel_option,
    seed_option,
    strict_option,
    vessel_labels_option,
)

PREPROCESSING = "Preprocessing"
SELECTION = "Slice selection"

ct_app = typer.Typer(
    help="CT volumes: slice datasets, preprocessing, phantoms, EM lesions, Couinaud segments.",
    no_args_is_help=True,
)


@ct_app.command("prepare")
def ct_prepare(
    ctx: typer.Context,
    volumes_dir: Annotated[Path, typer.Argument(help="Folder of volume-N / segmentation-N pairs.")],
    *,
    volume_prefix: Annotated[
        str, typer.Option(help="File-name prefix of volumes.", rich_help_panel=INPUT)
    ] = "volume-",
    mask_prefix: Annotated[
        str, typer.Option(help="File-name prefix of masks.", rich_help_panel=INPUT)
    ] = "segmentation-",
    spacing_mm: SpacingMm = None,
    window: Annotated[
        str,
        typer.Option(
            help="HU window: preset (liver, abdomen, liver-narrow, soft-tissue, bone, lung), "
            "W/L such as 400/40, three comma-separated windows for RGB, or 'multi'.",
            rich_help_panel=PREPROCESSING,
        ),
    ] = "liver",
    size_px: Annotated[
        int | None,
        typer.Option(
            "--size",
            min=16,
            help="Resize slices to SIZE x SIZE pixels.",
            rich_help_panel=PREPROCESSING,
        ),
    ] = None,
    denoise: Annotated[
        str,
        typer.Option(
            help="Median denoising in HU: none, median (3 px) or median:SIZE.",
            rich_help_panel=PREPROCESSING,
        ),
    ] = "none",
    roi: Annotated[
        str,
        typer.Option(
            help="Liver ROI; outside it is set to the window's low end: none, em (Gaussian "
            "mixture on HU) or mask (the segmentation's liver label).",
            rich_help_panel=PREPROCESSING,
        ),
    ] = "none",
    on_empty_roi: Annotated[
        str,
        typer.Option(
            help="A slice whose ROI is empty: keep (unmasked) or drop.",
            rich_help_panel=PREPROCESSING,
        ),
    ] = "keep",
    small_mm: Annotated[
        float,
        finite_option(
            "Small lesion: largest in-plane diameter <= this (mm).", min=0.0, panel=SELECTION
        ),
    ] = 20.0,
    only_small: Annotated[
        bool,
        typer.Option(
            help="Keep only tumour slices whose lesions are all small.", rich_help_panel=SELECTION
        ),
    ] = False,
    healthy_per_patient: Annotated[
        int,
        typer.Option(
            min=0,
            help="Healthy liver slices per patient, sampled evenly.",
            rich_help_panel=SELECTION,
        ),
    ] = 20,
    out: OutDir,
    split: Annotated[
        str, typer.Option(help="Patient shares train:val:test.", rich_help_panel=OUTPUTS)
    ] = "3:1:1",
    seed: Annotated[int, seed_option("the patient split")] = 0,
    workers: Annotated[int, parallel_option("Volumes read in parallel.")] = 1,
    strict: Annotated[bool, strict_option("volume")] = False,
) -> None:
    """Labelled transverse slices (PNG) and a patient-split manifest.csv from LiTS-style volumes."""
    from oncoscope.ct.chain import ROI_SOURCES, RoiSource, SliceChain, parse_denoise
    from oncoscope.ct.slice_dataset import PrepareOptions, prepare_dataset
    from oncoscope.ct.window import parse_windows
    from oncoscope.dataset.split import parse_ratio
    from oncoscope.errors import InvalidOptionError
    from oncoscope.io.volumes import parse_spacing_mm

    with user_errors(out=out):
        if roi not in ROI_SOURCES:
            raise InvalidOptionError(f"--roi '{roi}' is not one of {', '.join(ROI_SOURCES)}")
        if on_empty_roi not in ("keep", "drop"):
            raise InvalidOptionError(f"--on-empty-roi '{on_empty_roi}' is not keep or drop")
        options = options_from(
            PrepareOptions,
            ctx,
            windows=parse_windows(window),
            ratio=parse_ratio(split),
            spacing_mm=parse_spacing_mm(spacing_mm) if spacing_mm else None,
            chain=SliceChain(parse_denoise(denoise), cast(RoiSource, roi), seed=seed),
        )
        with counted_progress("volumes") as done:
            report = prepare_dataset(
                volumes_dir,
                out,
                options,
                workers=workers,
                strict=strict,
                on_case_done=lambda _pid, _error, total: done(total),
            )
    for note in report.notes:
        console.print(note, highlight=False)
    for event in report.empty_roi:
        error_console.print(
            f"warning: {event['volume']} slice {event['slice_index']}: liver ROI is empty on "
            f"this slice; {event['action']}",
            highlight=False,
        )
    if report.roi_dice is not None:
        d = report.roi_dice
        console.print(
            f"EM liver ROI vs liver label, Dice over {d['slices']} slices: min {d['min']:.3f}, "
            f"quartiles {d['q1']:.3f} / {d['median']:.3f} / {d['q3']:.3f}, max {d['max']:.3f}, "
            f"mean {d['mean']:.3f}; {d['below_0.5']} below 0.5",
            highlight=False,
        )
    if report.manifest is not None:
        print_split_table(report.split_table())
        console.print(f"wrote {len(report.rows)} slices and {report.manifest}")
    exit_on_failures(report.failures, "input(s)")


@ct_app.command("preprocess")
def ct_preprocess(
    source: Annotated[
        Path, typer.Argument(help="A volume (NIfTI, DICOM folder or file) or an 8-bit slice image.")
    ],
    out: OutDir,
    slice_index: Annotated[
        list[int] | None,
        typer.Option(
            "--slice", help="Slice index of a volume; repeat for several (default: middle)."
        ),
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option(min=1, help="N slices spread over the liver (--mask, else the EM ROI)."),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="LiTS segmentation to score the liver ROI against.")
    ] = None,
    window: Annotated[
        str, typer.Option(help="Display window (and the window an 8-bit image was made with).")
    ] = "liver",
    size: Annotated[int | None, typer.Option(min=16, help="Resize to SIZE x SIZE pixels.")] = 256,
    noise: Annotated[
        str, typer.Option(help="Noise to inject: none, gaussian, salt-pepper.")
    ] = "none",
    noise_amount: Annotated[
        float, finite_option("HU std (gaussian) or pixel fraction (salt-pepper).", min=0.0)
    ] = 0.0,
    median_size: Annotated[int, typer.Option(min=1, help="Median filter window, odd pixels.")] = 3,
    phase: Annotated[
        str, typer.Option(help="EM lesion step: hypodense or hyperdense lesions.")
    ] = "hypodense",
    seed: Annotated[int, seed_option("noise and EM")] = 0,
    spacing_mm: SpacingMm = None,
) -> None:
    """Seed-001 chain: resize, noise, median denoise, EM liver ROI, mask, EM lesions; a panel."""
    from oncoscope.ct.chain_panel import (
        ChainOptions,
        choose_slices,
        load_slices_with_reference,
        run_chain,
        save_chain,
        save_chains,
    )
    from oncoscope.ct.denoise import NOISE_KINDS, NoiseKind
    from oncoscope.ct.em_lesions import PHASES, Phase
    from oncoscope.ct.window import parse_window
    from oncoscope.errors import InvalidOptionError
    from oncoscope.io.volumes import parse_spacing_mm

    with user_errors(out=out):
        if noise not in NOISE_KINDS:
            raise InvalidOptionError(f"--noise '{noise}' is not one of {', '.join(NOISE_KINDS)}")
        if phase not in PHASES:
            raise InvalidOptionError(f"--phase '{phase}' is not one of {', '.join(PHASES)}")
        if slice_index and slices is not None:
            raise InvalidOptionError("give --slice (one or more) or --slices N, not both")
        hu_window = parse_window(window)
        spacing = parse_spacing_mm(spacing_mm) if spacing_mm else None
        if slices is not None:
            wanted: list[int | None] = list(
                choose_slices(source, slices, mask_path=mask, spacing_mm=spacing, seed=seed)
            )
        else:
            wanted = list(slice_index) if slice_index else [None]
        options = ChainOptions(
            size_px=size,
            noise=cast(NoiseKind, noise),
            noise_amount=noise_amount,
            median_size_px=median_size,
            seed=seed,
            lesion_phase=cast(Phase, phase),
        )
        results = []
        for hu, pixel_mm, index, description, reference in load_slices_with_reference(
            source,
            wanted,
            hu_window,
            mask,
            spacing_mm=spacing,
        ):
            results.append(
                run_chain(
                    hu,
                    pixel_mm,
                    hu_window,
                    options,
                    reference_liver=reference,
                    source=description,
                    slice_index=index,
                )
            )
        panel = save_chain(results[0], out) if len(results) == 1 else save_chains(results, out)
    for result in results:
        if result.roi_empty:
            error_console.print(
                f"warning: {result.source}: liver ROI is empty on this slice", highlight=False
            )
    steps = len(results[0].steps)
    console.print(f"wrote {steps} steps of {len(results)} slice(s) to {out} and the panel {panel}")
    for result in results:
        if result.roi_dice is not None:
            console.print(f"{result.source}: liver ROI Dice against {mask}: {result.roi_dice:.3f}")


@ct_app.command("phantom")
def ct_phantom(
    out: OutDir,
    patients: Annotated[int, typer.Option(min=1, help="Number of phantoms.")] = 6,
    slices: Annotated[int, typer.Option(min=8, help="Slices per volume.")] = 48,
    size: Annotated[int, typer.Option(min=32, help="Rows and columns per slice.")] = 256,
    lesion_free: Annotated[
        int, typer.Option(min=0, help="How many of the patients (the last ones) have no lesion.")
    ] = 0,
    seed: Annotated[int, seed_option("the phantoms")] = 0,
) -> None:
    """Write a SYNTHETIC LiTS-style cohort (volume-N / segmentation-N); never patient data."""
    from oncoscope.ct.phantom import write_cohort

    with user_errors(out=out):
        pairs = write_cohort(
            out, patients, shape=(slices, size, size), lesion_free=lesion_free, seed=seed
        )
    console.print(f"wrote {len(pairs)} synthetic phantom pairs to {out}")


@ct_app.command("couinaud")
def ct_couinaud(
    volume: Annotated[Path, typer.Argument(help="CT volume (NIfTI, DICOM folder, MHA, NRRD).")],
    segmentation: Annotated[
        Path, typer.Argument(help="Its segmentation: 0 background, 1 liver, 2 tumour (+ vessels).")
    ],
    out: OutDir,
    landmarks: Annotated[Path | None, landmarks_option()] = None,
    vessel_labels: Annotated[str | None, vessel_labels_option()] = None,
    spacing_mm: SpacingMm = None,
) -> None:
    """Couinaud segment (I-VIII, IVa/IVb) of every lesion, by planes through the liver's vessels."""
    from oncoscope.ct.couinaud import couinaud, parse_vessel_labels, save_couinaud
    from oncoscope.io.volumes import parse_spacing_mm

    with user_errors(out=out):
        vessels = parse_vessel_labels(vessel_labels) if vessel_labels else None
        result = couinaud(
            volume,
            segmentation,
            landmarks_path=landmarks,
            vessel_labels=vessels,
            spacing_mm=parse_spacing_mm(spacing_mm) if spacing_mm else None,
        )
        paths = save_couinaud(result, segmentation, out)
    table = Table(title=f"Couinaud segments ({result.landmarks.method})")
    for column in ("lesion", "segment", "diameter mm", "volume ml", "fractions"):
        table.add_column(column, justify="left" if column in ("segment", "fractions") else "right")
    for lesion in result.lesions:
        table.add_row(
            str(lesion.lesion_id),
            lesion.segment,
            f"{lesion.max_diameter_mm:.1f}",
            f"{lesion.volume_ml:.2f}",
            ", ".join(f"{name} {share:.0%}" for name, share in lesion.fractions.items()),
        )
    console.print(table)
    if result.landmarks.method == "approximate":
        console.print(
            "APPROXIMATE: no --landmarks or --vessel-labels; planes placed from the liver's shape"
        )
    console.print(f"wrote {paths['json']}, {paths['segments']} and {paths['figure']}")


@ct_app.command("segment-em")
def ct_segment_em(
    volume: Annotated[Path, typer.Argument(help="CT volume (NIfTI, DICOM folder, MHA, NRRD).")],
    out: OutDir,
    liver_mask: Annotated[
        Path | None,
        typer.Option(help="LiTS segmentation whose labels 1 and 2 are the liver ROI (else EM)."),
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="LiTS segmentation to score against (label 2 = tumour).")
    ] = None,
    phase: Annotated[
        str, typer.Option(help="hypodense (lesions darker than liver) or hyperdense (brighter).")
    ] = "hypodense",
    components: Annotated[int, typer.Option(help="Gaussian mixture components, 2-6.")] = 3,
    min_contrast_hu: Annotated[
        float, finite_option("Lesion component mean at least this far from the liver's, HU.")
    ] = 15.0,
    min_area_mm2: Annotated[
        float, finite_option("Keep lesions whose largest in-plane section is >= this, mm².")
    ] = 30.0,
    margin_mm: Annotated[
        float, finite_option("ROI rim left out of the fit (partial volume), mm.")
    ] = 3.0,
    opening_mm: Annotated[float, finite_option("In-plane opening radius, mm.")] = 2.0,
    median_size: Annotated[int, typer.Option(help="In-plane median filter, odd pixels.")] = 3,
    init_offset_hu: Annotated[
        float, finite_option("EM starts at the ROI's median HU and this far below/above.")
    ] = 40.0,
    small_mm: Annotated[
        float, finite_option("Flag lesions with diameter <= this (mm) as small.", min=0.0)
    ] = 20.0,
    seed: Annotated[int, seed_option("the sampling and of EM")] = 0,
    overwrite: Annotated[bool, overwrite_option("Replace earlier outputs in --out.")] = False,
    spacing_mm: SpacingMm = None,
) -> None:
    """Lesion candidates inside the liver by an EM Gaussian mixture on HU: label map and CSV."""
    from oncoscope.ct.em_lesions import (
        EMLesionOptions,
        Phase,
        check_outputs_free,
        save_segment_em,
        segment_em,
        slice_ranges,
    )
    from oncoscope.io.volumes import parse_spacing_mm

    with user_errors(out=out):
        options = EMLesionOptions(
            phase=cast(Phase, phase),
            n_components=components,
            init_offset_hu=init_offset_hu,
            min_contrast_hu=min_contrast_hu,
            min_area_mm2=min_area_mm2,
            margin_mm=margin_mm,
            opening_mm=opening_mm,
            median_size_px=median_size,
            seed=seed,
        )
        options.check()
        check_outputs_free(out, overwrite=overwrite)
        with progress_bar() as progress:
            task = progress.add_task("EM liver ROI, slices", total=None, visible=False)
            found = segment_em(
                volume,
                liver_mask_path=liver_mask,
                truth_path=truth,
                options=options,
                spacing_mm=parse_spacing_mm(spacing_mm) if spacing_mm else None,
                on_slice=lambda done, total: progress.update(
                    task, completed=done, total=total, visible=True
                ),
            )
        paths = save_segment_em(found, out, small_mm=small_mm)
    rows = found.lesion_rows(small_mm)
    table = Table(title=f"EM lesions ({phase}, liver from {found.liver_source})")
    for column in ("lesion", "diameter mm", "volume ml", "slices", "mean HU", "small"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            f"{row['max_diameter_mm']:.1f}",
            f"{row['volume_ml']:.2f}",
            f"{row['first_slice']}-{row['last_slice']}",
            f"{row['mean_hu']:.0f}",
            "yes" if row["small"] else "no",
        )
    console.print(table)
    empty = found.result.empty_roi_slices
    if empty:
        console.print(
            f"liver ROI empty on {len(empty)} of {found.volume.shape[0]} slices: "
            + ", ".join(slice_ranges(empty))
        )
    if found.result.mixture is not None and not found.result.mixture.lesion_components:
        console.print(
            f"no mixture component lies {min_contrast_hu:g} HU or more "
            f"{'below' if phase == 'hypodense' else 'above'} the parenchyma: no lesions"
        )
    if found.score is not None:
        score = found.score
        bins = ", ".join(f"{b.name} {b.detected}/{b.lesions}" for b in score.bins)
        console.print(
            f"against {truth}: Dice {score.dice:.3f}; detected {score.detected}/"
            f"{score.true_lesions} ({bins}); false positives {score.false_positives}"
        )
    console.print(f"wrote {paths['labels']}, {paths['csv']} and {paths['json']}")


def print_split_table(table: list[dict[str, Any]]) -> None:
    """The patient split of a slice dataset: patients, slices, tumour and healthy per split."""
    print_table("patient split", ("split", "patients", "slices", "tumour", "healthy"), table)
