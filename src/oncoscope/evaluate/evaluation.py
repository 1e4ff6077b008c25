"""Evaluate a checkpoint on a manifest split: metrics with group-bootstrap intervals at image
and group level, a validation-picked operating point, figures, ``metrics.json`` and a report.

``evaluate_predictions`` does the numbers from prediction tables (no model needed);
``evaluate_checkpoint`` predicts, then writes everything into one folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from oncoscope.dataset.manifest import read_manifest
from oncoscope.dataset.split import SPLITS
from oncoscope.errors import InvalidOptionError, ManifestError, OncoscopeError
from oncoscope.evaluate.aggregate import (
    aggregate_groups,
    describe_aggregation,
    resolve_aggregation,
)
from oncoscope.evaluate.bootstrap import MIN_GROUPS_PER_CLASS, bootstrap, interval_trust, nest
from oncoscope.evaluate.metrics import Scores, classification_metrics, flatten
from oncoscope.evaluate.operating_point import OperatingPoint, pick_threshold
from oncoscope.evaluate.plots import (
    plot_calibration,
    plot_confusion,
    plot_precision_recall,
    plot_roc,
    plot_training_curves,
)
from oncoscope.evaluate.report import (
    Report,
    ReportFigure,
    ReportSection,
    ReportTable,
    write_report,
)
from oncoscope.evaluate.sections import (
    HOW_TO_READ,
    confusion_table,
    localization_section,
    metrics_table,
)
from oncoscope.io.atomic import atomic_path, write_json

if TYPE_CHECKING:
    from oncoscope.train.checkpoint import LoadedModel

#: Columns that may name the group of an image, in order of preference.
GROUP_COLUMNS = ("group", "patient_id", "slide")


@dataclass(frozen=True)
class EvaluationSettings:
    """Options of an evaluation (all written to ``metrics.json``).

    Attributes:
        split: the split scored.
        val_split: the split the operating point is picked on (``None``: no operating point).
        resamples: bootstrap resamples of groups.
        seed: bootstrap seed.
        aggregation: ``auto`` (max for two classes, mean for more), ``max`` or ``mean``.
        positive: the positive class of a two-class task (default: the second class).
        threshold_method: ``youden`` or ``sensitivity`` (with ``target_sensitivity``).
        target_sensitivity: the validation sensitivity to reach, for ``sensitivity``.
        confidence: coverage of the intervals.

    Raises:
        InvalidOptionError: a split name other than train/val/test, or ``val_split`` equal to
            ``split`` (a threshold picked on the split it is scored on would flatter the model).
    """

    split: str = "test"
    val_split: str | None = "val"
    resamples: int = 1000
    seed: int = 0
    aggregation: str = "auto"
    positive: str | None = None
    threshold_method: str = "youden"
    target_sensitivity: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        names = ", ".join(SPLITS)
        if self.split not in SPLITS:
            raise InvalidOptionError(f"unknown --split '{self.split}'; use one of {names}")
        if self.val_split is not None and self.val_split not in SPLITS:
            raise InvalidOptionError(
                f"unknown --val-split '{self.val_split}'; use one of {names} or none"
            )
        if self.val_split == self.split:
            raise InvalidOptionError(
                f"the operating point would be scored and picked on the same split "
                f"'{self.split}'; pass another --val-split, or --val-split none to skip it"
            )


@dataclass
class EvaluationResult:
    """Where an evaluation wrote its outputs, and the metrics."""

    out: Path
    metrics_json: Path
    report_html: Path
    predictions_csv: Path
    figures: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def group_column_of(frame: pd.DataFrame, preferred: str | None = None) -> str | None:
    """The column holding each image's patient/slide: ``preferred`` if present, else the first
    of :data:`GROUP_COLUMNS` in the frame, else ``None``."""
    if preferred and preferred in frame.columns:
        return preferred
    return next((c for c in GROUP_COLUMNS if c in frame.columns), None)


def scores_of(frame: pd.DataFrame, classes: list[str]) -> Scores:
    """Labels and ``prob_<class>`` columns of a prediction table as :class:`Scores`.

    Raises:
        ManifestError: a label outside ``classes`` or a missing probability column.
    """
    missing = [f"prob_{c}" for c in classes if f"prob_{c}" not in frame.columns]
    if missing:
        raise ManifestError(f"predictions lack columns {missing}")
    unknown = sorted(set(frame["label"].astype(str)) - set(classes))
    if unknown:
        raise ManifestError(f"labels {unknown} are not among the classes {classes}")
    labels = [classes.index(str(v)) for v in frame["label"]]
    return Scores.build(labels, frame[[f"prob_{c}" for c in classes]].to_numpy(), classes)


def positive_index(classes: list[str], positive: str | None) -> int:
    """Index of the positive class: ``positive`` if given, else the second class.

    Raises:
        InvalidOptionError: ``positive`` is not a class.
    """
    if positive is None:
        return 1 if len(classes) > 1 else 0
    if positive not in classes:
        raise InvalidOptionError(f"positive class '{positive}' is not one of {classes}")
    return classes.index(positive)


def metrics_with_ci(
    scores: Scores,
    groups: Any,
    settings: EvaluationSettings,
    *,
    threshold: float | None = None,
    positive: int = 1,
) -> dict[str, Any]:
    """:func:`classification_metrics` with each figure as ``{"value", "ci_low", "ci_high"}``,
    the interval from a bootstrap of ``groups`` (one entry per row of ``scores``)."""

    def statistic(indices: Any) -> dict[tuple[str, ...], float | None]:
        return flatten(
            classification_metrics(scores.subset(indices), threshold=threshold, positive=positive)
        )

    estimates = bootstrap(
        statistic,
        groups,
        n_resamples=settings.resamples,
        seed=settings.seed,
        confidence=settings.confidence,
    )
    block = nest(estimates)
    point = classification_metrics(scores, threshold=threshold, positive=positive)
    block["confusion_matrix"] = point["confusion_matrix"]
    return block


def _operating_point(
    test: Scores,
    test_groups: Any,
    val: Scores | None,
    settings: EvaluationSettings,
    positive: int,
) -> tuple[dict[str, Any] | None, str | None]:
    if len(test.classes) != 2:
        return None, "an operating point applies to two-class tasks only"
    if settings.val_split is None:
        return None, "--val-split none: no threshold picked"
    if val is None:
        return None, f"no {settings.val_split} split to pick a threshold on"
    try:
        point: OperatingPoint = pick_threshold(
            val.labels == positive,
            val.probabilities[:, positive],
            method=settings.threshold_method,
            target_sensitivity=settings.target_sensitivity,
        )
    except InvalidOptionError:
        raise
    except OncoscopeError as error:
        return None, f"{settings.val_split} split: {error.message}"
    block = metrics_with_ci(
        test, test_groups, settings, threshold=point.threshold, positive=positive
    )
    return {
        "picked_on": settings.val_split,
        "positive_class": test.classes[positive],
        **point.to_dict(),
        **block,
    }, None


def _level(
    test: Scores,
    test_groups: Any,
    val: Scores | None,
    settings: EvaluationSettings,
    positive: int,
) -> dict[str, Any]:
    block = metrics_with_ci(test, test_groups, settings)
    block["intervals"] = interval_trust(test.labels, test_groups, test.classes)
    operating, note = _operating_point(test, test_groups, val, settings, positive)
    block["operating_point"] = operating
    if note:
        block["operating_point_note"] = note
    return block


def evaluate_predictions(
    test: pd.DataFrame,
    classes: list[str],
    settings: EvaluationSettings,
    *,
    val: pd.DataFrame | None = None,
    group_column: str | None = None,
) -> dict[str, Any]:
    """Image- and group-level metrics with intervals from prediction tables.

    Args:
        test: rows with ``label`` and ``prob_<class>`` (as :func:`predict_split` returns) and,
            ideally, a group column.
        classes: class names in the model's order.
        settings: see :class:`EvaluationSettings`.
        val: validation predictions, for the operating point of a two-class task.
        group_column: the patient/slide column (default: found with :func:`group_column_of`).

    Returns:
        ``{"n_images", "n_groups", "macro", "classes", "confusion_matrix", "intervals",
        "operating_point", "group_level": {...the same per group..., "aggregation"},
        "settings"}``; ``intervals`` says whether the intervals can be trusted (see
        :func:`oncoscope.evaluate.bootstrap.interval_trust`).

    Raises:
        OncoscopeError: labels and predictions that do not match, bad options.
    """
    positive = positive_index(classes, settings.positive)
    aggregation = resolve_aggregation(settings.aggregation, len(classes))
    column = group_column_of(test, group_column)
    notes = []
    if column is None:
        notes.append("no group column: each image is its own group (resampled by image)")
        test_groups = np.arange(len(test)).astype(str)
    else:
        test_groups = test[column].astype(str).to_numpy()
    test_scores = scores_of(test, classes)
    val_scores = scores_of(val, classes) if val is not None else None
    result: dict[str, Any] = {
        "n_images": len(test),
        "n_groups": len(set(test_groups)),
        **_level(test_scores, test_groups, val_scores, settings, positive),
    }
    grouped = aggregate_groups(test_scores, test_groups, aggregation, positive=positive)
    val_grouped = None
    if val is not None and val_scores is not None:
        val_ids = val[column].astype(str).to_numpy() if column else np.arange(len(val)).astype(str)
        val_grouped = aggregate_groups(val_scores, val_ids, aggregation, positive=positive)
    result["group_level"] = {
        "n_groups": len(grouped.groups),
        "aggregation": aggregation,
        **_level(
            grouped.scores,
            np.asarray(grouped.groups),
            val_grouped.scores if val_grouped else None,
            settings,
            positive,
        ),
    }
    result["settings"] = {
        **asdict(settings),
        "aggregation": aggregation,
        "positive": classes[positive] if len(classes) == 2 else None,
        "group_column": column,
        "bootstrap": "percentile, resampling groups with replacement",
        "min_groups_per_class": MIN_GROUPS_PER_CLASS,
        "notes": notes,
    }
    return result


def _predict_or_none(
    checkpoint: Path, manifest: Path, split: str | None, loaded: LoadedModel, **kw: Any
) -> Any:
    from oncoscope.train.predict import predict_readable

    if split is None:
        return None
    frame = read_manifest(manifest, required=("path", "label", "split"))
    if not (frame["split"] == split).any():
        return None
    return predict_readable(checkpoint, manifest, split, loaded=loaded, **kw)


def _figures(
    metrics: dict[str, Any], test: Scores, grouped: Scores, positive: int, folder: Path
) -> list[ReportFigure]:
    figures = []
    for level, scores, block, word in (
        ("image", test, metrics, "images"),
        ("group", grouped, metrics["group_level"], "groups"),
    ):
        label = f"{level} level ({len(scores.labels)} {word})"
        figures += [
            ReportFigure(
                f"ROC, {label}",
                plot_roc(
                    scores, folder / f"roc_{level}.png", title=f"ROC, {label}", positive=positive
                ),
            ),
            ReportFigure(
                f"Precision-recall, {label}",
                plot_precision_recall(
                    scores, folder / f"pr_{level}.png", title=f"PR, {label}", positive=positive
                ),
            ),
            ReportFigure(
                f"Confusion matrix, {label}",
                plot_confusion(
                    block["confusion_matrix"], folder / f"confusion_{level}.png", title=level
                ),
            ),
            ReportFigure(
                f"Calibration, {label}",
                plot_calibration(
                    scores,
                    folder / f"calibration_{level}.png",
                    title=f"Calibration, {label}",
                    positive=positive,
                ),
                caption="points on the diagonal mean the probabilities can be taken at face value",
            ),
        ]
    return figures


def _level_section(title: str, block: dict[str, Any], unit: str) -> ReportSection:
    section = ReportSection(title)
    warning = block.get("intervals", {}).get("warning")
    note = f"Warning: {warning}." if warning else ""
    if warning:
        section.paragraphs.append(note)
    section.tables.append(metrics_table(block, f"{title}: metrics (95% CI)", note))
    section.tables.append(confusion_table(block["confusion_matrix"], f"{title}: confusion matrix"))
    operating = block.get("operating_point")
    if operating:
        section.paragraphs.append(
            f"Operating point: {operating['positive_class']} when its probability is at least "
            f"{operating['threshold']:.4f} (method {operating['method']}, picked on the "
            f"{operating['picked_on']} split, where it gave sensitivity "
            f"{operating['val_sensitivity']:.3f} and specificity "
            f"{operating['val_specificity']:.3f}); the table below applies it to the {unit}."
        )
        section.tables.append(metrics_table(operating, f"{title}: at the operating point", note))
    elif block.get("operating_point_note"):
        section.paragraphs.append(f"No operating point: {block['operating_point_note']}.")
    return section


def build_report(
    metrics: dict[str, Any], figures: list[ReportFigure], training: ReportFigure | None
) -> Report:
    """The evaluation report: facts, how to read it, image- and group-level sections,
    figures and training curves. Append further :class:`ReportSection` objects as needed."""
    settings = metrics["settings"]
    facts = {
        "model": metrics["model"],
        "checkpoint": metrics["checkpoint"],
        "data": metrics["data"],
        "split": f"{settings['split']} ({metrics['n_images']} images, {metrics['n_groups']} "
        f"groups by '{settings['group_column']}')",
        "classes": ", ".join(metrics["classes"]),
        "date": metrics["date"],
        "confidence intervals": f"{settings['confidence']:.0%} percentile bootstrap, "
        f"{settings['resamples']} resamples of groups, seed {settings['seed']}",
    }
    report = Report(f"oncoscope evaluation: {metrics['model']}", facts)
    report.add(ReportSection("How to read this", note=HOW_TO_READ))
    report.add(_level_section("Image level", metrics, "test images"))
    group = metrics["group_level"]
    n_classes = len(metrics["classes"])
    group_section = _level_section(
        f"Group level ({settings['group_column'] or 'image'}, {group['aggregation']} of image "
        "probabilities)",
        group,
        "test groups",
    )
    group_section.paragraphs.insert(
        0,
        f"{group['n_groups']} groups. {describe_aggregation(group['aggregation'], n_classes)} "
        "With two classes a group is truly positive if any of its images is, otherwise its "
        "label is its most frequent image label.",
    )
    report.add(group_section)
    report.add(ReportSection("Figures", figures=figures))
    if training is not None:
        report.add(
            ReportSection(
                "Training curves",
                paragraphs=["Loss and accuracy per epoch on the training and validation splits."],
                figures=[training],
            )
        )
    for note in settings.get("notes", []):
        report.sections[0].paragraphs.append(f"Note: {note}.")
    skipped = metrics.get("skipped_images") or []
    if skipped:
        report.sections.insert(
            1,
            ReportSection(
                "Images skipped",
                paragraphs=[
                    f"{len(skipped)} images could not be read and were skipped; every figure "
                    "below is computed without them."
                ],
                tables=[
                    ReportTable(
                        "Unreadable images",
                        ["split", "file", "problem"],
                        [[s["split"], s["path"], s["problem"]] for s in skipped],
                    )
                ],
            ),
        )
    return report


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint was written in (``RUN/checkpoints/x.ckpt``), if any."""
    folder = checkpoint.resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "metrics.csv").is_file():
        return folder.parent
    return None


def _localization_val_split(settings: EvaluationSettings) -> str:
    if settings.val_split is None:
        raise InvalidOptionError(
            "--localization picks its map threshold on --val-split; give one (not none)"
        )
    return settings.val_split


def evaluate_checkpoint(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path,
    settings: EvaluationSettings | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    localization: str | None = None,
    sections: Sequence[ReportSection | Callable[[dict[str, Any]], ReportSection]] = (),
    bags: str | Path | None = None,
) -> EvaluationResult:
    """Predict a split with a checkpoint and write ``metrics.json``, ``report.html``,
    ``predictions.csv``, ``group_predictions.csv`` and ``figures/*.png`` under ``out``.

    Images that cannot be read (missing, truncated, an empty ``path`` cell) are skipped, in the
    scored and the validation split alike: listed under ``skipped_images`` in ``metrics.json``,
    in the report, and in the result's ``skipped``; everything is computed on the rest.

    With ``localization`` (a CAM method, e.g. ``gradcam``), the weak localisation of seed 000 is
    scored too (:func:`oncoscope.explain.localization_report.score_localization`, threshold
    chosen on the validation split) into ``out/localization/``, under ``localization`` in
    ``metrics.json`` and as a section of the report; the manifest needs ``lesion_mask`` (``ct
    prepare``).
    ``sections`` are appended to the report as they are (e.g. the Couinaud segments of the
    test patients' lesions); a callable among them is called with the metrics (and the
    threshold record of ``localization`` already written beside the checkpoint) and its
    section appended, for a step that needs them (the demo's ``locate``).

    A MIL checkpoint (``oncoscope mil train``) is scored on its bags (``bags``, default the
    folder it was trained on) with ``manifest`` its ``slides.csv``: a row is a slide (or a
    patient bag), groups are patients (see :mod:`oncoscope.mil.evaluation`).

    Raises:
        OncoscopeError: a bad checkpoint, manifest or option; a manifest prepared with another
            CT chain than the checkpoint's (``ct prepare --denoise/--roi``); an empty split; with
            ``localization``, a manifest without masks or lesions, or no ``val_split``.
    """
    from oncoscope.ct.chain import check_manifest_chain
    from oncoscope.mil.evaluation import mil_predictors
    from oncoscope.train.checkpoint import model_from_checkpoint, read_checkpoint
    from oncoscope.train.predict import predict_readable

    settings = settings or EvaluationSettings()
    checkpoint, manifest, out = Path(checkpoint), Path(manifest), Path(out)
    stored = read_checkpoint(checkpoint)  # the one read of the file; passed down from here
    mil = mil_predictors(stored["spec"], bags, localization)  # None: a patch classifier
    loaded: LoadedModel | None = None
    if mil is None:
        loaded = model_from_checkpoint(stored, checkpoint)
        spec = loaded[1]
        check_manifest_chain(spec, manifest)  # slices made with the checkpoint's chain, or refused
        predict: Callable[..., Any] = partial(predict_readable, loaded=loaded)
        predict_or_none: Callable[..., Any] = partial(_predict_or_none, loaded=loaded)
        classes, model_name, group_column = list(spec.classes), spec.model, spec.group_column
    else:  # a MIL checkpoint's spec is its own (oncoscope.mil), read as stored
        predict, predict_or_none = mil
        classes = [str(c) for c in stored["spec"]["classes"]]
        model_name = str(stored["spec"]["model"])
        group_column = stored["spec"].get("group_column")
    positive = positive_index(classes, settings.positive)
    resolve_aggregation(settings.aggregation, len(classes))  # bad option fails before predicting
    if localization is not None:
        _localization_val_split(settings)  # fails before predicting
    kw = {"batch_size": batch_size, "num_workers": num_workers}
    predicted = predict(checkpoint, manifest, settings.split, **kw)
    test = predicted.frame
    skipped = [(settings.split, path, problem) for path, problem in predicted.skipped]
    val = None
    if len(classes) == 2 and settings.val_split is not None:
        val_predicted = predict_or_none(checkpoint, manifest, settings.val_split, **kw)
        if val_predicted is not None:
            val = val_predicted.frame
            skipped += [(settings.val_split, path, why) for path, why in val_predicted.skipped]
    column = group_column_of(test, group_column)
    metrics = evaluate_predictions(test, classes, settings, val=val, group_column=column)
    metrics = {
        "model": model_name,
        "checkpoint": str(checkpoint.resolve()),
        "data": str(manifest.resolve()),
        "split": settings.split,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": classes,
        **metrics,
        "skipped_images": [
            {"split": split, "path": path, "problem": problem} for split, path, problem in skipped
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    figures_dir = out / "figures"
    figures_dir.mkdir(exist_ok=True)
    test_scores = scores_of(test, classes)
    groups = test[column].astype(str).to_numpy() if column else np.arange(len(test)).astype(str)
    aggregation = metrics["group_level"]["aggregation"]
    grouped = aggregate_groups(test_scores, groups, aggregation, positive=positive)
    figures = _figures(metrics, test_scores, grouped.scores, positive, figures_dir)
    run_dir = run_dir_of(checkpoint)
    training = None
    if run_dir is not None:
        curves = plot_training_curves(run_dir / "metrics.csv", figures_dir / "training.png")
        if curves is not None:
            training = ReportFigure("Training curves", curves)
    predictions_csv = out / "predictions.csv"
    with atomic_path(predictions_csv) as temporary:
        test.to_csv(temporary, index=False, float_format="%.6g")
    group_rows = pd.DataFrame(grouped.scores.probabilities, columns=[f"prob_{c}" for c in classes])
    group_rows.insert(0, "group", grouped.groups)
    group_rows.insert(1, "label", [classes[i] for i in grouped.scores.labels])
    group_rows.insert(2, "pred", [classes[i] for i in grouped.scores.predictions()])
    with atomic_path(out / "group_predictions.csv") as temporary:
        group_rows.to_csv(temporary, index=False, float_format="%.6g")
    located = None
    if localization is not None:
        from oncoscope.explain.localization_report import score_localization

        located = score_localization(
            checkpoint,
            manifest,
            settings.split,
            val_split=_localization_val_split(settings),
            method=localization,
            out_dir=out / "localization",
            batch_size=batch_size,
            loaded=loaded,
        )
        metrics["localization"] = {
            "method": localization,
            "threshold": located["threshold"],
            "threshold_record": located["threshold_record"],
            "threshold_record_note": located["threshold_record_note"],
            "metrics": located["metrics"],
            "intervals": located["intervals"],
            "by_size": located["by_size"],
            "by_patient": located["by_patient"],
        }
    metrics_json = out / "metrics.json"
    write_json(metrics_json, metrics, indent=2)
    report = build_report(metrics, figures, training)
    if located is not None:
        report.add(localization_section(localization or "", located))
    for section in sections:
        report.add(section(metrics) if callable(section) else section)
    report_html = write_report(report, out / "report.html")
    paths = [f.path for f in figures if f.path] + (
        [training.path] if training and training.path else []
    )
    return EvaluationResult(
        out,
        metrics_json,
        report_html,
        predictions_csv,
        paths,
        metrics,
        [(path, problem) for _, path, problem in skipped],
    )
