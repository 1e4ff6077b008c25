"""The dataset skeleton that ``ct prepare`` and ``wsi tile`` run, on a toy per-input job: a bad
input is reported and the others written, ``strict`` stops at it, a full disk stops the batch,
every group lands in one split, and the manifest, extra tables and run record are written
together or not at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest

from oncoscope.dataset.build import (
    DatasetExtras,
    DatasetPlan,
    DatasetReport,
    GroupResult,
    build_dataset,
)
from oncoscope.dataset.split import SPLITS
from oncoscope.errors import InvalidOptionError, OncoscopeError, OutputWriteError

COLUMNS = ("path", "group", "label", "split")


@dataclass(frozen=True)
class Item:
    name: str
    path: Path
    fail: str = ""  # "bad": an unreadable input; "disk": its output cannot be written


class Report(DatasetReport):
    GROUPS: ClassVar[str] = "cases"
    ROWS: ClassVar[str] = "images"


def job(item: Item) -> GroupResult:
    """Two rows per input, stratum by the name's first letter; a warning for names with w."""
    if item.fail == "bad":
        raise OncoscopeError("cannot read", item.path)
    if item.fail == "disk":
        raise OutputWriteError("cannot write (No space left on device)", item.path / "x.png")
    rows = [
        {"path": f"{item.name}/{k}.png", "group": item.name, "label": item.name[0], "split": ""}
        for k in range(2)
    ]
    warnings = ["looks odd"] if "w" in item.name else []
    return GroupResult(item.name, rows, item.name[0], warnings)


def plan(
    ratio: tuple[float, float, float] = (0.6, 0.2, 0.2), **more: Any
) -> DatasetPlan[Item, GroupResult]:
    return DatasetPlan[Item, GroupResult](
        identify=lambda item: (item.name, item.path),
        ratio=ratio,
        seed=1,
        columns=COLUMNS,
        record_name="run.json",
        record={"input": "somewhere"},
        **more,
    )


def items(tmp_path: Path, names: str, **fails: str) -> list[Item]:
    return [Item(name, tmp_path / "in" / name, fails.get(name, "")) for name in names.split()]


def test_good_inputs_are_written_split_by_group_and_a_bad_one_reported(tmp_path: Path) -> None:
    inputs = items(tmp_path, "a1 a2 a3 b1 b2 bw c1", b2="bad")
    done: list[tuple[str, str | None, int]] = []
    report = Report(out_dir=tmp_path / "out")
    build_dataset(inputs, job, plan(), report, on_done=lambda *call: done.append(call))

    assert report.failures == [(str(tmp_path / "in" / "b2"), "cannot read")]
    assert report.warnings == [(str(tmp_path / "in" / "bw"), "looks odd")]
    assert sorted((name, error is None, total) for name, error, total in done) == sorted(
        (i.name, i.fail == "", 7) for i in inputs
    )
    good = ["a1", "a2", "a3", "b1", "bw", "c1"]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert report.manifest == tmp_path / "out" / "manifest.csv"
    assert list(manifest.columns) == list(COLUMNS)
    assert list(manifest["group"]) == [g for g in good for _ in range(2)]  # sorted by group
    per_group = manifest.groupby("group")["split"].nunique()
    assert (per_group == 1).all() and set(manifest["split"]) <= set(SPLITS)
    assert sorted(report.splits) == good
    assert dict(zip(manifest["group"], manifest["split"], strict=True)) == report.splits

    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["input"] == "somewhere"
    assert record["failures"] == [{"path": str(tmp_path / "in" / "b2"), "error": "cannot read"}]
    assert {g: c["split"] for g, c in record["cases"].items()} == report.splits
    assert record["cases"]["bw"]["stratum"] == "b"
    table = {row["split"]: row for row in record["split_table"]}
    for split in SPLITS:
        assert table[split]["cases"] == sum(1 for s in report.splits.values() if s == split)
        assert table[split]["images"] == int((manifest["split"] == split).sum())


def test_strict_raises_the_first_bad_input_and_writes_no_manifest(tmp_path: Path) -> None:
    inputs = items(tmp_path, "a1 b1 c1 d1", c1="bad")
    with pytest.raises(OncoscopeError, match="cannot read"):
        build_dataset(inputs, job, plan(), Report(out_dir=tmp_path / "out"), strict=True)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_a_full_disk_stops_the_batch_and_reports_the_inputs_not_done(tmp_path: Path) -> None:
    inputs = items(tmp_path, "a1 b1 c1 d1", b1="disk")
    report = Report(out_dir=tmp_path / "out")
    build_dataset(inputs, job, plan(ratio=(1.0, 0.0, 0.0)), report)
    where = tmp_path / "in" / "b1" / "x.png"
    stop = f"not done: the batch stopped when writing {where} failed"
    assert report.failures == [
        (str(where), "cannot write (No space left on device)"),
        (str(tmp_path / "in" / "c1"), stop),
        (str(tmp_path / "in" / "d1"), stop),
    ]
    assert list(pd.read_csv(tmp_path / "out" / "manifest.csv")["group"]) == ["a1", "a1"]


def test_too_few_groups_left_for_the_split_is_one_more_failure_or_all_go_to_the_fallback(
    tmp_path: Path,
) -> None:
    inputs = items(tmp_path, "a1 b1 c1", b1="bad")  # two left cannot fill train, val and test
    report = Report(out_dir=tmp_path / "fail")
    build_dataset(inputs, job, plan(), report)
    assert report.manifest is None and report.rows == [] and len(report.failures) == 2
    assert report.failures[1][0] == str(tmp_path / "fail")
    assert "cannot fill a split" in report.failures[1][1]
    assert not (tmp_path / "fail" / "manifest.csv").exists()

    report = Report(out_dir=tmp_path / "train")
    build_dataset(inputs, job, plan(fallback_split="train"), report)
    assert report.splits == {"a1": "train", "c1": "train"}
    assert set(pd.read_csv(tmp_path / "train" / "manifest.csv")["split"]) == {"train"}

    with pytest.raises(InvalidOptionError):  # without failures before, it is an error
        build_dataset(items(tmp_path, "a1 c1"), job, plan(), Report(out_dir=tmp_path / "x"))


def test_extra_tables_and_record_come_from_the_results_and_none_is_left_alone(
    tmp_path: Path,
) -> None:
    inputs = items(tmp_path, "a1 b1 c1")
    columns = ("group", "rows")

    def extras(results: list[GroupResult]) -> DatasetExtras:
        counts = [{"group": r.group, "rows": len(r.rows)} for r in results]
        return DatasetExtras(record={"total": 6}, tables=[("counts.csv", counts, columns)])

    out = tmp_path / "out"
    build_dataset(inputs, job, plan(extras=extras), Report(out_dir=out))
    assert json.loads((out / "run.json").read_text())["total"] == 6
    assert pd.read_csv(out / "counts.csv").to_dict("list") == {
        "group": ["a1", "b1", "c1"],
        "rows": [2, 2, 2],
    }

    blocked = tmp_path / "blocked"
    (blocked / "counts.csv").mkdir(parents=True)  # a folder in the table's place
    (blocked / "counts.csv" / "keep").write_text("")
    with pytest.raises(OutputWriteError) as raised:
        build_dataset(inputs, job, plan(extras=extras), Report(out_dir=blocked))
    assert raised.value.path == blocked / "counts.csv"
    assert not (blocked / "manifest.csv").exists() and not (blocked / "run.json").exists()
