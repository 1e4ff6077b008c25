"""Compare models trained on the same split: metrics side by side with intervals, and each
model's difference from a reference with a paired bootstrap over the same patients/slides.

One bootstrap draws the groups; every model is scored on the same resampled groups, so the
interval of a difference reflects how the models differ on the same patients (seed 000 Table I,
seed 004 Tables 3-4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.evaluate.aggregate import (
    aggregate_groups,
    describe_aggregation,
    resolve_aggregation,
)
from oncoscope.evaluate.bootstrap import interval_trust, mark_differences, paired_bootstrap
from oncoscope.evaluate.compare_extras import (
    compare_localization,
    cost_section,
    localization_section,
    model_cost,
)
from oncoscope.evaluate.evaluation import group_column_of, scores_of
from oncoscope.evaluate.metrics import (
    CLASS_METRICS,
    MACRO_METRICS,
    METRIC_NAMES,
    Scores,
    classification_metrics,
    flatten,
)
from oncoscope.evaluate.report import (
    Report,
    ReportSection,
    ReportTable,
    format_difference,
    format_estimate,
    write_report,
)
from oncoscope.evaluate.sections import HOW_TO_READ
from oncoscope.explain.localization_intervals import FIGURES
from oncoscope.io.atomic import atomic_path, write_json

#: The column naming a prediction table's rows, first found first, and what its rows are.
ROW_COLUMNS = {"path": "images", "slide": "slides", "patient": "patients"}


@dataclass
class ComparisonResult:
    """Where a comparison wrote its outputs, and its content."""

    models: list[str]
    reference: str
    comparison_json: Path
    comparison_csv: Path
    report_html: Path
    comparison: dict[str, Any] = field(default_factory=dict)


def find_checkpoint(run: str | Path) -> Path:
    """A run directory's ``checkpoints/best.ckpt`` (else ``last.ckpt``); a checkpoint file is
    returned as is.

    Raises:
        OncoscopeError: neither exists.
    """
    run = Path(run)
    if run.is_file():
        return run
    for name in ("best.ckpt", "last.ckpt"):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise OncoscopeError("no checkpoints/best.ckpt or last.ckpt: not a training run directory", run)


def model_names(runs: list[Path]) -> list[str]:
    """One unique name per run: the run directory's name, ``#2``, ``#3``... on repeats."""
    names: list[str] = []
    for run in runs:
        base = run.parent.parent.name if run.is_file() else run.name
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}#{count}"
        names.append(name)
    return names


def compare_predictions(
    predictions: dict[str, pd.DataFrame],
    classes: list[str],
    *,
    reference: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    group_column: str | None = None,
) -> dict[str, Any]:
    """Every model's metrics with intervals and its paired difference from ``reference``.

    Args:
        predictions: per model, the prediction table of the same rows (``label``,
            ``prob_<class>``, a group column, and the rows' ``path`` (images), ``slide`` or
            ``patient`` (MIL bags)), as :func:`predict_split` returns.
        classes: class names, the same for every model.
        reference: the model to compare with (default: the first).
        resamples, seed, confidence: of the group bootstrap shared by all models.
        group_column: the patient/slide column (default: found in the table).

    Returns:
        ``{"reference", "models": {name: {"macro", "classes", "difference": {"macro",
        "classes"}}}, "n_images", "n_groups", "intervals", "settings"}``; a difference estimate
        has ``value``, ``ci_low``, ``ci_high``, ``spans_zero`` (the interval contains 0) and
        ``significant`` (it excludes 0 and the intervals can be trusted: ``intervals``, see
        :func:`oncoscope.evaluate.bootstrap.interval_trust`; with too few patients or slides
        per class no difference is significant).

    Raises:
        OncoscopeError: fewer than one model, tables of other rows or labels, unknown reference.
    """
    names = list(predictions)
    if not names:
        raise OncoscopeError("no models to compare")
    reference = reference or names[0]
    if reference not in predictions:
        raise InvalidOptionError(f"reference '{reference}' is not one of the models {names}")
    first = predictions[names[0]]
    row = next(c for c in ROW_COLUMNS if c in first.columns)
    for name, frame in predictions.items():
        if (
            row not in frame.columns
            or list(frame[row]) != list(first[row])
            or list(frame["label"]) != list(first["label"])
        ):
            raise OncoscopeError(
                f"model {name} was scored on other {ROW_COLUMNS[row]} than {names[0]}; compare "
                "runs on the same manifest and split"
            )
    scores: dict[str, Scores] = {
        name: scores_of(frame, classes) for name, frame in predictions.items()
    }
    column = group_column_of(first, group_column)
    groups = first[column].astype(str).to_numpy() if column else np.arange(len(first)).astype(str)

    nested = paired_bootstrap(
        lambda name, indices: flatten(classification_metrics(scores[name].subset(indices))),
        names,
        reference,
        groups,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
    )
    trust = interval_trust(scores[reference].labels, groups, classes)
    for name in names:
        diff = nested[name]["difference"]
        per_class = (e for values in diff["classes"].values() for e in values.values())
        mark_differences([*diff["macro"].values(), *per_class], trust["trusted"])
    return {
        "reference": reference,
        "classes": classes,
        "n_images": len(first),
        "n_groups": len(set(groups)),
        "intervals": trust,
        "models": {name: nested[name] for name in names},
        "settings": {
            "resamples": resamples,
            "seed": seed,
            "confidence": confidence,
            "group_column": column,
            "bootstrap": "paired percentile bootstrap: the same resampled groups for every model",
        },
    }


def patient_rows(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per patient (``patient``, ``label``, ``prob_<class>``) from slide rows, as
    ``evaluate``'s patient level makes it (``auto``: the positive class's highest probability
    over the patient's slides for two classes, the mean for more; see
    :mod:`oncoscope.evaluate.aggregate`)."""
    scores = scores_of(frame, classes)
    method = resolve_aggregation("auto", len(classes))
    grouped = aggregate_groups(scores, frame["patient"].astype(str).to_numpy(), method)
    rows = pd.DataFrame(
        {"patient": grouped.groups, "label": [classes[i] for i in grouped.scores.labels]}
    )
    for index, name in enumerate(classes):
        rows[f"prob_{name}"] = grouped.scores.probabilities[:, index]
    return rows


def tidy_rows(comparison: dict[str, Any]) -> pd.DataFrame:
    """One row per model, scope (``macro`` or a class) and metric, with the difference."""
    rows = []
    for name, block in comparison["models"].items():
        for scope, metrics, diffs in [("macro", block["macro"], block["difference"]["macro"])] + [
            (c, block["classes"][c], block["difference"]["classes"][c]) for c in block["classes"]
        ]:
            for metric, estimate in metrics.items():
                row = _tidy_row(estimate, diffs[metric], comparison["reference"])
                rows.append({"model": name, "scope": scope, "metric": metric, **row})
    return pd.DataFrame(rows)


def _tidy_row(estimate: dict[str, Any], diff: dict[str, Any], reference: str) -> dict[str, Any]:
    """The columns of a tidy row after model, scope and metric."""
    return {
        "value": estimate["value"],
        "ci_low": estimate["ci_low"],
        "ci_high": estimate["ci_high"],
        "reference": reference,
        "difference": diff["value"],
        "difference_ci_low": diff["ci_low"],
        "difference_ci_high": diff["ci_high"],
        "difference_spans_zero": diff["spans_zero"],
        "difference_significant": diff["significant"],
    }


def localization_rows(located: dict[str, Any]) -> pd.DataFrame:
    """One row per model and localisation figure, with the difference from the reference."""
    rows = []
    for name, block in located["models"].items():
        for figure in FIGURES:
            row = _tidy_row(block[figure], block["difference"][figure], located["reference"])
            rows.append({"model": name, "metric": figure, **row})
    return pd.DataFrame(rows)


def _scope(block: dict[str, Any], scope: str) -> dict[str, Any]:
    figures: dict[str, Any] = block["macro"] if scope == "macro" else block["classes"][scope]
    return figures


def comparison_report(
    comparison: dict[str, Any], facts: dict[str, str], *, level: str = ""
) -> Report:
    """Tables per scope (macro, each class): models by metrics, then differences; ``level``
    (e.g. ``"Patient level"``) heads every scope's title."""
    report = Report("oncoscope model comparison", facts)
    report.add(
        ReportSection(
            "How to read this",
            note=HOW_TO_READ + " A difference marked * has a 95% interval that excludes zero; "
            "'spans 0' means the data cannot tell the two models apart on that figure. With "
            f"fewer than {comparison['intervals']['min_groups_per_class']} patients or slides "
            "per class no difference is marked *: 'too few groups to judge'.",
        )
    )
    warning = comparison["intervals"]["warning"]
    if warning:
        report.sections[0].paragraphs.append(f"Warning: {warning}.")
    models = comparison["models"]
    reference = comparison["reference"]
    lead = f"{level}: " if level else ""
    scopes = [(f"{lead}Macro average", "macro", MACRO_METRICS)] + [
        (f"{lead}Class {c}", c, CLASS_METRICS) for c in comparison["classes"]
    ]
    for title, scope, metric_names in scopes:
        columns = ["model", *(METRIC_NAMES[m] for m in metric_names)]
        values = [
            [n, *(format_estimate(_scope(models[n], scope)[m]) for m in metric_names)]
            for n in models
        ]
        diffs = [
            [
                n,
                *(
                    format_difference(_scope(models[n]["difference"], scope)[m])
                    for m in metric_names
                ),
            ]
            for n in models
            if n != reference
        ]
        section = ReportSection(title)
        section.tables.append(ReportTable(f"{title}: value (95% CI)", columns, values))
        if diffs:
            section.tables.append(
                ReportTable(
                    f"{title}: difference from {reference} (paired bootstrap, 95% CI)",
                    columns,
                    diffs,
                )
            )
        report.add(section)
    return report


def compare_runs(
    runs: list[Path],
    manifest: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    reference: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    num_workers: int = 0,
    bags: str | Path | None = None,
    localization: str | None = None,
) -> ComparisonResult:
    """Predict ``split`` with each run's best checkpoint and write ``comparison.json``,
    ``comparison.csv`` (tidy) and ``report.html`` under ``out``.

    MIL runs (``mil train``) are compared on the bags of ``split`` of the ``slides.csv`` given
    as ``manifest`` (``bags``: their folder, default the first run's), a row per slide (or per
    patient with patient bags), patients resampled.

    Patch and CT models also get their size and speed (``costs``: parameters, GFLOPs per image,
    seconds to classify the split). ``localization`` (an ``explain`` method) also scores each
    CT model's maps on the split's tumour slices against the manifest's lesion masks and
    compares them on the same resampled patients (``localization`` in ``comparison.json``,
    ``comparison_localization.csv``, a report section; each model's figures under
    ``out/localization/<name>``).

    Raises:
        OncoscopeError: a folder that is not a run, runs with other classes, a bad reference;
            MIL runs beside patch-model runs, or MIL runs of other bag levels; a slide of the
            split without a readable bag.
    """
    from oncoscope.mil.evaluation import predict_mil_runs
    from oncoscope.mil.predict import is_mil_spec
    from oncoscope.train.checkpoint import model_from_checkpoint, read_checkpoint
    from oncoscope.train.predict import predict_split

    runs = [Path(r) for r in runs]
    names = model_names(runs)
    if reference is not None and reference not in names:
        raise InvalidOptionError(f"reference '{reference}' is not one of the models {names}")
    checkpoints = {name: find_checkpoint(run) for name, run in zip(names, runs, strict=True)}
    stored = {name: read_checkpoint(path) for name, path in checkpoints.items()}  # read once
    mil = [name for name in names if is_mil_spec(stored[name]["spec"])]
    if mil and len(mil) < len(names):
        other = next(name for name in names if name not in mil)
        raise OncoscopeError(
            f"{mil[0]} is a MIL model (slide labels) and {other} a patch model: they predict "
            "other rows and cannot be compared",
            checkpoints[other],
        )
    if bags is not None and not mil:
        raise InvalidOptionError("--bags applies to MIL checkpoints (mil train) only")
    if localization is not None and mil:
        raise InvalidOptionError("--localization applies to CT slice models, not MIL models")
    if localization is not None:  # before any model predicts: a manifest without masks stops
        from oncoscope.dataset.manifest import read_manifest

        read_manifest(manifest, required=("path", "label", "split", "lesion_mask"))
    raw_specs = {name: stored[name]["spec"] for name in names}
    classes = [str(c) for c in raw_specs[names[0]]["classes"]]
    for name, spec in raw_specs.items():
        if [str(c) for c in spec["classes"]] != classes:
            raise OncoscopeError(
                f"classes {list(spec['classes'])} differ from {names[0]}'s {classes}",
                checkpoints[name],
            )
    if mil:
        predictions = predict_mil_runs(checkpoints, raw_specs, manifest, split, bags=bags)
        architectures = {name: str(spec["model"]) for name, spec in raw_specs.items()}
        group_column: str | None = "patient"
    else:
        loaded = {name: model_from_checkpoint(stored[name], checkpoints[name]) for name in names}
        predictions, seconds = {}, {}
        for name, path in checkpoints.items():
            started = time.perf_counter()
            predictions[name] = predict_split(
                path,
                manifest,
                split,
                batch_size=batch_size,
                num_workers=num_workers,
                loaded=loaded[name],
            )
            seconds[name] = time.perf_counter() - started
        costs = {
            name: model_cost(loaded[name], seconds[name], len(predictions[name])) for name in names
        }
        architectures = {name: spec.model for name, (_, spec) in loaded.items()}
        group_column = loaded[names[0]][1].group_column
    comparison = compare_predictions(
        predictions,
        classes,
        reference=reference,
        resamples=resamples,
        seed=seed,
        group_column=group_column,
    )
    patients = None
    if mil and "slide" in predictions[names[0]].columns:  # slide bags: patients too
        patients = compare_predictions(
            {name: patient_rows(frame, classes) for name, frame in predictions.items()},
            classes,
            reference=reference,
            resamples=resamples,
            seed=seed,
            group_column="patient",
        )
        method = resolve_aggregation("auto", len(classes))
        patients["aggregation"] = {
            "method": method,
            "description": describe_aggregation(method, len(classes)),
        }
    out = Path(out)
    located = None
    if localization is not None:
        located = compare_localization(
            checkpoints,
            loaded,
            manifest,
            split,
            method=localization,
            out=out,
            reference=comparison["reference"],
            resamples=resamples,
            seed=seed,
            batch_size=batch_size,
        )
    comparison = {
        "data": str(Path(manifest).resolve()),
        "split": split,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoints": {name: str(path.resolve()) for name, path in checkpoints.items()},
        "architectures": architectures,
        **comparison,
        **({"patient_level": patients} if patients is not None else {}),
        **({"costs": costs} if not mil else {}),
        **({"localization": located} if located is not None else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    comparison_json, comparison_csv = out / "comparison.json", out / "comparison.csv"
    write_json(comparison_json, comparison, indent=2)
    with atomic_path(comparison_csv) as temporary:
        tidy_rows(comparison).to_csv(temporary, index=False, float_format="%.6g")
    if patients is not None:
        with atomic_path(out / "comparison_patients.csv") as temporary:
            tidy_rows(patients).to_csv(temporary, index=False, float_format="%.6g")
    if located is not None:
        with atomic_path(out / "comparison_localization.csv") as temporary:
            localization_rows(located).to_csv(temporary, index=False, float_format="%.6g")
    rows = next(what for column, what in ROW_COLUMNS.items() if column in predictions[names[0]])
    facts = {
        "models": ", ".join(f"{n} ({architectures[n]})" for n in names),
        "reference": comparison["reference"],
        "data": comparison["data"],
        "split": f"{split} ({comparison['n_images']} {rows}, {comparison['n_groups']} groups)",
        "date": comparison["date"],
        "confidence intervals": f"95% percentile bootstrap, {resamples} paired resamples of "
        f"groups, seed {seed}",
    }
    report = comparison_report(comparison, facts)
    if patients is not None:
        by_patient = comparison_report(patients, facts, level="Patient level")
        about = "Each model's slide probabilities joined per patient: "
        report.add(ReportSection("Patient level", [about + patients["aggregation"]["description"]]))
        for section in by_patient.sections[1:]:  # its "how to read" is the one above
            report.add(section)
    if not mil:
        report.add(cost_section(costs))
    if located is not None:
        report.add(localization_section(located))
    report_html = write_report(report, out / "report.html")
    return ComparisonResult(
        names, comparison["reference"], comparison_json, comparison_csv, report_html, comparison
    )
