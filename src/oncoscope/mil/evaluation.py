"""MIL checkpoints in ``oncoscope evaluate``: their predictions as the prediction tables that
``evaluate``'s metrics, bootstrap, operating point and report take.

A row is a bag (a slide, or a patient with patient bags) with ``label``, ``split``, ``patient``
and ``prob_<class>``; ``evaluate`` scores the rows as it scores images and groups them by
``patient`` (slide bags: patient level = max or mean of the slides' probabilities; intervals
from a bootstrap of patients). Slides of the split without a bag are skipped and listed, as
unreadable images are for patch models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncoscope.errors import InvalidOptionError, ManifestError, OncoscopeError
from oncoscope.features.bags import find_bags
from oncoscope.mil.labels import PATIENT_COLUMN, join_bags, read_slide_table
from oncoscope.mil.predict import (
    BagPrediction,
    is_mil_spec,
    load_mil_model,
    predict_items,
    predictions_frame,
)
from oncoscope.train.predict import SplitPredictions

#: Predicts the scored split (raises when it is empty).
ScoredPredictor = Callable[..., SplitPredictions]
#: Predicts a split, or None when it is empty or not asked for.
OptionalPredictor = Callable[..., SplitPredictions | None]


def predict_mil_split(
    checkpoint: str | Path,
    labels: str | Path,
    split: str,
    *,
    bags: str | Path | None = None,
    required: bool = True,
    **_loader_options: Any,
) -> SplitPredictions | None:
    """Bag probabilities of one split of ``slides.csv``, as ``evaluate``'s prediction table.

    Args:
        checkpoint: a MIL checkpoint.
        labels: ``slides.csv`` (``slide, label, split[, patient]``).
        split: the split to predict.
        bags: the bags folder (default: the one the checkpoint was trained on).
        required: raise on an empty split (else return None).
        _loader_options: the data loader options of patch models (``batch_size``...), unused.

    Returns:
        Rows ``slide``/``patient``, ``label``, ``split``, ``pred``, ``prob_<class>`` (and
        ``patient`` for slide bags), and the skipped slides ``(slide, problem)``.

    Raises:
        ManifestError: a bad ``slides.csv``; an empty split (with ``required``); no slide of
            the split with a bag; labels the checkpoint's classes do not include.
        OncoscopeError: a bad checkpoint; bags from another encoder.
    """
    model, spec = load_mil_model(checkpoint)
    folder = Path(bags) if bags is not None else Path(spec["bags"])
    frame = read_slide_table(labels)
    frame = frame[frame["split"] == split]
    if frame.empty:
        if required:
            raise ManifestError(f"the {split} split is empty", labels)
        return None
    classes = [str(c) for c in spec["classes"]]
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise ManifestError(f"labels {unknown} are not among the classes {classes}", labels)
    available = find_bags(folder)
    present = frame["stem"].isin(list(available))
    skipped = [
        (str(slide), f"no bag {stem}.h5 in {folder}")
        for slide, stem in zip(frame["slide"][~present], frame["stem"][~present], strict=True)
    ]
    if not present.any():
        raise ManifestError(f"no slide of the {split} split has a bag in {folder}", labels)
    level = str(spec.get("bag_level", "slide"))
    items, _ = join_bags(frame[present], folder, labels, bag_level=level)
    done: list[BagPrediction] = []
    for outcome in predict_items(model, items):
        if isinstance(outcome, tuple):
            item, error = outcome
            skipped.append((item.name, str(error)))
        else:
            done.append(outcome)
    table = predictions_frame(done, classes, level)
    if PATIENT_COLUMN not in table.columns:
        table[PATIENT_COLUMN] = table[level]
    table["label"] = table["label"].astype(str)
    return SplitPredictions(table, skipped)


def predict_mil_runs(
    checkpoints: dict[str, Path],
    specs: dict[str, dict[str, Any]],
    labels: str | Path,
    split: str,
    *,
    bags: str | Path | None = None,
) -> dict[str, Any]:
    """Each MIL checkpoint's predictions of the same split, for ``oncoscope compare``.

    Args:
        checkpoints: per model name, its MIL checkpoint; ``specs`` their stored specs.
        labels, split, bags: as :func:`predict_mil_split`.

    Returns:
        Per model, the prediction table (rows: the split's bags, slides or patients).

    Raises:
        OncoscopeError: checkpoints of other bag levels (slides against patients); a slide of
            the split without a bag or with an unreadable one (models are compared on the
            same slides); see also :func:`predict_mil_split`.
    """
    names = list(checkpoints)
    levels = {name: str(spec.get("bag_level", "slide")) for name, spec in specs.items()}
    for name in names:
        if levels[name] != levels[names[0]]:
            raise OncoscopeError(
                f"{name} was trained on {levels[name]} bags, {names[0]} on "
                f"{levels[names[0]]} bags: compare runs of one bag level",
                checkpoints[name],
            )
    predictions = {}
    for name, path in checkpoints.items():
        predicted = predict_mil_split(path, labels, split, bags=bags)
        assert predicted is not None  # required: an empty split raises
        if predicted.skipped:
            slide, problem = predicted.skipped[0]
            raise OncoscopeError(
                f"{slide}: {problem} ({len(predicted.skipped)} slide(s) not predicted); models "
                "are compared on the same slides",
                labels,
            )
        predictions[name] = predicted.frame
    return predictions


def mil_predictors(
    spec: dict[str, Any], bags: str | Path | None, localization: str | None = None
) -> tuple[ScoredPredictor, OptionalPredictor] | None:
    """For a MIL checkpoint's spec, ``(predict the scored split, predict a split or None)``
    in :func:`oncoscope.evaluate.evaluation.evaluate_checkpoint`'s calling convention; None for
    other checkpoints.

    Raises:
        InvalidOptionError: ``localization`` (CAM maps) asked of a MIL checkpoint, or ``bags``
            given for a patch checkpoint.
    """
    if not is_mil_spec(spec):
        if bags is not None:
            raise InvalidOptionError("--bags applies to MIL checkpoints (mil train) only")
        return None
    if localization is not None:
        raise InvalidOptionError(
            "--localization scores CAM maps of patch models; a MIL checkpoint's attention is "
            "in mil predict's outputs"
        )

    def scored(checkpoint: Any, labels: Any, split: Any, **kw: Any) -> SplitPredictions:
        predicted = predict_mil_split(checkpoint, labels, split, bags=bags, **kw)
        if predicted is None:  # not reached: an empty scored split raises
            raise ManifestError(f"the {split} split is empty", labels)
        return predicted

    def optional(checkpoint: Any, labels: Any, split: Any, **kw: Any) -> SplitPredictions | None:
        if split is None:
            return None
        return predict_mil_split(checkpoint, labels, split, bags=bags, required=False, **kw)

    return scored, optional
