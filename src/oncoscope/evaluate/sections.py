"""Report sections for evaluation results: metric tables, confusion matrices, how to read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oncoscope.evaluate.metrics import CLASS_METRICS, MACRO_METRICS, METRIC_NAMES
from oncoscope.evaluate.report import ReportTable, format_estimate

HOW_TO_READ = (
    "How to read this report. Each figure is followed by its 95% confidence interval in "
    "brackets, from resampling whole patients (or slides) so that several images of one "
    "patient are not counted as independent evidence; a wide interval means few patients. "
    "Sensitivity (recall) is the share of truly positive images the model called positive; "
    "specificity the share of truly negative ones it called negative; precision (PPV) the "
    "share of positive calls that were right; NPV the share of negative calls that were right. "
    "AUROC (0.5 = chance, 1 = perfect) and average precision do not depend on a threshold. "
    "'N/A' means the figure is undefined on this data (for example a class with no test "
    "images). The operating point is a threshold chosen on the validation split and applied "
    "unchanged to the test split, as it would be in use. Patient- or slide-level results "
    "combine each patient's images into one call."
)


def metrics_table(block: dict[str, Any], caption: str, note: str = "") -> ReportTable:
    """Rows = metrics, columns = macro then each class; cells ``value (low to high)``."""
    classes = list(block["classes"])
    rows = []
    for metric in dict.fromkeys((*CLASS_METRICS, *MACRO_METRICS)):
        macro_key = "map" if metric == "average_precision" else metric
        if metric == "map":
            continue
        name = METRIC_NAMES[metric] + (" (macro: mAP)" if metric == "average_precision" else "")
        rows.append(
            [
                name,
                format_estimate(block["macro"].get(macro_key)),
                *(format_estimate(block["classes"][c].get(metric)) for c in classes),
            ]
        )
    return ReportTable(caption, ["metric", "macro", *classes], rows, note)


def confusion_table(confusion: dict[str, Any], caption: str) -> ReportTable:
    """Counts with the row fraction in brackets; rows are true classes, columns predicted."""
    labels: Sequence[str] = confusion["labels"]
    rows = []
    for label, counts, fractions in zip(
        labels, confusion["counts"], confusion["normalized"], strict=True
    ):
        cells = [
            f"{c} ({f:.2f})" if fractions is not None else str(c)
            for c, f in zip(counts, fractions or [0.0] * len(counts), strict=True)
        ]
        rows.append([f"true {label}", *cells, str(sum(counts))])
    return ReportTable(
        caption,
        ["", *(f"predicted {label}" for label in labels), "total"],
        rows,
        "Counts, with the fraction of the true class (row) in brackets.",
    )
