"""What ``compare`` adds beside the classification figures of CT and patch models: each model's
cost (parameters, GFLOPs, seconds to classify the split; seed 000 Table II) and, with
``--localization METHOD``, its weak localisation on the same tumour slices with paired
patient-bootstrap differences (seed 000 Table I with issue 14's figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oncoscope.evaluate.report import (
    ReportSection,
    ReportTable,
    format_difference,
    format_estimate,
)
from oncoscope.explain.localization_intervals import FIGURES, paired_localization
from oncoscope.train.checkpoint import LoadedModel

#: Localisation figures shown in the comparison tables, in order.
TABLE_FIGURES = ("pointing_game", "pxap", "dice", "lesion_hit_rate")


def model_cost(loaded: LoadedModel, seconds: float, images: int) -> dict[str, Any]:
    """A model's size and speed: ``parameters``, ``gflops_per_image`` (one forward pass at the
    checkpoint's input size; a multiply-add is 2 FLOPs, convolutions and matrix products
    only), ``seconds_to_classify`` (the wall seconds ``compare`` took to predict the split,
    reading the images included) and ``images_per_second``."""
    import torch

    from oncoscope.models.benchmark import count_flops, parameter_count

    model, spec = loaded
    device = next(model.parameters()).device
    example = torch.zeros(1, spec.in_chans, spec.image_size, spec.image_size, device=device)
    was_training = model.training
    model.eval()
    flops = count_flops(model, example)
    model.train(was_training)
    return {
        "parameters": parameter_count(model),
        "gflops_per_image": flops / 1e9,
        "seconds_to_classify": seconds,
        "images_per_second": images / seconds if seconds > 0 else None,
    }


def compare_localization(
    checkpoints: Mapping[str, Path],
    loaded: Mapping[str, LoadedModel],
    manifest: str | Path,
    split: str,
    *,
    method: str,
    out: Path,
    reference: str,
    resamples: int,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Score every model's ``method`` maps on the tumour slices of ``split`` (threshold picked on
    ``val`` for each model, as ``evaluate --localization`` does, and recorded beside its
    checkpoint for ``locate``) and compare them on the same resampled patients.

    Returns:
        :func:`oncoscope.explain.localization_intervals.paired_localization`'s result with
        ``method``, ``thresholds`` (per model) and ``folders`` (each model's figures) added.

    Raises:
        ManifestError: the manifest has no lesion masks or no tumour slice in a split.
        OncoscopeError: models whose maps were scored on other slices.
    """
    from oncoscope.explain.localization_report import score_localization

    located = {
        name: score_localization(
            path,
            manifest,
            split,
            method=method,
            out_dir=out / "localization" / name,
            batch_size=batch_size,
            resamples=0,  # no intervals of each model's own: the paired ones follow
            loaded=loaded[name],
        )
        for name, path in checkpoints.items()
    }
    paired = paired_localization(
        {name: result["images"] for name, result in located.items()},
        reference=reference,
        resamples=resamples,
        seed=seed,
    )
    return {
        "method": method,
        **paired,
        "thresholds": {name: result["threshold"] for name, result in located.items()},
        "folders": {name: str(out / "localization" / name) for name in located},
    }


def localization_section(comparison: dict[str, Any]) -> ReportSection:
    """The report section of :func:`compare_localization`'s result."""
    models, reference = comparison["models"], comparison["reference"]
    columns = ["model", *(FIGURES[f] for f in TABLE_FIGURES), "random point in the liver"]
    values = [
        [
            name,
            *(format_estimate(block[f]) for f in TABLE_FIGURES),
            format_estimate(block["pointing_game_random_liver"]),
        ]
        for name, block in models.items()
    ]
    differences = [
        [name, *(format_difference(block["difference"][f], "patients") for f in TABLE_FIGURES)]
        for name, block in models.items()
        if name != reference
    ]
    section = ReportSection(
        f"Weak localisation ({comparison['method']})",
        [
            f"Maps scored on the {comparison['images']} tumour slices of "
            f"{comparison['patients']} patients, each model's threshold chosen on validation; "
            "95% intervals and paired differences resample patients."
        ],
    )
    if comparison["warning"]:
        section.paragraphs.append(f"Warning: {comparison['warning']}.")
    section.tables.append(ReportTable("Localisation: value (95% CI)", columns, values))
    if differences:
        section.tables.append(
            ReportTable(
                f"Localisation: difference from {reference} (paired bootstrap, 95% CI)",
                columns[: len(TABLE_FIGURES) + 1],
                differences,
            )
        )
    return section


def cost_section(costs: Mapping[str, dict[str, Any]]) -> ReportSection:
    """The report section of each model's :func:`model_cost`."""
    rows = [
        [
            name,
            f"{cost['parameters']:,}",
            f"{cost['gflops_per_image']:.2f}",
            f"{cost['seconds_to_classify']:.1f}",
        ]
        for name, cost in costs.items()
    ]
    return ReportSection(
        "Size and speed",
        [
            "GFLOPs of one image at the checkpoint's input size (a multiply-add is 2 FLOPs); "
            "seconds: wall time to predict the split here, reading the images included (one "
            "process, this machine; compare models within one run only)."
        ],
        tables=[ReportTable("Size and speed", ["model", "parameters", "GFLOPs", "seconds"], rows)],
    )
