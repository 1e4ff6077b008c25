"""Localisation figures of a split with patient-bootstrap intervals, alone or paired across models.

Slices of one patient are not independent (the same lesion on neighbouring slices), so the
intervals resample patients (:mod:`oncoscope.evaluate.bootstrap`), each drawn patient bringing
all of its scored slices. PxAP is recomputed from the drawn slices' pixel counts, not averaged
over slices, as on the whole split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from oncoscope.errors import OncoscopeError
from oncoscope.evaluate.bootstrap import (
    MIN_GROUPS_PER_CLASS,
    bootstrap,
    mark_differences,
    paired_bootstrap,
)
from oncoscope.explain.localization_metrics import SIZE_BINS, pxap

#: Figures of a split, in report order: name -> what it is.
FIGURES = {
    "pointing_game": "pointing game",
    "pointing_game_random_liver": "random point in the liver",
    "pointing_game_random_image": "random point in the image",
    "pxap": "PxAP",
    "dice": "Dice",
    "iou": "IoU",
    "lesion_hit_rate": "lesion hit rate",
    **{f"hit_rate {name}": f"hit rate {name}" for name in SIZE_BINS},
}


@dataclass(frozen=True)
class ImageScore:
    """How one scored slice's map did against its lesions.

    Attributes:
        path: the image (manifest ``path``).
        group: its patient.
        pointing: 1.0 when the map's maximum is in a lesion, else 0.0.
        random_image, random_liver: the chance a random point of the image / liver does.
        dice, iou: of the thresholded map against the lesion mask.
        counts: ``(2, n_bins)`` lesion and other pixels per map step
            (:func:`oncoscope.explain.localization_metrics.pixel_counts`).
        lesions: ``(size bin, hit)`` of each lesion section on the slice.
    """

    path: str
    group: str
    pointing: float
    random_image: float
    random_liver: float
    dice: float
    iou: float
    counts: npt.NDArray[np.int64] = field(repr=False)
    lesions: tuple[tuple[str, bool], ...] = ()


class _Stacked:
    """The per-slice values of a split as arrays, for fast resampling."""

    def __init__(self, images: Sequence[ImageScore]) -> None:
        self.pointing = np.array([i.pointing for i in images], float)
        self.random_image = np.array([i.random_image for i in images], float)
        self.random_liver = np.array([i.random_liver for i in images], float)
        self.dice = np.array([i.dice for i in images], float)
        self.iou = np.array([i.iou for i in images], float)
        self.counts = np.stack([i.counts for i in images]).astype(np.int64)
        # lesions per slice and size bin: (slices, bins) counts of lesions and of hits
        self.lesions = np.zeros((len(images), len(SIZE_BINS)), np.int64)
        self.hits = np.zeros_like(self.lesions)
        for row, image in enumerate(images):
            for name, hit in image.lesions:
                column = SIZE_BINS.index(name)
                self.lesions[row, column] += 1
                self.hits[row, column] += int(hit)

    def figures(self, indices: npt.NDArray[np.intp]) -> dict[str, float | None]:
        lesions, hits = self.lesions[indices].sum(0), self.hits[indices].sum(0)
        out: dict[str, float | None] = {
            "pointing_game": float(self.pointing[indices].mean()),
            "pointing_game_random_liver": float(self.random_liver[indices].mean()),
            "pointing_game_random_image": float(self.random_image[indices].mean()),
            "pxap": pxap(self.counts[indices].sum(0)),
            "dice": float(self.dice[indices].mean()),
            "iou": float(self.iou[indices].mean()),
            "lesion_hit_rate": float(hits.sum() / lesions.sum()) if lesions.sum() else None,
        }
        for column, name in enumerate(SIZE_BINS):
            count = int(lesions[column])
            out[f"hit_rate {name}"] = float(hits[column] / count) if count else None
        return out


def split_figures(images: Sequence[ImageScore]) -> dict[str, float | None]:
    """The split's figures (:data:`FIGURES`; a hit rate is None when no lesion is in its bin).

    Raises:
        OncoscopeError: no images.
    """
    if not images:
        raise OncoscopeError("no scored images")
    return _Stacked(images).figures(np.arange(len(images), dtype=np.intp))


def _trust(groups: Sequence[str], minimum: int = MIN_GROUPS_PER_CLASS) -> dict[str, Any]:
    patients = len(set(groups))
    warning = None
    if patients < minimum:
        warning = (
            f"intervals come from {patients} patient{'s' if patients != 1 else ''} with lesions "
            f"and are not to be trusted (fewer than {minimum})"
        )
    return {"trusted": patients >= minimum, "patients": patients, "warning": warning}


def localization_intervals(
    images: Sequence[ImageScore],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every figure of the split with a patient-bootstrap percentile interval.

    Returns:
        ``{"estimates": {figure: {"value", "ci_low", "ci_high"}}, "patients", "trusted",
        "warning", "resamples", "seed", "confidence"}``; with fewer than
        :data:`~oncoscope.evaluate.bootstrap.MIN_GROUPS_PER_CLASS` patients ``trusted`` is
        False and ``warning`` says so (with one patient every interval has zero width).

    Raises:
        OncoscopeError: no images. InvalidOptionError: bad ``resamples`` or ``confidence``.
    """
    if not images:
        raise OncoscopeError("no scored images")
    stacked = _Stacked(images)
    groups = [image.group for image in images]

    def statistic(indices: npt.NDArray[np.intp]) -> dict[tuple[str, ...], float | None]:
        return {(name,): value for name, value in stacked.figures(indices).items()}

    estimates = bootstrap(
        statistic, groups, n_resamples=resamples, seed=seed, confidence=confidence
    )
    return {
        "estimates": {name: estimate for (name,), estimate in estimates.items()},
        **_trust(groups),
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
    }


def paired_localization(
    per_model: Mapping[str, Sequence[ImageScore]],
    *,
    reference: str,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every model's figures and its difference from ``reference``, on the same resampled
    patients (a paired bootstrap: the models were scored on the same slices).

    Returns:
        ``{"reference", "models": {name: {figure: estimate, "difference": {figure: estimate}}},
        "images", "patients", "trusted", "warning", "resamples", "seed", "confidence"}``; a
        difference estimate also has ``spans_zero`` and ``significant`` (excludes 0 and the
        intervals can be trusted).

    Raises:
        OncoscopeError: no models, an unknown reference, or models scored on other slices.
    """
    names = list(per_model)
    if reference not in per_model:
        raise OncoscopeError(f"reference '{reference}' is not one of the models {names}")
    paths = [image.path for image in per_model[reference]]
    if not paths:
        raise OncoscopeError("no scored images")
    for name, images in per_model.items():
        if [image.path for image in images] != paths:
            raise OncoscopeError(
                f"model {name}'s maps were scored on other slices than {reference}'s (an image "
                "that one model could not read?); compare on the same readable slices"
            )
    stacked = {name: _Stacked(images) for name, images in per_model.items()}
    groups = [image.group for image in per_model[reference]]

    nested = paired_bootstrap(
        lambda name, indices: {
            (key,): value for key, value in stacked[name].figures(indices).items()
        },
        names,
        reference,
        groups,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
    )
    trust = _trust(groups)
    for name in names:
        mark_differences(nested[name]["difference"].values(), trust["trusted"])
    return {
        "reference": reference,
        "models": {name: nested[name] for name in names},
        "images": len(paths),
        **trust,
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
    }
