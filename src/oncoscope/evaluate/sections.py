"""Report sections for evaluation results: metric tables, confusion matrices, how to read them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oncoscope.evaluate.metrics import CLASS_METRICS, MACRO_METRICS, METRIC_NAMES
from oncoscope.evaluate.report import ReportFigure, ReportSection, ReportTable, format_estimate

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


#: How the weak-localisation figures are read (seed 000: lesions from image-level labels).
LOCALIZATION_NOTE = (
    "The model was trained on image-level labels only (tumour / no tumour); these figures ask "
    "whether its class-activation map also points at the lesion. Pointing game: share of tumour "
    "slices whose map maximum lies inside a true lesion, beside the chance of a random point "
    "(in the image, in the liver). PxAP: pixel average precision of the map against the lesion "
    "masks (Choe et al., CVPR 2020). Dice and IoU: overlap of the map thresholded at the value "
    "chosen on the validation split. Hit rate: share of true lesions the thresholded map touches, "
    "by largest diameter."
)


def localization_section(method: str, located: dict[str, Any]) -> ReportSection:
    """The report section of a localisation result.

    Args:
        method: the CAM method scored.
        located: :func:`oncoscope.explain.localization_report.score_localization`'s result.
    """
    m = located["metrics"]
    intervals = located["intervals"]
    estimates = intervals["estimates"]

    def share(name: str) -> str:
        return format_estimate(estimates[name])

    summary = {
        "Pointing game": f"{share('pointing_game')} (random point: image "
        f"{share('pointing_game_random_image')}, liver {share('pointing_game_random_liver')})",
        "PxAP": share("pxap"),
        "Dice / IoU at threshold": f"{share('dice')} / {share('iou')} "
        f"(threshold {float(located['threshold']):.3f}, chosen on validation)",
        "Lesion hit rate": share("lesion_hit_rate"),
        "Scored": f"{m['images']:.0f} tumour slices of {intervals['patients']} patients, "
        f"{m['lesions']:.0f} lesion sections; 95% intervals resample patients",
    }
    if intervals["warning"]:
        summary["Intervals"] = intervals["warning"]
    rows = [
        [row["size_bin"], row["lesions"], row["hits"], share(f"hit_rate {row['size_bin']}")]
        for row in located["by_size"]
    ]
    table = ReportTable(
        "Lesion hit rate by size", ["size", "lesions", "hits", "hit rate (95% CI)"], rows
    )
    patients = ReportTable(
        "By patient (each figure over the patient's tumour slices alone)",
        ["patient", "tumour slices", "lesion sections", "hits", "pointing game", "PxAP", "Dice"],
        [
            [
                row["patient"],
                row["slices"],
                row["lesions"],
                row["hits"],
                f"{row['pointing_game']:.3f}",
                f"{row['pxap']:.3f}",
                f"{row['dice']:.3f}",
            ]
            for row in located.get("by_patient", [])
        ],
    )
    figures = [
        ReportFigure(Path(path).stem.replace("_", " "), Path(path)) for path in located["figures"]
    ]
    return ReportSection(
        f"Weak localisation ({method})",
        summary=summary,
        tables=[table, patients],
        figures=figures,
        note=LOCALIZATION_NOTE,
    )
