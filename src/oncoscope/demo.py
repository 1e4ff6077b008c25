"""``oncoscope demo``: the CT and whole-slide paths on synthetic data, end to end.

Generates SYNTHETIC phantoms (never patient data), prepares a labelled, patient-split slice
dataset from them, and runs the seed-001 preprocessing chain on one tumour slice. Then writes a
SYNTHETIC whole-slide image (pyramidal tiled TIFF with a QuPath-style GeoJSON of its regions) and
tiles it with ``wsi tile`` (overlay of thumbnail, tissue mask and kept tiles saved).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from shapely.affinity import scale

from oncoscope.ct.chain_panel import (
    ChainOptions,
    ChainResult,
    load_reference_liver,
    load_slice,
    run_chain,
    save_chain,
)
from oncoscope.ct.couinaud import CouinaudResult, couinaud, save_couinaud
from oncoscope.ct.phantom import write_cohort
from oncoscope.ct.slice_dataset import PrepareOptions, PrepareReport, prepare_dataset
from oncoscope.ct.window import PRESETS
from oncoscope.errors import OncoscopeError
from oncoscope.evaluate.evaluation import EvaluationSettings, evaluate_checkpoint
from oncoscope.evaluate.report import ReportFigure, ReportSection, ReportTable
from oncoscope.explain.run import explain_images, manifest_images, manifest_lesion_masks
from oncoscope.inference.scale_search import search_scale, write_scale_outputs
from oncoscope.inference.slide_inference import SlideOptions, infer_slides
from oncoscope.locate.run import LocateOptions, LocateReport, locate
from oncoscope.pathology.annotations import Annotation, write_geojson
from oncoscope.pathology.synthetic import default_regions, write_synthetic_slide
from oncoscope.pathology.tile_dataset import TileOptions, TileReport, tile_slides
from oncoscope.train.config import resolve_config
from oncoscope.train.predict import predict_split
from oncoscope.train.run import RunResult
from oncoscope.train.run import train as train_run


@dataclass
class WsiDemoResult:
    """The synthetic slide, its annotations, and what ``wsi tile`` made of it."""

    slide: Path
    annotations: Path
    tiles: TileReport
    overlay: Path


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured."""

    phantoms: Path
    prepare: PrepareReport
    preprocess_dir: Path
    panel: Path
    chain: ChainResult
    wsi: WsiDemoResult
    training: TrainingOutcome | None = None
    tile_training: TrainingOutcome | None = None
    analysis: AnalysisOutcome | None = None


@dataclass
class AnalysisOutcome:
    """What the demo made of its trained models: reports, maps, segments."""

    ct_report: Path
    tile_report: Path
    explain_csv: Path | None
    couinaud: list[Path]
    slide_folder: Path
    localization: dict[str, Any]
    located: LocateReport | None = None


#: The demo's CT recipe and the map it is explained and located with: EfficientNet-Lite0 cut
#: at stride 16 under a CAM head, read by SmoothGrad (input gradients at pixel resolution; its
#: plain CAM peaks beside the lesions, README "What is measured").
CT_RECIPE = "ct-cam"
CT_MAP = "smoothgrad"

#: Epochs of the demo's tile training (the ``quick`` recipe has 8): on the training slide's 51
#: tiles an epoch is 4 steps, and at 8 epochs the held-out slide's accuracy was 0.59-0.94
#: across seeds, precisions and CPUs (normal taken for stroma); at 16 it was 1.00 on every one
#: measured (benchmarks/README.md, "The demo's tile training").
TILE_EPOCHS = 16

#: Magnifications the demo's scale search tries around the tiles' x10 (the model sees x8.75).
DEMO_SCALES = (5.0, 6.25, 7.5, 8.75, 10.0, 12.5, 15.0, 20.0)


@dataclass
class TrainingOutcome:
    """The demo's quick training run and how it did on the held-out (test) patients."""

    run: RunResult
    test_images: int
    test_accuracy: float
    test_balanced_accuracy: float


def run_demo(
    out_dir: str | Path,
    *,
    n_patients: int = 16,
    lesion_free: int | None = None,
    seed: int = 0,
    workers: int = 1,
    train: bool = True,
    step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir`` (``phantoms/``, ``ct/``, ``preprocess/``, ``wsi/``, ``run/``).

    The cohort has ``lesion_free`` patients without lesions (default a quarter), so every split
    holds patients of both kinds and the patient-level figures are defined. With ``train``,
    the ``ct-cam`` recipe (EfficientNet-Lite0 from its offline ImageNet weights, cut at stride
    16 under a CAM head) is trained on the slice dataset, scored, and its SmoothGrad map
    scored as a lesion detector on the test patients, whom it never saw; ``locate`` finds the
    lesions of a held-out patient's volume; the ``quick`` recipe is trained on the slide
    tiles.
    """
    out = Path(out_dir)
    say = step or (lambda _: None)
    free = n_patients // 4 if lesion_free is None else lesion_free
    say(f"generating {n_patients} synthetic phantoms ({free} without lesions)")
    phantoms = out / "phantoms"
    write_cohort(phantoms, n_patients, shape=(40, 256, 256), lesion_free=free, seed=seed)
    say("ct prepare: labelling and writing slices")
    options = PrepareOptions(windows=(PRESETS["liver"],), healthy_per_patient=10, seed=seed)
    report = prepare_dataset(phantoms, out / "ct", options, workers=workers)
    manifest = pd.read_csv(out / "ct" / "manifest.csv", dtype={"patient_id": str})
    tumour = manifest[manifest["label"] == "tumour"].sort_values("max_section_mm")
    example = tumour.iloc[-1] if len(tumour) else manifest.iloc[len(manifest) // 2]
    pid, index = str(example["patient_id"]), int(example["slice_index"])
    say(f"ct preprocess: patient {pid}, slice {index}")
    volume = phantoms / f"volume-{pid}.nii.gz"
    hu, pixel_mm, _, source = load_slice(volume, index, PRESETS["liver"])
    reference = load_reference_liver(phantoms / f"segmentation-{pid}.nii.gz", index)
    chain = run_chain(
        hu,
        pixel_mm,
        PRESETS["liver"],
        ChainOptions(size_px=256, noise="salt-pepper", noise_amount=0.03, seed=seed),
        reference_liver=reference,
        source=source,
    )
    preprocess_dir = out / "preprocess"
    panel = save_chain(chain, preprocess_dir)
    say("wsi tile: a synthetic slide with annotated tumour, stroma and normal regions")
    wsi = run_wsi_demo(out / "wsi", seed=seed)
    result = DemoResult(phantoms, report, preprocess_dir, panel, chain, wsi)
    if train:
        say(
            "train: ct-cam recipe (EfficientNet-Lite0 to stride 16, CAM head) on the train patients"
        )
        result.training = _train_and_score(
            out / "ct" / "manifest.csv", out / "run", seed, workers, recipe=CT_RECIPE
        )
        say(f"train: quick recipe, {TILE_EPOCHS} epochs, on the tiles of the training slide")
        result.tile_training = _train_and_score(
            wsi.tiles.out_dir / "manifest.csv",
            out / "wsi" / "run",
            seed,
            workers,
            recipe="quick",
            epochs=TILE_EPOCHS,
        )
        result.analysis = _analyse(out, result, seed, say)
    return result


def _analyse(
    out: Path, result: DemoResult, seed: int, say: Callable[[str], None]
) -> AnalysisOutcome:
    """Evaluate both models, explain the CT test slices, place the test patients' lesions in
    Couinaud segments, and classify the held-out slide with a scale search beside it."""
    assert result.training is not None and result.tile_training is not None
    ct_checkpoint = result.training.run.best_checkpoint
    tile_checkpoint = result.tile_training.run.best_checkpoint
    ct_manifest = out / "ct" / "manifest.csv"
    tile_manifest = result.wsi.tiles.out_dir / "manifest.csv"
    say("ct couinaud: the test patients' lesions in Couinaud segments")
    frame = pd.read_csv(ct_manifest, dtype={"patient_id": str})
    segments: list[Path] = []
    found_segments: list[tuple[str, CouinaudResult, Path]] = []
    for pid in sorted(set(frame.loc[frame["split"] == "test", "patient_id"])):
        segmentation = result.phantoms / f"segmentation-{pid}.nii.gz"
        found = couinaud(
            result.phantoms / f"volume-{pid}.nii.gz",
            segmentation,
            landmarks_path=result.phantoms / f"phantom-{pid}.json",
        )
        if found.lesions:
            written = save_couinaud(found, segmentation, out / "couinaud" / f"patient-{pid}")
            segments.append(written["json"])
            found_segments.append((pid, found, written["figure"]))
    located: list[LocateReport] = []

    def locate_held_out(_: dict[str, Any]) -> ReportSection:
        """``locate`` on the held-out patient with the most lesions (its threshold was just
        picked on the validation patients and recorded beside the checkpoint)."""
        pid = _held_out_patient(frame)
        say(f"locate: lesion candidates in the volume of held-out patient {pid}")
        report = locate(
            ct_checkpoint,
            [result.phantoms / f"volume-{pid}.nii.gz"],
            out / "locate",
            LocateOptions(
                landmarks=result.phantoms / f"phantom-{pid}.json",
                truth=result.phantoms / f"segmentation-{pid}.nii.gz",
                overwrite=True,  # a demo rerun replaces its own
                seed=seed,
            ),
        )
        if report.failures:
            raise OncoscopeError(f"locate failed: {report.failures[0][1]}", report.failures[0][0])
        located.append(report)
        return locate_section(pid, report)

    say("evaluate: metrics with patient-bootstrap CIs and weak localisation (SmoothGrad)")
    ct_eval = evaluate_checkpoint(
        ct_checkpoint,
        ct_manifest,
        out / "evaluation" / "ct",
        EvaluationSettings(seed=seed),
        localization=CT_MAP,
        sections=[couinaud_section(found_segments), locate_held_out],
    )
    say("evaluate: the tile classifier on the held-out slide")
    tile_eval = evaluate_checkpoint(
        tile_checkpoint, tile_manifest, out / "evaluation" / "wsi", EvaluationSettings(seed=seed)
    )
    say("explain: the SmoothGrad map of every test slice")
    paths, keys, labels = manifest_images(ct_manifest, "test")
    explained = explain_images(
        ct_checkpoint,
        paths,
        out / "explain",
        method=CT_MAP,
        keys=keys,
        labels=labels,
        lesion_masks=manifest_lesion_masks(ct_manifest, "test"),
    )
    tiles = pd.read_csv(tile_manifest)
    test_slide = Path(str(tiles.loc[tiles["split"] == "test", "source"].iloc[0]))
    say(f"slide: patch-wise classification of the held-out slide {test_slide.name}")
    inference = out / "wsi" / "inference"
    report = infer_slides(
        tile_checkpoint,
        [test_slide],
        inference,
        SlideOptions(stride=0.5),
        annotations=test_slide.with_suffix(".geojson"),
    )
    if report.failures:
        raise OncoscopeError(f"slide inference failed: {report.failures[0][1]}", test_slide)
    folder = inference / test_slide.stem
    say("scale: the magnification search of seed 003 on the held-out slide")
    searched = search_scale(tile_checkpoint, test_slide, scales=DEMO_SCALES, points=30, seed=seed)
    write_scale_outputs(searched, folder)
    return AnalysisOutcome(
        ct_eval.report_html,
        tile_eval.report_html,
        explained.csv,
        segments,
        folder,
        ct_eval.metrics.get("localization", {}),
        located[0] if located else None,
    )


def _held_out_patient(manifest: pd.DataFrame) -> str:
    """The test patient with the most lesions (ties: the lowest id)."""
    test = manifest[manifest["split"] == "test"]
    lesions = test.groupby("patient_id")["lesion_count"].max()
    with_lesions = lesions[lesions > 0]
    if with_lesions.empty:
        raise OncoscopeError("no test patient has a lesion; run the demo with more --patients")
    return str(sorted(with_lesions.index, key=lambda p: (-int(with_lesions[p]), int(p)))[0])


def _train_and_score(
    manifest: Path,
    run_dir: Path,
    seed: int,
    workers: int,
    *,
    recipe: str,
    epochs: int | None = None,
) -> TrainingOutcome:
    config = resolve_config(
        recipe=recipe,
        overrides={
            "data": manifest,
            "out": run_dir,
            "seed": seed,
            "num_workers": workers,
            "epochs": epochs,
        },
    )
    run = train_run(config, overwrite=True, progress_bar=False)  # a demo rerun replaces its own
    predictions = predict_split(run.best_checkpoint, manifest, "test")
    correct = predictions["pred"] == predictions["label"]
    per_class = [
        float(correct[predictions["label"] == c].mean()) for c in predictions["label"].unique()
    ]
    return TrainingOutcome(
        run, len(predictions), float(correct.mean()), sum(per_class) / len(per_class)
    )


def run_wsi_demo(out_dir: str | Path, *, seed: int = 0) -> WsiDemoResult:
    """Write three SYNTHETIC slides (the same tissue classes laid out differently) with their
    GeoJSON into ``out_dir/slides/`` and tile them into ``out_dir/tiles/`` (256 px at x10,
    overlap 0.3, 20 random tiles per slide, majority label >= 0.5), one slide per split."""
    out = Path(out_dir)
    size_wh = (8192, 6144)
    slides = []
    for number, (x_factor, y_factor) in enumerate(((1, 1), (-1, 1), (1, -1)), start=1):
        regions = [
            Annotation(
                r.label,
                scale(r.geometry, x_factor, y_factor, origin=(size_wh[0] / 2, size_wh[1] / 2)),
            )
            for r in default_regions(size_wh)
        ]
        slide = write_synthetic_slide(
            out / "slides" / f"synthetic-{number}.tif", size_wh, regions=regions
        )
        write_geojson(slide.regions, out / "slides" / f"synthetic-{number}.geojson")
        slides.append(slide.path)
    options = TileOptions(
        size_px=256, magnification=10, overlap=0.3, random=20, ratio=(1, 1, 1), seed=seed
    )
    report = tile_slides(slides, out / "tiles", options, annotations=out / "slides")
    overlay = out / "tiles" / "synthetic-1" / "overlay.png"
    return WsiDemoResult(slides[0], out / "slides" / "synthetic-1.geojson", report, overlay)


def couinaud_section(found: list[tuple[str, CouinaudResult, Path]]) -> ReportSection:
    """A report section listing each test patient's lesions with their Couinaud segment."""
    rows = [
        [
            f"patient {pid}, lesion {lesion.lesion_id}",
            lesion.segment,
            f"{lesion.max_diameter_mm:.1f}",
            f"{lesion.volume_ml:.2f}",
            ", ".join(f"{name} {share:.0%}" for name, share in lesion.fractions.items()),
            result.landmarks.method,
        ]
        for pid, result, _ in found
        for lesion in result.lesions
    ]
    table = ReportTable(
        "Lesions of the test patients",
        ["lesion", "segment", "max diameter (mm)", "volume (ml)", "voxels per segment", "planes"],
        rows,
    )
    figures = [ReportFigure(f"Couinaud segments, patient {pid}", path) for pid, _, path in found]
    return ReportSection(
        "Couinaud segments",
        paragraphs=[
            "Each lesion (connected tumour component of the reference segmentation) is placed in "
            "the Couinaud segment holding most of its voxels; the planes run through the IVC "
            "axis, the hepatic veins and the portal bifurcation (landmarks from the phantom)."
        ],
        tables=[table],
        figures=figures,
    )


def locate_section(patient_id: str, report: LocateReport) -> ReportSection:
    """A report section with ``locate``'s 3-D candidates in a held-out patient's volume, their
    Couinaud segments, and the lesion-level detection against the phantom's segmentation."""
    rows = [
        [
            f"candidate {row['candidate_id']}",
            f"{row['first_slice']}-{row['last_slice']}",
            f"{float(row['diameter_mm']):.1f}",
            f"{float(row['volume_ml']):.2f}",
            f"{float(row['score']):.3f}",
            str(row["segment"]),
            str(row["segment_method"]),
        ]
        for row in report.rows
    ]
    table = ReportTable(
        f"Candidates in the volume of patient {patient_id}",
        ["candidate", "slices", "max diameter (mm)", "volume (ml)", "score", "segment", "planes"],
        rows,
        note="" if rows else "no candidate above the threshold",
    )
    summary: dict[str, str] = {}
    if report.threshold is not None:
        summary["threshold"] = (
            f"{report.threshold.threshold:.3f} ({Path(report.threshold.source).name})"
        )
    detection = report.detection or {}
    if detection.get("froc"):
        first = detection["froc"][0]
        sensitivity = first["sensitivity"]["value"]
        false = first["false_positives_per_volume"]["value"]
        summary["true lesions found"] = (
            f"{sensitivity:.0%} of {detection['lesions']}" if sensitivity is not None else "none"
        )
        summary["false candidates"] = f"{false:g}" if false is not None else "-"
    figures = [
        ReportFigure(f"Slice {path.stem.split('-')[-1]}", path)
        for path in _candidate_overlays(report.out_dir, report.rows)
    ]
    return ReportSection(
        "Lesions located in a held-out volume (oncoscope locate)",
        paragraphs=[
            "The model's map on every liver slice of the volume (liver from the seed-001 EM "
            "ROI), thresholded at the value picked on the validation patients, joined across "
            "adjacent slices into 3-D candidates, each placed in its Couinaud segment. The "
            "phantom's own segmentation is used only to score the candidates (a hit shares a "
            "voxel with a true lesion)."
        ],
        summary=summary,
        tables=[table],
        figures=figures,
    )


def _candidate_overlays(out_dir: Path, rows: list[dict[str, Any]], most: int = 3) -> list[Path]:
    """The overlay PNGs of the slices through the middle of the best-scoring candidates (each
    in its input's folder of ``out_dir``, as ``locate`` named it in the row)."""
    chosen = sorted(rows, key=lambda r: -float(r["score"]))[:most]
    paths = {
        out_dir
        / str(r["input"])
        / "overlays"
        / f"slice-{(int(r['first_slice']) + int(r['last_slice'])) // 2:04d}.png"
        for r in chosen
    }
    return [path for path in sorted(paths) if path.is_file()]
