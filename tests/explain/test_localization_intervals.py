"""Patient-bootstrap intervals of localisation figures, alone and paired across models."""

from __future__ import annotations

import numpy as np
import pytest

from oncoscope.explain.localization_intervals import (
    ImageScore,
    localization_intervals,
    paired_localization,
    split_figures,
)
from oncoscope.explain.localization_metrics import pixel_counts, pxap


def image(path, patient, hit, *, lesions=(("10-20 mm", True),), heat=None, truth=None):
    if heat is None:
        heat, truth = np.zeros((4, 4)), np.zeros((4, 4), bool)
        truth[0, 0] = True
        heat[0 if hit else 3, 0 if hit else 3] = 1.0
    return ImageScore(
        path=path, group=patient, pointing=float(hit), random_image=1 / 16,
        random_liver=0.25, dice=0.5, iou=1 / 3, counts=pixel_counts(heat, truth, 10),
        lesions=tuple(lesions),
    )  # fmt: skip


def test_intervals_resample_patients_not_slices():
    # patient a: three hits; patient b: one miss. Point 0.75. Drawing patients, a resample is
    # {a, a} -> 1, {a, b} -> 0.75 or {b, b} -> 0 (one in four), so the 2.5th percentile is 0.
    # Drawing the four slices alone would put it at 0.25 (no hit in 4 draws: 1 in 256).
    images = [image(f"a{i}", "a", True) for i in range(3)] + [image("b0", "b", False)]
    result = localization_intervals(images, resamples=2000, seed=1)
    pointing = result["estimates"]["pointing_game"]
    assert pointing["value"] == 0.75
    assert (pointing["ci_low"], pointing["ci_high"]) == (0.0, 1.0)
    assert result["patients"] == 2 and not result["trusted"]
    assert "2 patients" in result["warning"]


def test_pxap_is_recomputed_from_the_drawn_slices_pixels():
    truth = np.zeros((2, 2), bool)
    truth[0] = True
    perfect = np.array([[0.9, 0.9], [0.1, 0.1]])
    inverted = perfect[::-1]
    images = [
        image("a", "a", True, heat=perfect, truth=truth),
        image("b", "b", False, heat=inverted, truth=truth),
    ]
    figures = split_figures(images)
    # the split's PxAP is that of the pooled pixels, not the mean of the two slices' PxAP
    pooled = pxap(images[0].counts + images[1].counts)
    assert figures["pxap"] == pytest.approx(pooled)
    assert figures["pxap"] != pytest.approx((pxap(images[0].counts) + pxap(images[1].counts)) / 2)
    estimate = localization_intervals(images, resamples=500, seed=0)["estimates"]["pxap"]
    assert estimate["ci_low"] == pytest.approx(pxap(images[1].counts))  # {b, b}
    assert estimate["ci_high"] == pytest.approx(1.0)  # {a, a}


def test_hit_rates_by_size_with_an_empty_bin_undefined():
    images = [
        image("a", "a", True, lesions=[("<10 mm", False), (">20 mm", True)]),
        image("b", "b", True, lesions=[(">20 mm", True)]),
    ]
    estimates = localization_intervals(images, resamples=200)["estimates"]
    assert estimates["hit_rate <10 mm"]["value"] == 0.0
    assert estimates["hit_rate >20 mm"]["value"] == 1.0
    assert estimates["hit_rate 10-20 mm"] == {"value": None, "ci_low": None, "ci_high": None}
    assert estimates["lesion_hit_rate"]["value"] == pytest.approx(2 / 3)


def test_paired_difference_on_the_same_patients():
    patients = [f"p{i}" for i in range(6)]
    reference = [image(p, p, i < 2) for i, p in enumerate(patients)]  # hits 2 of 6
    better = [image(p, p, True) for p in patients]  # hits all 6
    same = [image(p, p, i < 2) for i, p in enumerate(patients)]
    result = paired_localization(
        {"ref": reference, "better": better, "same": same}, reference="ref", resamples=500
    )
    assert result["trusted"] and result["patients"] == 6
    gain = result["models"]["better"]["difference"]["pointing_game"]
    assert gain["value"] == pytest.approx(4 / 6)
    assert gain["ci_low"] > 0 and not gain["spans_zero"] and gain["significant"]
    none = result["models"]["same"]["difference"]["pointing_game"]
    assert (none["value"], none["ci_low"], none["ci_high"]) == (0.0, 0.0, 0.0)
    assert none["spans_zero"] and not none["significant"]
    assert result["models"]["better"]["pointing_game"]["value"] == 1.0


def test_paired_comparison_with_few_patients_marks_nothing_significant():
    reference = [image(p, p, False) for p in "abc"]
    better = [image(p, p, True) for p in "abc"]
    result = paired_localization({"r": reference, "b": better}, reference="r", resamples=200)
    gain = result["models"]["b"]["difference"]["pointing_game"]
    assert gain["value"] == 1.0 and not gain["spans_zero"]
    assert gain["significant"] is False and not result["trusted"]


def test_models_scored_on_other_slices_are_refused():
    with pytest.raises(Exception, match="other slices"):
        paired_localization(
            {"r": [image("a", "a", True)], "b": [image("b", "a", True)]}, reference="r"
        )
