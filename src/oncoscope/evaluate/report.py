"""One self-contained HTML report: sections of text, key figures, tables and embedded PNGs.

A report is a list of :class:`ReportSection`; any stage can build a section and append it
(evaluation, localisation, comparison), and :func:`render_html` lays them out in order. Figures
are embedded as base64 PNG, so the file opens anywhere with nothing beside it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncoscope.io.atomic import atomic_path

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.4em}table{border-collapse:collapse;margin:.6em 0 1.2em;
font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f4f7}caption{text-align:left;
font-weight:600;padding:.3em 0}dl.facts{display:grid;grid-template-columns:max-content auto;
gap:.2em 1em}dl.facts dt{font-weight:600}dl.facts dd{margin:0;word-break:break-all}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.88em;color:#555;
max-width:560px}.note{background:#f7f9fc;border-left:4px solid #8aa4c8;padding:.5em 1em}
"""


@dataclass
class ReportFigure:
    """A PNG to embed: from a file (``path``) or bytes (``png``)."""

    title: str
    path: Path | None = None
    png: bytes | None = None
    caption: str = ""

    def data(self) -> bytes:
        """The PNG bytes."""
        if self.png is not None:
            return self.png
        if self.path is None:
            raise ValueError("a ReportFigure needs a path or PNG bytes")
        return Path(self.path).read_bytes()


@dataclass
class ReportTable:
    """A table of text cells; the first column is the row header."""

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""


@dataclass
class ReportSection:
    """A titled part of a report.

    Attributes:
        title: heading.
        paragraphs: plain-text paragraphs (escaped on rendering).
        summary: key figures shown as a short list (name → text), e.g. ``{"AUROC": "0.91 ..."}``.
        tables: tables in order.
        figures: figures in order.
        note: a highlighted plain-text box (e.g. how to read the section).
    """

    title: str
    paragraphs: list[str] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    note: str = ""


@dataclass
class Report:
    """A whole report: title, facts about what was evaluated, sections in order."""

    title: str
    facts: Mapping[str, str] = field(default_factory=dict)
    sections: list[ReportSection] = field(default_factory=list)

    def add(self, section: ReportSection) -> Report:
        """Append a section; returns the report for chaining."""
        self.sections.append(section)
        return self


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _facts(facts: Mapping[str, str]) -> str:
    items = "".join(f"<dt>{_escape(k)}</dt><dd>{_escape(v)}</dd>" for k, v in facts.items())
    return f'<dl class="facts">{items}</dl>'


def _table(table: ReportTable) -> str:
    head = "".join(f"<th>{_escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    note = f"<p><small>{_escape(table.note)}</small></p>" if table.note else ""
    return (
        f"<table><caption>{_escape(table.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{note}"
    )


def _figure(figure: ReportFigure) -> str:
    data = base64.b64encode(figure.data()).decode("ascii")
    caption = _escape(figure.title) + (f": {_escape(figure.caption)}" if figure.caption else "")
    return (
        f'<figure><img alt="{_escape(figure.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _section(section: ReportSection) -> str:
    parts = [f"<section><h2>{_escape(section.title)}</h2>"]
    if section.note:
        parts.append(f'<div class="note">{_escape(section.note)}</div>')
    parts += [f"<p>{_escape(p)}</p>" for p in section.paragraphs]
    if section.summary:
        parts.append(_facts(section.summary))
    parts += [_table(t) for t in section.tables]
    parts += [_figure(f) for f in section.figures]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The report as one HTML document (figures inline as base64 PNG, no external files).

    Example:
        >>> page = render_html(Report("Demo", {"model": "cnn"}, [ReportSection("Results",
        ...     paragraphs=["AUROC < 1"])]))
        >>> "<h2>Results</h2>" in page and "AUROC &lt; 1" in page
        True
    """
    body = "\n".join(_section(s) for s in report.sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_escape(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_escape(report.title)}</h1>{_facts(report.facts)}\n{body}\n</body></html>\n"
    )


def write_report(report: Report, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (atomically)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(render_html(report), encoding="utf-8")
    return path


def format_difference(estimate: Mapping[str, Any], groups: str = "groups") -> str:
    """A paired difference: ``"+0.120 (+0.050 to +0.190) *"`` (interval excludes 0),
    ``"... spans 0"``, ``"... (too few <groups> to judge)"`` or ``"N/A"``.

    Example:
        >>> format_difference({"value": 0.1, "ci_low": -0.1, "ci_high": 0.3, "spans_zero": True})
        '+0.100 (-0.100 to +0.300) spans 0'
    """
    if estimate["value"] is None:
        return "N/A"
    text = f"{estimate['value']:+.3f}"
    if estimate["ci_low"] is not None:
        text += f" ({estimate['ci_low']:+.3f} to {estimate['ci_high']:+.3f})"
        if estimate["spans_zero"]:
            text += " spans 0"
        else:
            text += " *" if estimate["significant"] else f" (too few {groups} to judge)"
    return text


def format_estimate(estimate: Mapping[str, float | None] | None, digits: int = 3) -> str:
    """``"0.912 (0.850 to 0.960)"``, ``"0.912"`` without an interval, ``"N/A"`` when undefined.

    Example:
        >>> format_estimate({"value": 0.9, "ci_low": 0.8, "ci_high": 1.0})
        '0.900 (0.800 to 1.000)'
        >>> format_estimate({"value": None, "ci_low": None, "ci_high": None})
        'N/A'
    """
    if estimate is None or estimate.get("value") is None:
        return "N/A"
    text = f"{estimate['value']:.{digits}f}"
    low, high = estimate.get("ci_low"), estimate.get("ci_high")
    if low is not None and high is not None:
        text += f" ({low:.{digits}f} to {high:.{digits}f})"
    return text
