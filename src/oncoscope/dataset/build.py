"""The skeleton every dataset-building command runs (``ct prepare``, ``wsi tile``).

A command hands :func:`build_dataset` its inputs (patients, slides) and its per-input job, which
writes one group's files and returns a :class:`GroupResult` (the group's manifest rows, the
stratum it is split by, warnings). The skeleton then does what every such command does:

1. run the job on every input (in this process or a pool, :func:`oncoscope.batch.run_guarded`):
   a bad input is a failure ``(path, message)`` and the others are still done, unless
   ``strict`` (the first bad input is raised); a job that cannot write its output
   (:class:`~oncoscope.errors.OutputWriteError`, a full disk) stops the batch, and the inputs not
   started are reported as not done;
2. split the groups train/val/test (:func:`oncoscope.dataset.split.split_groups`, stratified);
3. write ``manifest.csv``, the command's extra tables and its run record (JSON) beside it, all
   or none (each atomically, :mod:`oncoscope.io.atomic`). After failures, an error here (too
   few groups left for the split, a full disk) is one more failure rather than an exception,
   so that every failure is still reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from oncoscope import __version__
from oncoscope.batch import TableReport, run_guarded
from oncoscope.dataset.manifest import write_manifest
from oncoscope.dataset.split import SPLITS, split_groups
from oncoscope.errors import InvalidOptionError, OncoscopeError, OutputWriteError
from oncoscope.io.atomic import write_json

Item = TypeVar("Item")

#: An extra table written beside the manifest: ``(file name, rows, columns)``.
Table = tuple[str, list[dict[str, Any]], Sequence[str]]


@dataclass
class GroupResult:
    """What one input contributed: its group (patient or slide id, never split across
    train/val/test), its manifest rows (``split`` filled in by the skeleton), the stratum it is
    split by, and warnings (reported with the input's path)."""

    group: str
    rows: list[dict[str, Any]]
    stratum: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Entries of this group in the run record besides its split and stratum."""
        return {}


Result = TypeVar("Result", bound=GroupResult)


@dataclass
class DatasetReport(TableReport):
    """The outcome of a dataset build: :class:`~oncoscope.batch.TableReport`'s folder, rows
    (every written row, with its split) and failures, plus the manifest (None when no input
    succeeded), ``(path, message)`` warnings and each group's split.

    A subclass names its groups and rows (:attr:`GROUPS`, :attr:`ROWS`) and may count more per
    split (:meth:`row_counts`).
    """

    GROUPS: ClassVar[str] = "groups"
    ROWS: ClassVar[str] = "rows"

    manifest: Path | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)

    def split_table(self) -> list[dict[str, Any]]:
        """Per split: its name, groups, rows and :meth:`row_counts`."""
        table = []
        for split in SPLITS:
            rows = [r for r in self.rows if r["split"] == split]
            table.append(
                {
                    "split": split,
                    self.GROUPS: sum(1 for s in self.splits.values() if s == split),
                    self.ROWS: len(rows),
                    **self.row_counts(rows),
                }
            )
        return table

    def row_counts(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """More columns of :meth:`split_table` for one split's rows (none here)."""
        return {}


@dataclass(frozen=True)
class DatasetExtras:
    """A command's own part of the outputs, made once the results are in.

    Attributes:
        record: run record entries after the failures (e.g. the CT chain).
        tables: extra tables beside the manifest (e.g. ``lesions.csv``).
    """

    record: Mapping[str, Any] = field(default_factory=dict)
    tables: Sequence[Table] = ()


@dataclass(frozen=True)
class DatasetPlan(Generic[Item, Result]):
    """What :func:`build_dataset` needs to know about one command's dataset.

    Attributes:
        identify: an input's group id and path (the path names it among the failures).
        ratio: train/val/test shares of the groups.
        seed: seed of the split.
        columns: manifest columns, in order.
        record_name: file name of the run record beside the manifest (``prepare.json``).
        record: its first entries after ``oncoscope_version`` (inputs, options).
        order: sort key of group ids (the manifest's row order).
        fallback_split: when failures leave too few groups for ``ratio``, put every group in
            this split; None makes it a failure (no manifest).
        extras: called once with the sorted results before anything is written; its
            :class:`DatasetExtras` complete the record and the tables (and it may fill the
            command's own report fields).
    """

    identify: Callable[[Item], tuple[str, Path]]
    ratio: tuple[float, float, float]
    seed: int
    columns: Sequence[str]
    record_name: str
    record: Mapping[str, Any]
    order: Callable[[str], Any] = str
    fallback_split: str | None = None
    extras: Callable[[list[Result]], DatasetExtras] = lambda _results: DatasetExtras()


def build_dataset(
    inputs: Sequence[Item],
    job: Callable[[Item], Result],
    plan: DatasetPlan[Item, Result],
    report: DatasetReport,
    *,
    workers: int = 1,
    strict: bool = False,
    on_done: Callable[[str, str | None, int], None] | None = None,
) -> None:
    """Run ``job`` on every input, split the groups and write the dataset into
    ``report.out_dir`` (see the module docstring), filling ``report``.

    Args:
        inputs: the inputs, one group each.
        job: writes one input's files and returns its :class:`GroupResult` (picklable when
            ``workers > 1``: a module-level function or a ``functools.partial`` of one).
        plan: see :class:`DatasetPlan`.
        report: the command's report, possibly holding failures found before (filled here).
        workers: processes running ``job`` (1 = in this process).
        strict: raise the first bad input (and a table error) instead of reporting it.
        on_done: called after each input with ``(group id, error or None, number of inputs)``.

    Raises:
        OncoscopeError: with ``strict``, the first bad input; without earlier failures (or with
            ``strict``), a split or table that cannot be made.
        OutputWriteError: likewise, the manifest, a table or the record cannot be written (no
            table is left without the others).
    """
    report.out_dir.mkdir(parents=True, exist_ok=True)
    results = _run_inputs(inputs, job, plan, report, workers, strict, on_done)
    if not results:
        return
    results.sort(key=lambda r: plan.order(r.group))
    extras = plan.extras(results)
    try:
        _split(results, plan, report)
        report.manifest = _write(results, plan, report, extras)
    except OncoscopeError as error:
        if strict or not report.failures:
            raise
        report.manifest, report.rows, report.splits = None, [], {}
        report.failures.append((str(error.path or report.out_dir), error.message))


def _run_inputs(
    inputs: Sequence[Item],
    job: Callable[[Item], Result],
    plan: DatasetPlan[Item, Result],
    report: DatasetReport,
    workers: int,
    strict: bool,
    on_done: Callable[[str, str | None, int], None] | None,
) -> list[Result]:
    """The guarded loop: each input's result, its failure or its warnings into ``report``."""
    results: list[Result] = []
    finished: set[str] = set()
    for item, outcome in run_guarded(job, inputs, workers):
        group, path = plan.identify(item)
        finished.add(group)
        if isinstance(outcome, OncoscopeError):
            if strict:
                raise outcome
            report.failures.append((str(outcome.path or path), outcome.message))
            if on_done:
                on_done(group, str(outcome), len(inputs))
            if isinstance(outcome, OutputWriteError):  # a full disk: the others would fail too
                stop = f"not done: the batch stopped when writing {outcome.path} failed"
                waiting = [plan.identify(other) for other in inputs]
                report.failures.extend((str(p), stop) for g, p in waiting if g not in finished)
                break
            continue
        results.append(outcome)
        report.warnings.extend((str(path), warning) for warning in outcome.warnings)
        if on_done:
            on_done(group, None, len(inputs))
    return results


def _split(results: list[Result], plan: DatasetPlan[Item, Result], report: DatasetReport) -> None:
    """Each group's split into ``report.splits`` and its rows (with the split) into
    ``report.rows``."""
    try:
        strata = {r.group: r.stratum for r in results}
        report.splits = split_groups(strata, plan.ratio, seed=plan.seed)
    except InvalidOptionError:
        if plan.fallback_split is None:
            raise
        report.splits = {r.group: plan.fallback_split for r in results}
    for result in results:
        for row in result.rows:
            row["split"] = report.splits[result.group]
            report.rows.append(row)


def _write(
    results: list[Result],
    plan: DatasetPlan[Item, Result],
    report: DatasetReport,
    extras: DatasetExtras,
) -> Path:
    """Write the manifest, the extra tables and the run record; return the manifest's path.

    Raises:
        OutputWriteError: one cannot be written; those written before are removed.
    """
    out = report.out_dir
    record = {
        "oncoscope_version": __version__,
        **plan.record,
        report.GROUPS: {
            r.group: {"split": report.splits[r.group], "stratum": r.stratum, **r.summary()}
            for r in results
        },
        "split_table": report.split_table(),
        "failures": [{"path": p, "error": m} for p, m in report.failures],
        **extras.record,
    }
    tables: list[Table] = [("manifest.csv", report.rows, plan.columns), *extras.tables]
    written: list[Path] = []
    writing = out / plan.record_name
    try:
        for name, rows, columns in tables:
            writing = out / name
            write_manifest(rows, writing, columns)
            written.append(writing)
        writing = out / plan.record_name
        write_json(writing, record, indent=2)
    except OSError as error:
        for path in written:  # no table without the others
            path.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write ({error.strerror or error})", writing) from error
    return out / "manifest.csv"
