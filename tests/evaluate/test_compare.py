"""``compare`` on prediction tables: a paired difference is marked only on enough patients."""

from __future__ import annotations

import pandas as pd

from oncoscope.evaluate.bootstrap import MIN_GROUPS_PER_CLASS
from oncoscope.evaluate.compare import compare_predictions, comparison_report, tidy_rows
from oncoscope.evaluate.report import render_html


def _tables(groups_per_class: int) -> dict[str, pd.DataFrame]:
    """Model 'right' calls every image right, model 'wrong' every image wrong."""
    rows = []
    for g in range(2 * groups_per_class):
        label = "tumour" if g % 2 else "healthy"
        rows += [{"path": f"{g}-{i}.png", "label": label, "group": f"P{g}"} for i in range(2)]
    frame = pd.DataFrame(rows)
    truth = (frame["label"] == "tumour").astype(float)
    right = frame.assign(prob_tumour=0.1 + 0.8 * truth, prob_healthy=0.9 - 0.8 * truth)
    wrong = frame.assign(prob_tumour=0.9 - 0.8 * truth, prob_healthy=0.1 + 0.8 * truth)
    return {"wrong": wrong, "right": right}


def _accuracy_difference_cell(comparison):
    page = render_html(comparison_report(comparison, {}))
    table = page.split("Macro average: difference from wrong")[1].split("</table>")[0]
    return table.split("<td>right</td><td>")[1].split("</td>")[0]


def test_a_difference_on_two_patients_is_not_marked_significant():
    comparison = compare_predictions(_tables(1), ["healthy", "tumour"], resamples=50)
    difference = comparison["models"]["right"]["difference"]["macro"]["accuracy"]
    # every resample gives +1: an interval of zero width that excludes 0
    assert (difference["value"], difference["ci_low"], difference["ci_high"]) == (1.0, 1.0, 1.0)
    assert difference["spans_zero"] is False and difference["significant"] is False
    assert comparison["intervals"]["trusted"] is False
    cell = _accuracy_difference_cell(comparison)
    assert cell.startswith("+1.000") and "*" not in cell and "too few groups" in cell
    assert "not to be trusted" in render_html(comparison_report(comparison, {}))
    tidy = tidy_rows(comparison)
    assert not tidy["difference_significant"].fillna(False).astype(bool).any()


def test_the_same_difference_on_enough_patients_is_marked():
    comparison = compare_predictions(
        _tables(MIN_GROUPS_PER_CLASS), ["healthy", "tumour"], resamples=50
    )
    difference = comparison["models"]["right"]["difference"]["macro"]["accuracy"]
    assert difference["significant"] is True and comparison["intervals"]["trusted"] is True
    assert _accuracy_difference_cell(comparison).endswith(" *")
