from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.evaluate.aggregate import aggregate_groups, resolve_aggregation
from oncoscope.evaluate.evaluation import EvaluationSettings, evaluate_predictions
from oncoscope.evaluate.metrics import Scores
from oncoscope.evaluate.operating_point import pick_threshold


def test_max_and_mean_aggregation_on_a_hand_case():
    scores = Scores.build(
        [0, 1, 1, 2, 2],
        [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]],
        ["a", "b", "c"],
    )
    groups = ["P1", "P1", "P1", "P2", "P2"]
    mean = aggregate_groups(scores, groups, "mean")
    assert mean.groups == ("P1", "P2")
    np.testing.assert_allclose(
        mean.scores.probabilities, [[1.0 / 3, 1.1 / 3, 0.9 / 3], [0.3, 0.25, 0.45]]
    )
    assert mean.scores.labels.tolist() == [1, 2]  # most frequent image label
    high = aggregate_groups(scores, groups, "max")
    # per-class maxima [0.7, 0.6, 0.5] and [0.5, 0.4, 0.8], each row divided by its sum
    np.testing.assert_allclose(
        high.scores.probabilities,
        [[0.7 / 1.8, 0.6 / 1.8, 0.5 / 1.8], [0.5 / 1.7, 0.4 / 1.7, 0.8 / 1.7]],
    )
    assert high.scores.predictions().tolist() == [0, 2]


def test_a_binary_group_is_positive_if_any_image_is():
    scores = Scores.build([0, 0, 1, 0, 0], [[0.9, 0.1]] * 5, ["healthy", "tumour"])
    grouped = aggregate_groups(scores, ["A", "A", "A", "B", "B"], "max")
    assert grouped.scores.labels.tolist() == [1, 0]
    assert resolve_aggregation("auto", 2) == "max" and resolve_aggregation("auto", 3) == "mean"
    with pytest.raises(InvalidOptionError, match="unknown aggregation"):
        resolve_aggregation("median", 2)
    with pytest.raises(OncoscopeError, match="4 group ids for 5 images"):
        aggregate_groups(scores, ["A"] * 4, "max")


def test_youden_and_target_sensitivity_thresholds():
    truth = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    score = np.array([0.1, 0.3, 0.6, 0.5, 0.7, 0.9])
    # thresholds 0.9/0.7: J = 1/3, 2/3; 0.6: 2/3 - 1/3; 0.5: 1 - 1/3 = 2/3 -> first max is 0.7
    point = pick_threshold(truth, score)
    assert point.threshold == 0.7 and point.val_specificity == 1.0
    assert point.val_sensitivity == pytest.approx(2 / 3)
    assert (
        pick_threshold(truth, score, method="sensitivity", target_sensitivity=1.0).threshold == 0.5
    )
    with pytest.raises(OncoscopeError, match="one class only"):
        pick_threshold(np.ones(3, bool), score[:3])


def _frame(p_tumour, labels, groups):
    return pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(len(labels))],
            "label": labels,
            "group": groups,
            "prob_healthy": [1 - p for p in p_tumour],
            "prob_tumour": p_tumour,
        }
    )


def test_the_threshold_is_picked_on_validation_and_applied_to_test():
    # On val the best cut is 0.8 (only the tumours score that high); on test the tumours score
    # 0.3-0.4, where a threshold picked on test would be 0.3 and look perfect.
    val = _frame([0.1, 0.2, 0.5, 0.8, 0.9], ["healthy"] * 3 + ["tumour"] * 2, list("abcde"))
    test = _frame([0.05, 0.1, 0.3, 0.4], ["healthy"] * 2 + ["tumour"] * 2, list("wxyz"))
    settings = EvaluationSettings(resamples=20, seed=0)
    metrics = evaluate_predictions(test, ["healthy", "tumour"], settings, val=val)
    point = metrics["operating_point"]
    assert point["picked_on"] == "val" and point["threshold"] == pytest.approx(0.8)
    assert point["confusion_matrix"]["counts"] == [[2, 0], [2, 0]]  # both test tumours missed
    assert point["classes"]["tumour"]["recall"]["value"] == 0.0
    assert metrics["classes"]["tumour"]["auroc"]["value"] == 1.0  # ranking alone is perfect
    assert metrics["group_level"]["operating_point"]["threshold"] == pytest.approx(0.8)
    without = evaluate_predictions(test, ["healthy", "tumour"], settings)
    assert without["operating_point"] is None and "no val split" in without["operating_point_note"]


def test_a_patient_with_tumour_and_healthy_slices_is_called_tumour_under_max():
    # Patient T: 2 healthy slices (p tumour ~0) and 3 tumour slices called at p ~1, as in the
    # demo's held-out patients; patient H: healthy slices only. Under "any tumour" (max), T's
    # tumour score is its highest slice score and its healthy score the complement.
    p_tumour = [0.001, 0.002, 0.999, 0.998, 0.997, 0.01, 0.03]
    labels = ["healthy", "healthy", "tumour", "tumour", "tumour", "healthy", "healthy"]
    test = _frame(p_tumour, labels, ["T"] * 5 + ["H"] * 2)
    grouped = aggregate_groups(
        Scores.build([int(v == "tumour") for v in labels], np.c_[1 - np.array(p_tumour), p_tumour],
                     ["healthy", "tumour"]),
        list(test["group"]),
        "max",
    )  # fmt: skip
    np.testing.assert_allclose(grouped.scores.probabilities, [[0.001, 0.999], [0.97, 0.03]])
    assert grouped.scores.predictions().tolist() == [1, 0]  # T tumour, H healthy
    metrics = evaluate_predictions(test, ["healthy", "tumour"], EvaluationSettings(resamples=5))
    group = metrics["group_level"]
    assert group["macro"]["accuracy"]["value"] == 1.0
    assert group["classes"]["tumour"]["recall"]["value"] == 1.0
    assert group["confusion_matrix"]["counts"] == [[1, 0], [0, 1]]


def test_the_positive_class_may_be_the_first_and_max_still_follows_it():
    scores = Scores.build([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], ["tumour", "healthy"])
    grouped = aggregate_groups(scores, ["A", "A", "B"], "max", positive=0)
    np.testing.assert_allclose(grouped.scores.probabilities, [[0.9, 0.1], [0.3, 0.7]])


def test_max_over_more_than_two_classes_sums_to_one_and_keeps_the_strongest_class():
    scores = Scores.build(
        [0, 1, 2, 2],
        [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]],
        ["a", "b", "c"],
    )
    grouped = aggregate_groups(scores, ["P", "P", "Q", "Q"], "max")
    np.testing.assert_allclose(grouped.scores.probabilities.sum(axis=1), [1.0, 1.0])
    # per-class maxima (0.6, 0.8, 0.1) and (0.3, 0.3, 0.6), each divided by its sum
    np.testing.assert_allclose(
        grouped.scores.probabilities, [[0.6 / 1.5, 0.8 / 1.5, 0.1 / 1.5], [0.25, 0.25, 0.5]]
    )
    assert grouped.scores.predictions().tolist() == [1, 2]
