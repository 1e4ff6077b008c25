"""Lesion-level detection of ``locate``'s candidates against a ground-truth segmentation.

A true lesion (a 3-D component of tumour label 2, :func:`oncoscope.ct.lesions.find_lesions`) is
detected at score ``t`` when a candidate of score at least ``t`` shares a voxel with it; a
candidate of score at least ``t`` that shares no voxel with any true lesion is a false positive.
Sensitivity is given overall and by lesion size (largest in-plane diameter: <10, 10-20, >20 mm),
false positives per volume, at a few score thresholds (points of the FROC curve), with
percentile-bootstrap 95% intervals that resample volumes (patients) when there are several.
Two counts over every candidate say how candidates and lesions correspond: true lesions touched
by more than one candidate (split) and candidates touching more than one true lesion (joined).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from oncoscope.ct.lesions import find_lesions
from oncoscope.evaluate.bootstrap import Key, bootstrap
from oncoscope.explain.localization_metrics import SIZE_BINS, size_bin

#: Version of a volume's ``detection.json`` (2: with the split and joined counts).
DETECTION_FORMAT = 2
#: Candidate score thresholds of the FROC points (0: every candidate).
FROC_SCORES = (0.0, 0.25, 0.5, 0.75, 0.9)


@dataclass
class VolumeDetection:
    """One volume's true lesions and candidates, matched.

    Attributes:
        name: the volume (the bootstrap's group).
        lesions: per true lesion, ``(diameter_mm, best score of a candidate touching it, or
            -1 when none does)``.
        false_scores: scores of the candidates touching no true lesion.
        candidates_per_lesion: per true lesion, how many candidates touch it.
        lesions_per_candidate: per candidate touching a true lesion, how many it touches.
    """

    name: str
    lesions: list[tuple[float, float]]
    false_scores: list[float]
    candidates_per_lesion: list[int] = field(default_factory=list)
    lesions_per_candidate: list[int] = field(default_factory=list)


def match_volume(
    name: str,
    candidate_labels: npt.NDArray[np.integer[Any]],
    candidate_scores: Sequence[float],
    tumour: npt.NDArray[np.bool_],
    spacing_mm: tuple[float, float, float],
) -> VolumeDetection:
    """Match one volume's candidates with its true lesions.

    Args:
        name: the volume's name.
        candidate_labels: ``(D, H, W)`` candidate label map (0 none, ``k`` candidate ``k``).
        candidate_scores: score of candidate ``k`` at index ``k - 1``.
        tumour: ``(D, H, W)`` true tumour mask on the same grid.
        spacing_mm: voxel size ``(slice, row, col)`` in mm.
    """
    from oncoscope.ct.lesions import label_lesions

    truth_ids = label_lesions(tumour)
    lesions = find_lesions(tumour, spacing_mm)
    scores = np.concatenate([[-1.0], np.asarray(candidate_scores, np.float64)])
    both = (truth_ids > 0) & (candidate_labels > 0)
    pairs = np.unique(np.stack([truth_ids[both], candidate_labels[both]]), axis=1)
    best = np.full(len(lesions) + 1, -1.0)
    for truth_id, candidate in pairs.T:
        best[truth_id] = max(best[truth_id], scores[candidate])
    touching = set(int(c) for c in pairs[1]) if pairs.size else set()
    false = [float(scores[k]) for k in range(1, len(scores)) if k not in touching]
    per_lesion = np.bincount(pairs[0], minlength=len(lesions) + 1)  # zeros when no pair
    per_candidate = np.unique(pairs[1], return_counts=True)[1]
    return VolumeDetection(
        name=name,
        lesions=[(lesion.diameter_mm, float(best[lesion.lesion_id])) for lesion in lesions],
        false_scores=false,
        candidates_per_lesion=[int(per_lesion[lesion.lesion_id]) for lesion in lesions],
        lesions_per_candidate=[int(n) for n in per_candidate],
    )


def detection_scores(
    volumes: Sequence[VolumeDetection],
    *,
    scores: Sequence[float] = FROC_SCORES,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Sensitivity (overall and by size) and false positives per volume at each score threshold.

    Returns:
        ``{"volumes", "lesions", "lesions_by_size", "froc": [{"min_score", "sensitivity",
        "sensitivity_by_size": {bin: ...}, "false_positives_per_volume"}], "lesions_split",
        "candidates_joined", "intervals"}`` (the two counts over every candidate); each
        figure is ``{"value", "ci_low", "ci_high"}`` (intervals None with one volume or where
        the figure is undefined, e.g. no lesion of a size).
    """
    names = [v.name for v in volumes]

    def statistic(rows: npt.NDArray[np.intp]) -> dict[Key, float | None]:
        chosen = [volumes[int(i)] for i in rows]
        lesions = [item for v in chosen for item in v.lesions]
        out: dict[Key, float | None] = {}
        for t in scores:
            key = f"{t:g}"
            hits = [best >= t and best >= 0 for _, best in lesions]
            out[(key, "sensitivity")] = sum(hits) / len(hits) if hits else None
            for name in SIZE_BINS:
                sized = [best >= t and best >= 0 for d, best in lesions if size_bin(d) == name]
                out[(key, name)] = sum(sized) / len(sized) if sized else None
            false = sum(1 for v in chosen for s in v.false_scores if s >= t)
            out[(key, "fp_per_volume")] = false / len(chosen) if chosen else None
        return out

    if len(volumes) > 1:
        figures = bootstrap(statistic, names, n_resamples=resamples, seed=seed)
    else:
        point = statistic(np.arange(len(volumes), dtype=np.intp))
        figures = {k: {"value": v, "ci_low": None, "ci_high": None} for k, v in point.items()}
    all_lesions = [d for v in volumes for d, _ in v.lesions]
    froc = []
    for t in scores:
        key = f"{t:g}"
        froc.append(
            {
                "min_score": t,
                "sensitivity": figures[(key, "sensitivity")],
                "sensitivity_by_size": {name: figures[(key, name)] for name in SIZE_BINS},
                "false_positives_per_volume": figures[(key, "fp_per_volume")],
            }
        )
    return {
        "volumes": len(volumes),
        "lesions": len(all_lesions),
        "lesions_by_size": {
            name: sum(1 for d in all_lesions if size_bin(d) == name) for name in SIZE_BINS
        },
        "froc": froc,
        "lesions_split": sum(1 for v in volumes for n in v.candidates_per_lesion if n > 1),
        "candidates_joined": sum(1 for v in volumes for n in v.lesions_per_candidate if n > 1),
        "intervals": (
            f"95% percentile bootstrap over {len(volumes)} volumes ({resamples} resamples)"
            if len(volumes) > 1
            else "none: one volume"
        ),
        "hit": "a candidate sharing at least one voxel with the true lesion",
    }
