"""Weak localisation of a checkpoint on a CT manifest: threshold chosen on val, scored on test.

Scored on the images whose ground-truth lesion mask is not empty (the tumour slices), each
explained for its true class (image-level labels are known at evaluation, as in weakly
supervised localisation benchmarks). The threshold of the ``0..1`` maps is the step that
maximises mean Dice on the validation split, then applied unchanged to the scored split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from oncoscope.ct.lesions import feret_diameter_mm
from oncoscope.dataset.manifest import read_manifest, write_manifest
from oncoscope.errors import CorruptFileError, ManifestError, OncoscopeError, OutputWriteError
from oncoscope.explain.cam import maps_version
from oncoscope.explain.localization_intervals import (
    FIGURES,
    ImageScore,
    localization_intervals,
    split_figures,
)
from oncoscope.explain.localization_metrics import (
    SIZE_BINS,
    dice_iou,
    dice_iou_curves,
    lesion_hits,
    pixel_counts,
    pointing_hit,
    precision_recall,
    random_point_rate,
    size_bin,
)
from oncoscope.explain.localize import N_BINS, lesion_boxes, lesion_mask
from oncoscope.explain.overlay import overlay, save_png
from oncoscope.explain.run import ImageMap, iter_maps
from oncoscope.io.atomic import atomic_path
from oncoscope.locate.threshold import write_record
from oncoscope.train.checkpoint import LoadedModel, load_model


def score_localization(
    checkpoint: str | Path,
    manifest: str | Path,
    split: str = "test",
    *,
    val_split: str = "val",
    method: str = "gradcam",
    out_dir: str | Path,
    layers: Sequence[str] = (),
    stage: int = -1,
    tolerance_px: int = 0,
    batch_size: int = 8,
    examples: int = 6,
    resamples: int = 1000,
    loaded: LoadedModel | None = None,
) -> dict[str, Any]:
    """Score the maps of ``method`` as lesion detectors against the manifest's lesion masks.

    Args:
        checkpoint: an oncoscope training checkpoint.
        manifest: a CT manifest with ``lesion_mask`` (and ``liver_mask``) columns (``ct
            prepare``); ``lesions.csv`` beside it gives the lesions' 3-D diameters (without it,
            a lesion's size is its in-plane diameter on the slice).
        split: the split scored.
        val_split: the split the threshold is chosen on.
        method, layers, stage: see :func:`oncoscope.explain.cam.explain_batch`.
        out_dir: where figures, ``localization.json``, ``localization_by_size.csv`` and
            ``localization_by_patient.csv`` go.
        tolerance_px: pointing-game tolerance in pixels (0 = the maximum must be in a lesion).
        batch_size: images per forward pass.
        examples: example overlays (map, true lesion contour in white, boxes in green).
        resamples: patient-bootstrap resamples of the intervals (seed 0); 0: no intervals
            (``intervals`` is None; ``compare --localization`` makes paired ones instead).
        loaded: ``checkpoint`` already loaded (:func:`load_model`; ``evaluate
            --localization`` passes the model it predicted with); else the file is read here.

    Returns:
        ``{"metrics": {...}, "by_size": [...], "threshold": float, "threshold_record": str,
        "threshold_record_note": str or None, "figures": [Path, ...], "skipped": [{"path",
        "problem"}, ...]}``; the threshold is also recorded beside the checkpoint
        (``threshold_record``, :mod:`oncoscope.locate.threshold`; the note says what a record
        made with other settings was replaced by); ``skipped`` lists the images that could not
        be read (left out of every figure).
        ``metrics``: ``pointing_game``, ``pointing_game_random_image``,
        ``pointing_game_random_liver`` (random-point baselines), ``pxap``, ``dice``, ``iou``
        (means over images at the threshold), ``lesion_hit_rate``, ``val_dice`` (the mean Dice
        that chose the threshold), ``images`` and ``lesions`` (counts). ``by_size``: one row per
        bin with ``size_bin, lesions, hits, hit_rate`` (``hit_rate`` None when a bin is empty).
        ``by_patient``: one row per patient with ``patient, slices, lesions, hits,
        pointing_game, pxap, dice`` over that patient's slices alone (also
        ``localization_by_patient.csv``).
        ``intervals``: every figure (those of ``metrics`` and ``hit_rate <bin>``) with a 95%
        patient-bootstrap interval (:func:`~oncoscope.explain.localization_intervals.
        localization_intervals`: ``estimates``, ``patients``, ``trusted``, ``warning``), or
        None with ``resamples=0``.
        ``images``: the per-slice scores (:class:`ImageScore`, not written to the JSON), which
        ``compare --localization`` pairs across models.

    Raises:
        ManifestError: no mask columns, or no (readable) image with a lesion in ``split`` or
            ``val_split``.
        OncoscopeError: see :func:`oncoscope.explain.run.iter_maps`; unreadable masks.
    """
    out = Path(out_dir)
    model, spec = loaded if loaded is not None else load_model(checkpoint)
    frame = read_manifest(manifest, required=("path", "label", "split", "lesion_mask"))
    folder = Path(manifest).resolve().parent
    skipped: list[tuple[str, str]] = []

    def maps(name: str) -> Iterator[_Explained]:
        rows = _lesion_rows(frame, name, manifest)
        explained = iter_maps(
            model,
            spec,
            list(rows["path"]),
            method=method,
            layers=layers,
            stage=stage,
            targets=[str(v) for v in rows["label"]],
            batch_size=batch_size,
        )
        return _with_masks(rows, explained, folder, str(manifest), skipped)

    threshold, val_dice = _choose_threshold(maps(val_split), val_split, manifest)
    scores = _score_split(maps(split), threshold, folder, tolerance_px, out, examples)
    if not scores.per_image:
        raise ManifestError(f"no readable image with a lesion in the {split} split", manifest)
    metrics = _metrics(scores, val_dice)
    figures = [_pr_figure(out / "localization_pr.png", scores.counts, metrics["pxap"])]
    figures += scores.figures
    by_size = _by_size(scores.per_image)
    by_patient = _by_patient(scores.per_image)
    intervals = (
        localization_intervals(scores.per_image, resamples=resamples, seed=0)
        if resamples > 0
        else None
    )
    _write_tables(out, by_size, by_patient, scores.box_rows)
    record_file, note = _record_threshold(
        checkpoint,
        {"threshold": threshold, "method": method, "layers": list(layers), "stage": stage},
        manifest=manifest,
        val_split=val_split,
        val_dice=val_dice,
    )
    result = {
        "metrics": metrics,
        "intervals": intervals,
        "by_size": by_size,
        "by_patient": by_patient,
        "threshold": threshold,
        "threshold_record": str(record_file) if record_file else None,
        "threshold_record_note": note,
        "figures": figures,
        "skipped": [{"path": path, "problem": problem} for path, problem in skipped],
        "images": scores.per_image,
    }
    with atomic_path(out / "localization.json") as temporary:
        record = {
            **{key: value for key, value in result.items() if key != "images"},
            "figures": [str(f) for f in figures],
            "method": method,
            "maps_version": maps_version(method),
            "split": split,
            "val_split": val_split,
            "tolerance_px": tolerance_px,
        }
        temporary.write_text(json.dumps(record, indent=2))
    return result


#: One explained image of a split: its manifest row, its map and its lesion-id mask.
_Explained = tuple[pd.Series, ImageMap, npt.NDArray[np.int64]]


@dataclass
class _SplitScores:
    """What the scored split accumulates, image by image."""

    counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((2, N_BINS), np.int64))
    per_image: list[ImageScore] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    box_rows: list[dict[str, Any]] = field(default_factory=list)


def _lesion_rows(frame: pd.DataFrame, name: str, manifest: str | Path) -> pd.DataFrame:
    """The rows of split ``name`` with a lesion (all its rows without a ``lesion_count``)."""
    rows = frame[frame["split"] == name]
    if "lesion_count" in rows:
        rows = rows[rows["lesion_count"] > 0]
    if rows.empty:
        raise ManifestError(f"no image with a lesion in the {name} split", manifest)
    return rows


def _with_masks(
    rows: pd.DataFrame,
    explained: Iterable[tuple[str, ImageMap | OncoscopeError]],
    folder: Path,
    manifest: str,
    skipped: list[tuple[str, str]],
) -> Iterator[_Explained]:
    """Each readable image's row, map and lesion mask; unreadable ones go to ``skipped``."""
    # iter_maps yields an unreadable image as soon as it is met, ahead of its batch's maps,
    # so outcomes are matched to rows by path (in order, for repeated paths)
    pending: dict[str, list[pd.Series]] = {}
    for _, row in rows.iterrows():
        pending.setdefault(str(row["path"]), []).append(row)
    for path, outcome in explained:
        row = pending[path].pop(0)
        if isinstance(outcome, OncoscopeError):
            skipped.append((path or manifest, outcome.message))
            continue
        yield row, outcome, _mask(folder / str(row["lesion_mask"]))


def _choose_threshold(
    maps: Iterable[_Explained], split: str, manifest: str | Path
) -> tuple[float, float]:
    """The map threshold that maximises mean Dice over ``maps``, and that mean Dice."""
    dice_sum = np.zeros(N_BINS)
    images = 0
    for _, outcome, ids in maps:
        if ids.any():
            dice_sum += dice_iou_curves(pixel_counts(outcome.heat, ids > 0))[0]
            images += 1
    if images == 0:
        raise ManifestError(f"no readable image with a lesion in the {split} split", manifest)
    step = int(np.argmax(dice_sum))
    return step / N_BINS, float(dice_sum[step] / images)


def _score_split(
    maps: Iterable[_Explained],
    threshold: float,
    folder: Path,
    tolerance_px: int,
    out: Path,
    examples: int,
) -> _SplitScores:
    """Pixel counts, per-image scores, lesion hits, boxes and example figures of ``maps``."""
    diameters = _lesion_diameters(folder / "lesions.csv")
    scores = _SplitScores()
    for row, outcome, ids in maps:
        truth = ids > 0
        if not truth.any():
            continue
        predicted = lesion_mask(outcome.heat, threshold)
        dice, iou = dice_iou(predicted, truth)
        liver = _liver(folder, row, truth)
        counts = pixel_counts(outcome.heat, truth)
        scores.counts += counts
        scores.per_image.append(
            ImageScore(
                path=str(row["path"]),
                group=_patient(row),
                pointing=float(pointing_hit(outcome.heat, truth, tolerance_px)),
                random_image=random_point_rate(truth, None, tolerance_px),
                random_liver=random_point_rate(truth, liver, tolerance_px),
                dice=dice,
                iou=iou,
                counts=counts,
                lesions=tuple(_lesion_outcomes(row, predicted, ids, diameters)),
            )
        )
        boxes = lesion_boxes(predicted)
        scores.box_rows += [
            {"image": row["path"], "row0": b[0], "col0": b[1], "row1": b[2], "col1": b[3]}
            for b in boxes
        ]
        if len(scores.figures) < examples:
            scores.figures.append(_example(out, outcome, truth, boxes, len(scores.figures)))
    return scores


def _lesion_outcomes(
    row: pd.Series,
    predicted: npt.NDArray[np.bool_],
    ids: npt.NDArray[np.int64],
    diameters: dict[tuple[str, int], float],
) -> list[tuple[str, bool]]:
    """(size bin, hit) of each lesion on one image; its 3-D diameter, else its in-plane one."""
    outcomes = []
    for lesion_id, hit in lesion_hits(predicted, ids).items():
        key = (_patient(row), lesion_id)
        diameter = diameters.get(key)
        if diameter is None:
            diameter = feret_diameter_mm(
                ids == lesion_id, float(row.get("row_mm", 1.0)), float(row.get("col_mm", 1.0))
            )
        outcomes.append((size_bin(diameter), hit))
    return outcomes


def _patient(row: pd.Series) -> str:
    return str(row.get("patient_id", row.get("group", "")))


def _by_size(images: list[ImageScore]) -> list[dict[str, Any]]:
    """One row per size bin: ``size_bin, lesions, hits, hit_rate`` (None when empty)."""
    lesions = [lesion for image in images for lesion in image.lesions]
    rows = []
    for name in SIZE_BINS:
        hits = [hit for bin_name, hit in lesions if bin_name == name]
        rate = sum(hits) / len(hits) if hits else None
        rows.append({"size_bin": name, "lesions": len(hits), "hits": sum(hits), "hit_rate": rate})
    return rows


def _metrics(scores: _SplitScores, val_dice: float) -> dict[str, float]:
    """The split's mean scores over images, PxAP and lesion hit rate."""
    figures = split_figures(scores.per_image)
    metrics = {
        name: float(figures[name] or 0.0) for name in FIGURES if not name.startswith("hit_rate")
    }
    lesions = sum(len(image.lesions) for image in scores.per_image)
    return {
        **metrics,
        "val_dice": val_dice,
        "images": float(len(scores.per_image)),
        "lesions": float(lesions),
    }


def _by_patient(images: list[ImageScore]) -> list[dict[str, Any]]:
    """One row per patient (in the order first met): ``patient, slices, lesions, hits,
    pointing_game, pxap, dice``, each figure over that patient's slices alone. PxAP pools
    every slice's pixels, so one patient whose maps light up wide areas can pull the split's
    figure far below the others'; this table shows which."""
    groups: dict[str, list[ImageScore]] = {}
    for image in images:
        groups.setdefault(image.group, []).append(image)
    rows = []
    for patient, scored in groups.items():
        figures = split_figures(scored)
        lesions = [hit for image in scored for _, hit in image.lesions]
        rows.append(
            {
                "patient": patient,
                "slices": len(scored),
                "lesions": len(lesions),
                "hits": sum(lesions),
                **{name: figures[name] for name in ("pointing_game", "pxap", "dice")},
            }
        )
    return rows


def _write_tables(
    out: Path,
    by_size: list[dict[str, Any]],
    by_patient: list[dict[str, Any]],
    box_rows: list[dict[str, Any]],
) -> None:
    with atomic_path(out / "localization_by_size.csv") as temporary:
        pd.DataFrame(by_size).to_csv(temporary, index=False)
    with atomic_path(out / "localization_by_patient.csv") as temporary:
        pd.DataFrame(by_patient).to_csv(temporary, index=False)
    write_manifest(
        box_rows, out / "localization_boxes.csv", ["image", "row0", "col0", "row1", "col1"]
    )


def _record_threshold(
    checkpoint: str | Path, choice: dict[str, Any], **provenance: Any
) -> tuple[Path | None, str | None]:
    """Record the threshold beside the checkpoint for ``locate``: (file, note about it).

    A read-only model folder records nothing (the note says so); the scores still stand.
    """
    try:
        return write_record(checkpoint, **choice, **provenance)
    except OutputWriteError as error:
        return None, f"threshold not recorded for locate: {error}"


def _mask(path: Path) -> npt.NDArray[np.int64]:
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.int64)
    except OSError as error:
        raise CorruptFileError(f"cannot read mask ({error})", path) from None


def _liver(folder: Path, row: pd.Series, truth: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    if "liver_mask" not in row or not isinstance(row["liver_mask"], str):
        return np.ones_like(truth)
    return (_mask(folder / row["liver_mask"]) > 0) | truth


def _lesion_diameters(path: Path) -> dict[tuple[str, int], float]:
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"patient_id": str})
    keys = zip(table["patient_id"].astype(str), table["lesion_id"].astype(int), strict=True)
    return dict(zip(keys, table["diameter_mm"].astype(float), strict=True))


def _example(
    out: Path,
    outcome: ImageMap,
    truth: npt.NDArray[np.bool_],
    boxes: list[tuple[int, int, int, int]],
    number: int,
) -> Path:
    picture = overlay(outcome.pixels, outcome.heat, contours=truth, boxes=boxes)
    return save_png(picture, out / "localization_examples" / f"example-{number + 1}.png")


def _pr_figure(path: Path, counts: npt.NDArray[np.int64], ap: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall = precision_recall(counts)
    figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
    axes.plot(recall, precision)
    axes.set(xlabel="pixel recall", ylabel="pixel precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"PxAP {ap:.3f}")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path
