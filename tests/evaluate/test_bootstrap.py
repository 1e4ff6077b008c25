from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from oncoscope.errors import InvalidOptionError
from oncoscope.evaluate.bootstrap import bootstrap, group_resamples


def test_every_resample_is_made_of_whole_groups():
    groups = ["p1", "p1", "p1", "p2", "p3", "p3"]
    members = {"p1": {0, 1, 2}, "p2": {3}, "p3": {4, 5}}
    for indices in group_resamples(groups, 50, seed=1):
        counts = Counter(indices.tolist())
        draws = 0
        for rows in members.values():
            times = {counts[i] for i in rows}
            assert len(times) == 1  # all images of a patient drawn equally often
            draws += times.pop()
        assert draws == 3  # as many groups drawn as there are


def test_resamples_depend_only_on_the_seed():
    a = [i.tolist() for i in group_resamples(list("aabbc"), 5, seed=7)]
    b = [i.tolist() for i in group_resamples(list("aabbc"), 5, seed=7)]
    c = [i.tolist() for i in group_resamples(list("aabbc"), 5, seed=8)]
    assert a == b and a != c


def test_group_resampling_is_wider_than_image_resampling_for_clustered_errors():
    # two patients of 50 images: one all right, one all wrong. By image the accuracy looks
    # pinned near 0.5; by patient a resample holds 0, 1 or 2 copies of the good patient.
    correct = np.array([1.0] * 50 + [0.0] * 50)
    by_patient = ["good"] * 50 + ["bad"] * 50
    by_image = [str(i) for i in range(100)]

    def stat(i):
        return {("accuracy",): float(correct[i].mean())}

    patient = bootstrap(stat, by_patient, n_resamples=400, seed=0)["accuracy",]
    image = bootstrap(stat, by_image, n_resamples=400, seed=0)["accuracy",]
    assert patient["value"] == image["value"] == 0.5
    assert (patient["ci_low"], patient["ci_high"]) == (0.0, 1.0)
    assert 0.35 < image["ci_low"] < 0.5 < image["ci_high"] < 0.65  # about 0.5 +- 2 x 0.05


def test_undefined_figures_get_no_interval_and_bad_options_fail():
    out = bootstrap(lambda i: {("x",): None}, ["a", "b"], n_resamples=5, seed=0)
    assert out["x",] == {"value": None, "ci_low": None, "ci_high": None}
    with pytest.raises(InvalidOptionError):
        bootstrap(lambda i: {}, ["a"], n_resamples=0, seed=0)


def _two_class_frame(groups_per_class: int, images_per_group: int = 3):
    import pandas as pd

    rows = []
    for g in range(2 * groups_per_class):
        tumour = g % 2 == 1
        for i in range(images_per_group):
            p = 0.9 - 0.1 * i if tumour else 0.1 + 0.1 * i
            rows.append(
                {
                    "path": f"{g}-{i}.png",
                    "label": "tumour" if tumour else "healthy",
                    "group": f"P{g}",
                    "prob_healthy": 1 - p,
                    "prob_tumour": p,
                }
            )
    return pd.DataFrame(rows)


def test_intervals_from_too_few_groups_per_class_are_flagged_at_both_levels():
    from oncoscope.evaluate.bootstrap import MIN_GROUPS_PER_CLASS
    from oncoscope.evaluate.evaluation import EvaluationSettings, evaluate_predictions

    settings = EvaluationSettings(resamples=20, val_split=None)
    few = evaluate_predictions(_two_class_frame(1), ["healthy", "tumour"], settings)
    # one patient per class: every resample of a perfect model gives the same figure
    assert few["macro"]["accuracy"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    for block in (few, few["group_level"]):
        assert block["intervals"]["trusted"] is False
        assert block["intervals"]["groups_per_class"] == {"healthy": 1, "tumour": 1}
        assert block["intervals"]["min_groups_per_class"] == MIN_GROUPS_PER_CLASS
        assert "not to be trusted" in block["intervals"]["warning"]
    enough = evaluate_predictions(
        _two_class_frame(MIN_GROUPS_PER_CLASS), ["healthy", "tumour"], settings
    )
    for block in (enough, enough["group_level"]):
        assert block["intervals"]["trusted"] is True and block["intervals"]["warning"] is None


def test_a_class_in_fewer_groups_than_the_minimum_is_named():
    from oncoscope.evaluate.bootstrap import MIN_GROUPS_PER_CLASS, interval_trust

    groups = [f"P{g}" for g in range(MIN_GROUPS_PER_CLASS) for _ in range(2)]
    labels = [0, 0] * (MIN_GROUPS_PER_CLASS - 1) + [0, 1]  # class b only in the last patient
    trust = interval_trust(np.array(labels), groups, ("a", "b"))
    assert trust["groups_per_class"] == {"a": MIN_GROUPS_PER_CLASS, "b": 1}
    assert trust["trusted"] is False and "b in 1 group" in trust["warning"]
