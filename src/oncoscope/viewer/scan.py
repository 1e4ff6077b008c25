"""Find what an output folder of oncoscope holds: slides and their inference, CT patients, reports.

Every kind of output is optional: a folder holding only some of them (or files of other tools)
gives a catalog of what is there. A file that cannot be parsed is listed under ``problems``
(path and reason) instead of stopping the scan.

Recognised files (see the README's ``oncoscope view``): ``summary.json`` of ``oncoscope slide``
(with ``probabilities.npy``, ``heatmap.png``, ``segmentation.png`` beside it), whole-slide
images OpenSlide opens, CT ``manifest.csv`` files (columns ``path, patient_id, slice_index``),
``report.html`` of ``oncoscope evaluate``, ``explain.csv``, ``couinaud.json``, ``locate.json``,
``scale.json``, ``predictions.csv`` and ``attention.json`` of ``oncoscope mil predict`` (with
``attention.tif`` beside it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from oncoscope.viewer.safe_path import relative_to_root

#: Suffixes of whole-slide images looked at (TIFFs only when OpenSlide recognises them).
SLIDE_SUFFIXES = (
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".tif",
    ".tiff",
)
#: Folders never walked into.
SKIPPED_FOLDERS = frozenset({"node_modules", ".venv", ".git", "__pycache__", "checkpoints"})
#: File names that are outputs, never slides.
NOT_SLIDES = frozenset({"probabilities.tif", "attention.tif"})
#: Deepest folder level walked (0 = the folder itself).
MAX_DEPTH = 8
#: Largest JSON or CSV file parsed while scanning (bytes).
MAX_PARSED_BYTES = 64 * 1024 * 1024
#: Manifest columns that make a CT manifest.
CT_KEY_COLUMNS = ("path", "patient_id", "slice_index")


@dataclass
class SlideEntry:
    """A slide, with the output of ``oncoscope slide`` when there is one.

    Attributes:
        key: identifier in URLs: the inference folder relative to the served folder, or the
            slide file's relative path when the slide has no inference.
        name: what the index shows (the slide's file stem).
        slide_path: the slide file, None when the summary names a file that is not there.
        output_dir: the folder holding ``summary.json``; None for a slide without inference.
        summary: the parsed ``summary.json``.
        scale: relative path of a ``scale.json`` that belongs to this slide, if any.
        attention: relative paths of the ``attention.json`` files of ``oncoscope mil predict``
            for this slide (``attention.tif`` beside each), one per MIL prediction folder.
    """

    key: str
    name: str
    slide_path: Path | None
    output_dir: Path | None = None
    summary: dict[str, Any] | None = None
    scale: str | None = None
    attention: list[str] = field(default_factory=list)


@dataclass
class CtPatient:
    """One patient of a CT slice manifest.

    Attributes:
        key: ``<manifest relative path>#<patient_id>``.
        patient_id: as written in the manifest.
        manifest: the manifest file.
        rows: the patient's manifest rows, sorted by ``slice_index``.
        volume: the CT volume (``source`` column) when it can be found, else None.
        mask: its ``segmentation-N`` label mask beside it, if present.
    """

    key: str
    patient_id: str
    manifest: Path
    rows: list[dict[str, Any]]
    volume: Path | None = None
    mask: Path | None = None


@dataclass
class Catalog:
    """Everything :func:`scan` found; paths of single files are relative to ``root``."""

    root: Path
    slides: list[SlideEntry] = field(default_factory=list)
    ct_patients: list[CtPatient] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    explains: list[str] = field(default_factory=list)
    couinauds: list[str] = field(default_factory=list)
    locates: list[str] = field(default_factory=list)
    scales: list[str] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def slide(self, key: str) -> SlideEntry | None:
        """The slide entry of a key, or None."""
        return next((entry for entry in self.slides if entry.key == key), None)

    def patient(self, key: str) -> CtPatient | None:
        """The CT patient of a key, or None."""
        return next((p for p in self.ct_patients if p.key == key), None)


def scan(root: str | Path) -> Catalog:
    """Walk ``root`` (symbolic links not followed, at most :data:`MAX_DEPTH` levels deep).

    Raises:
        OncoscopeError: ``root`` is not a folder.
    """
    from oncoscope.errors import OncoscopeError

    base = Path(root).resolve()
    if not base.is_dir():
        raise OncoscopeError("is not a folder", root)
    catalog = Catalog(base)
    files = list(_walk(base))
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)

    def rel(path: Path) -> str:
        return relative_to_root(base, path) or str(path)

    for name, attribute in (
        ("report.html", "reports"),
        ("explain.csv", "explains"),
        ("couinaud.json", "couinauds"),
        ("locate.json", "locates"),
        ("scale.json", "scales"),
        ("predictions.csv", "predictions"),
    ):
        getattr(catalog, attribute).extend(sorted(rel(p) for p in by_name.get(name, [])))
    _add_inference(catalog, by_name.get("summary.json", []), rel)
    _add_plain_slides(catalog, files, rel)
    _attach_attention(catalog, by_name.get("attention.json", []), rel)
    _attach_scales(catalog, rel)
    for manifest in sorted(by_name.get("manifest.csv", [])):
        _add_ct_manifest(catalog, manifest, rel, by_name)
    return catalog


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file.

    Raises:
        ValueError: not JSON, not an object, or larger than :data:`MAX_PARSED_BYTES`.
    """
    if path.stat().st_size > MAX_PARSED_BYTES:
        raise ValueError(f"larger than {MAX_PARSED_BYTES} bytes")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("is not a JSON object")
    return data


def resolve_reference(reference: str, near: Path, root: Path) -> Path | None:
    """A file named in an output (absolute, or relative to the output, to ``root``, or to the
    working folder), or None when none of these exists."""
    path = Path(reference)
    candidates = [path] if path.is_absolute() else [near / path, root / path, Path.cwd() / path]
    return next((c.resolve() for c in candidates if c.exists()), None)


def _walk(base: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, names in os.walk(base, followlinks=False):
        depth = len(Path(folder).relative_to(base).parts)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_FOLDERS and not d.startswith(".") and depth < MAX_DEPTH
        )
        found.extend(Path(folder) / name for name in sorted(names) if not name.startswith("."))
    return found


def _is_slide(path: Path) -> bool:
    import openslide

    if path.name in NOT_SLIDES or path.suffix.lower() not in SLIDE_SUFFIXES:
        return False
    try:
        return openslide.OpenSlide.detect_format(path) is not None
    except (OSError, openslide.OpenSlideError):
        return False


def _records(
    catalog: Catalog, paths: list[Path], rel: Any
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each JSON file of ``paths`` (sorted) parsed; one that cannot be is listed as a problem."""
    for path in sorted(paths):
        try:
            yield path, read_json(path)
        except (OSError, ValueError) as error:
            catalog.problems.append((rel(path), f"unreadable {path.name}: {error}"))


def _add_inference(catalog: Catalog, summaries: list[Path], rel: Any) -> None:
    for summary_path, summary in _records(catalog, summaries, rel):
        if "class_names" not in summary and "classes" not in summary:
            continue  # another tool's summary
        folder = summary_path.parent
        slide_ref = summary.get("slide")
        slide = (
            resolve_reference(str(slide_ref), folder, catalog.root)
            if isinstance(slide_ref, str)
            else None
        )
        relative = summary.get("slide_relative")  # relative to the summary: a moved folder
        if slide is None and isinstance(relative, str):
            slide = resolve_reference(relative, folder, folder)
        name = Path(str(slide_ref)).stem if isinstance(slide_ref, str) else folder.name
        catalog.slides.append(SlideEntry(rel(folder), name, slide, folder, summary))


def _add_plain_slides(catalog: Catalog, files: list[Path], rel: Any) -> None:
    with_inference = {e.slide_path for e in catalog.slides if e.slide_path is not None}
    output_dirs = [e.output_dir for e in catalog.slides if e.output_dir is not None]
    for path in files:
        if path.resolve() in with_inference or any(path.is_relative_to(d) for d in output_dirs):
            continue
        if _is_slide(path):
            catalog.slides.append(SlideEntry(rel(path), path.stem, path.resolve()))


def _attach_attention(catalog: Catalog, records: list[Path], rel: Any) -> None:
    """An ``attention.json`` of ``mil predict`` belongs to the slide it names (found as the
    record says, or as the bag names it); a slide not yet listed gets an entry keyed by the
    record's folder."""
    for path, record in _records(catalog, records, rel):
        if "grid" not in record or "slide" not in record:
            continue  # another tool's file
        slide = next(
            (
                found
                for ref in (record.get("slide_found"), record.get("slide"))
                if isinstance(ref, str)
                and (found := resolve_reference(ref, path.parent, catalog.root)) is not None
            ),
            None,
        )
        entry = next(
            (e for e in catalog.slides if slide is not None and e.slide_path == slide), None
        )
        if entry is None:
            name = Path(str(record["slide"])).stem
            entry = SlideEntry(rel(path.parent), name, slide)
            catalog.slides.append(entry)
        entry.attention.append(rel(path))


def _attach_scales(catalog: Catalog, rel: Any) -> None:
    """A ``scale.json`` belongs to a slide when it names it, or lies in its inference folder or
    the folder above it."""
    for scale_rel in catalog.scales:
        path = catalog.root / scale_rel
        try:
            named = read_json(path).get("slide")
        except (OSError, ValueError) as error:
            catalog.problems.append((scale_rel, f"unreadable scale.json: {error}"))
            continue
        named_path = (
            resolve_reference(named, path.parent, catalog.root) if isinstance(named, str) else None
        )
        for entry in catalog.slides:
            near = entry.output_dir is not None and path.parent in (
                entry.output_dir,
                entry.output_dir.parent,
            )
            if (named_path is not None and named_path == entry.slide_path) or (
                named_path is None and near
            ):
                entry.scale = scale_rel


def _add_ct_manifest(
    catalog: Catalog, manifest: Path, rel: Any, by_name: dict[str, list[Path]]
) -> None:
    try:
        if manifest.stat().st_size > MAX_PARSED_BYTES:
            raise ValueError(f"larger than {MAX_PARSED_BYTES} bytes")
        table = pd.read_csv(manifest, dtype={"patient_id": str}, keep_default_na=False)
    except (OSError, ValueError) as error:
        catalog.problems.append((rel(manifest), f"unreadable manifest: {error}"))
        return
    if not all(column in table.columns for column in CT_KEY_COLUMNS):
        return  # a tile manifest or another table
    table["slice_index"] = pd.to_numeric(table["slice_index"], errors="coerce")
    table = table.dropna(subset=["slice_index"])
    table["slice_index"] = table["slice_index"].astype(int)
    for patient_id, group in table.groupby("patient_id", sort=False):
        rows = [
            {str(k): v for k, v in record.items()}
            for record in group.sort_values("slice_index").to_dict("records")
        ]
        volume = _find_volume(
            str(rows[0].get("source", "")),
            manifest.parent,
            catalog.root,
            by_name,
            relative=str(rows[0].get("source_relative", "")),
        )
        mask = _mask_beside(volume) if volume is not None else None
        catalog.ct_patients.append(
            CtPatient(
                f"{rel(manifest)}#{patient_id}", str(patient_id), manifest, rows, volume, mask
            )
        )


def _find_volume(
    source: str, near: Path, root: Path, by_name: dict[str, list[Path]], *, relative: str = ""
) -> Path | None:
    """The manifest's volume: ``source`` (absolute) if it exists, else ``source_relative``
    (relative to the manifest, for a moved folder), else older relative forms and the name."""
    if not source:
        return None
    if Path(source).is_absolute() and Path(source).exists():
        return Path(source).resolve()
    if relative and (near / relative).exists():
        return (near / relative).resolve()
    found = resolve_reference(source, near, root)
    if found is not None:
        return found
    name = Path(source).name  # the demo writes relative sources; look for the file in the folder
    matches = by_name.get(name, [])
    return matches[0].resolve() if matches else None


def _mask_beside(volume: Path) -> Path | None:
    name = volume.name
    if not name.startswith("volume-"):
        return None
    mask = volume.with_name("segmentation-" + name.removeprefix("volume-"))
    return mask if mask.exists() else None
