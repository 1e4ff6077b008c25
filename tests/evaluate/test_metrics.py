"""Metrics against confusion matrices and rankings worked out by hand (numbers in comments)."""

from __future__ import annotations

import pytest

from oncoscope.errors import OncoscopeError
from oncoscope.evaluate.metrics import Scores, classification_metrics

# Binary: 6 healthy, 4 tumour; argmax calls tumour when p(tumour) > 0.5.
# healthy p(tumour): 0.1 0.2 0.3 0.6 0.7 0.15 -> 2 false positives, 4 true negatives
# tumour  p(tumour): 0.8 0.9 0.4 0.65         -> 3 true positives, 1 false negative
HEALTHY = [0.1, 0.2, 0.3, 0.6, 0.7, 0.15]
TUMOUR = [0.8, 0.9, 0.4, 0.65]


def _binary() -> Scores:
    p = HEALTHY + TUMOUR
    return Scores.build([0] * 6 + [1] * 4, [[1 - v, v] for v in p], ["healthy", "tumour"])


def test_binary_metrics_match_the_hand_worked_confusion_matrix():
    m = classification_metrics(_binary())
    assert m["confusion_matrix"]["counts"] == [[4, 2], [1, 3]]
    rows = m["confusion_matrix"]["normalized"]
    assert rows[0] == pytest.approx([4 / 6, 2 / 6]) and rows[1] == pytest.approx([1 / 4, 3 / 4])
    tumour = m["classes"]["tumour"]
    expected = {
        "accuracy": 7 / 10,
        "precision": 3 / 5,  # TP / (TP + FP)
        "recall": 3 / 4,  # TP / (TP + FN)
        "specificity": 4 / 6,  # TN / (TN + FP)
        "npv": 4 / 5,  # TN / (TN + FN)
        "f1": 2 * 0.6 * 0.75 / (0.6 + 0.75),
        # each tumour beats 6, 6, 4, 5 of the 6 healthy scores: 21 of 24 pairs
        "auroc": 21 / 24,
        # ranked: T T H T H T ...: precision at each tumour 1, 1, 3/4, 4/6, each recall step 1/4
        "average_precision": (1 + 1 + 3 / 4 + 4 / 6) / 4,
    }
    assert tumour == pytest.approx(expected, rel=1e-6)
    healthy = m["classes"]["healthy"]
    assert healthy["precision"] == pytest.approx(4 / 5, rel=1e-6)
    assert healthy["recall"] == pytest.approx(4 / 6, rel=1e-6)
    assert healthy["specificity"] == pytest.approx(3 / 4, rel=1e-6)
    assert healthy["npv"] == pytest.approx(3 / 5, rel=1e-6)
    # healthy scores 1 - p: ranked H H H H T H T H T T: precision 1, 1, 1, 1, 5/6, 6/8
    assert healthy["average_precision"] == pytest.approx((4 + 5 / 6 + 6 / 8) / 6, rel=1e-6)
    macro = m["macro"]
    assert macro["accuracy"] == pytest.approx(0.7, rel=1e-6)
    assert macro["recall"] == pytest.approx((3 / 4 + 4 / 6) / 2, rel=1e-6)
    assert macro["auroc"] == pytest.approx(21 / 24, rel=1e-6)
    assert macro["map"] == pytest.approx(
        ((1 + 1 + 3 / 4 + 4 / 6) / 4 + (4 + 5 / 6 + 6 / 8) / 6) / 2, rel=1e-6
    )


def test_a_threshold_moves_the_calls_of_a_binary_task():
    m = classification_metrics(_binary(), threshold=0.62, positive=1)
    # healthy 0.7 stays a false positive, 0.6 becomes a true negative; tumour 0.65 stays a hit
    assert m["confusion_matrix"]["counts"] == [[5, 1], [1, 3]]
    assert m["classes"]["tumour"]["specificity"] == pytest.approx(5 / 6, rel=1e-6)
    assert m["classes"]["tumour"]["auroc"] == pytest.approx(21 / 24, rel=1e-6)  # no threshold


def _three_class(rows: list[tuple[int, int]]) -> Scores:
    """Each (true, predicted) row scores 0.6 for the predicted class and 0.2 for the others."""
    probabilities = [[0.6 if j == called else 0.2 for j in range(3)] for _, called in rows]
    return Scores.build([t for t, _ in rows], probabilities, ["a", "b", "c"])


# true a: 3 called a, 1 called b; true b: 1 a, 2 b, 1 c; true c: 2 called c
THREE = [(0, 0)] * 3 + [(0, 1)] + [(1, 0)] + [(1, 1)] * 2 + [(1, 2)] + [(2, 2)] * 2


def test_three_class_metrics_match_the_hand_worked_confusion_matrix():
    m = classification_metrics(_three_class(THREE))
    assert m["confusion_matrix"]["counts"] == [[3, 1, 0], [1, 2, 1], [0, 0, 2]]
    expected = {
        # TP FP FN TN: a 3 1 1 5; b 2 1 2 5; c 2 1 0 7
        "a": {"precision": 3 / 4, "recall": 3 / 4, "specificity": 5 / 6, "npv": 5 / 6},
        "b": {"precision": 2 / 3, "recall": 2 / 4, "specificity": 5 / 6, "npv": 5 / 7},
        "c": {"precision": 2 / 3, "recall": 2 / 2, "specificity": 7 / 8, "npv": 7 / 7},
    }
    for name, values in expected.items():
        got = {k: m["classes"][name][k] for k in values}
        assert got == pytest.approx(values, rel=1e-6), name
    assert m["classes"]["b"]["f1"] == pytest.approx(4 / 7, rel=1e-6)  # 2PR / (P + R)
    assert m["classes"]["a"]["accuracy"] == pytest.approx(8 / 10, rel=1e-6)  # one-vs-rest
    # AUROC with ties counted as half: c's two 0.6 beat seven 0.2 and tie one 0.6 -> 7.5 / 8
    # a: three 0.6 vs (one 0.6, five 0.2) -> 5.5 each; one 0.2 -> 2.5; 19 / 24. b: 16 / 24
    aurocs = [m["classes"][c]["auroc"] for c in "abc"]
    assert aurocs == pytest.approx([19 / 24, 16 / 24, 7.5 / 8], rel=1e-6)
    assert m["macro"]["accuracy"] == pytest.approx(7 / 10, rel=1e-6)
    assert m["macro"]["precision"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3, rel=1e-6)


def test_a_class_absent_from_the_labels_is_undefined_not_a_crash():
    rows = [(0, 0), (0, 1), (1, 1), (1, 1), (1, 0)]  # no image of c, none called c
    m = classification_metrics(_three_class(rows))
    c = m["classes"]["c"]
    assert c["recall"] is None and c["auroc"] is None and c["average_precision"] is None
    assert c["precision"] is None and c["f1"] is None  # never called c either
    assert c["specificity"] == 1.0 and c["npv"] == 1.0  # every image rightly not c
    assert m["confusion_matrix"]["normalized"][2] is None
    # macro averages the classes where the figure is defined: recall of a (1/2) and b (2/3)
    assert m["macro"]["recall"] == pytest.approx((1 / 2 + 2 / 3) / 2, rel=1e-6)


def test_one_class_only_leaves_ranking_metrics_undefined():
    m = classification_metrics(Scores.build([1, 1], [[0.2, 0.8], [0.6, 0.4]], ["h", "t"]))
    assert m["classes"]["t"]["auroc"] is None and m["macro"]["auroc"] is None
    assert m["classes"]["t"]["specificity"] is None
    assert m["classes"]["t"]["recall"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "3 labels but 2 predictions"),
        ([0, 1], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], r"expected \(n, 2\)"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], r"class indices 0\.\.1"),
        ([], [], "expected"),
    ],
)
def test_mismatched_inputs_are_clear_errors(labels, probabilities, message):
    with pytest.raises(OncoscopeError, match=message):
        Scores.build(labels, probabilities, ["h", "t"])
