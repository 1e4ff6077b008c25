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
