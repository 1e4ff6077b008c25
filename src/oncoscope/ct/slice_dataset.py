"""``ct prepare``: LiTS-style volumes -> labelled transverse slice PNGs + a patient-split manifest.

For each patient ``N`` (``volume-N`` with ``segmentation-N``) the volume is read in HU in the
canonical layout, its mask checked against it, its slices labelled from the mask
(:mod:`oncoscope.ct.slices`), the chosen slices windowed and written as 8-bit PNG under
``OUT/slices/patient-N/`` (written to a temporary folder, renamed when complete), with their
masks at the same size under ``OUT/masks/patient-N/``: ``slice-KKKK-lesions.png`` holds each
pixel's lesion id (0 none; ids as in ``lesions.csv``) and ``slice-KKKK-liver.png`` the liver
including its lesions (255) (manifest columns ``lesion_mask`` and ``liver_mask``). The seed-001
chain (``options.chain``: median denoising, liver ROI, masking; :func:`oncoscope.ct.chain.
apply_chain`) is applied to each slice in HU before windowing and recorded in the ``chain``
column and ``prepare.json``; with the EM ROI each slice's ROI is scored against the liver label
(``roi_dice``). A re-run into a folder whose ``prepare.json`` records another chain first removes
the earlier slices, masks and tables, and says so (``report.notes``). Patients are
then split by :func:`oncoscope.dataset.split.split_groups`, stratified by whether they have a
lesion larger than ``small_mm``, only small lesions, or none. A bad patient is reported and the
others still written, unless ``strict``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from skimage.transform import resize

from oncoscope.ct.chain import SliceChain, apply_chain, chain_text, describe, fill_hu
from oncoscope.ct.lesions import label_lesions
from oncoscope.ct.liver_roi import dice
from oncoscope.ct.render import render_slice
from oncoscope.ct.slices import TUMOUR, TUMOUR_LABEL, label_slices, select_slices
from oncoscope.ct.window import HUWindow
from oncoscope.dataset.build import (
    DatasetExtras,
    DatasetPlan,
    DatasetReport,
    GroupResult,
    build_dataset,
)
from oncoscope.dataset.manifest import CT_COLUMNS
from oncoscope.dataset.split import split_counts
from oncoscope.errors import InvalidVolumeError, OncoscopeError, OutputWriteError
from oncoscope.io.atomic import atomic_path
from oncoscope.io.volumes import (
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    check_same_grid,
    read_label_mask,
    read_volume,
)

LESION_COLUMNS = (
    "patient_id",
    "lesion_id",
    "diameter_mm",
    "volume_ml",
    "small",
    "first_slice",
    "last_slice",
)


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``ct prepare``.

    Attributes:
        windows: one window (greyscale PNG) or three (RGB PNG, one window per channel).
        small_mm: lesions whose largest in-plane diameter is at most this are small (mm).
        only_small: keep only tumour slices whose lesions are all small.
        healthy_per_patient: healthy slices sampled evenly along each patient's liver.
        ratio: train/val/test shares of patients.
        seed: seed of the split.
        size_px: resize slices to ``size_px`` x ``size_px``; None keeps the volume's size.
        volume_prefix: file-name prefix of volumes (LiTS: ``volume-``).
        mask_prefix: file-name prefix of masks (LiTS: ``segmentation-``).
        spacing_mm: voxel size ``(D, H, W)`` in mm for files whose own is zero, negative or NaN;
            None refuses such files.
        chain: the seed-001 chain applied to every slice (default: none).
        on_empty_roi: a slice whose liver ROI comes out empty is ``"keep"`` (written unmasked)
            or ``"drop"`` (not written); either way it is reported.
    """

    windows: tuple[HUWindow, ...]
    small_mm: float = 20.0
    only_small: bool = False
    healthy_per_patient: int = 20
    ratio: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    size_px: int | None = None
    volume_prefix: str = "volume-"
    mask_prefix: str = "segmentation-"
    spacing_mm: tuple[float, float, float] | None = None
    chain: SliceChain = field(default_factory=SliceChain)
    on_empty_roi: Literal["keep", "drop"] = "keep"


@dataclass(frozen=True)
class Case:
    """One patient's input files."""

    patient_id: str
    volume: Path
    mask: Path | None


@dataclass
class PatientResult(GroupResult):
    """What one patient contributed (:class:`~oncoscope.dataset.build.GroupResult`: the
    patient id as ``group``, manifest rows, stratum), its lesions' ``lesions.csv`` rows and
    (with a chain) the ROI Dice of every slice the chain ran on and the slices whose ROI was
    empty."""

    lesions: list[dict[str, Any]] = field(default_factory=list)
    roi_dice: list[float] = field(default_factory=list)
    empty_roi: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PrepareReport(DatasetReport):
    """The outcome of a ``ct prepare`` run (:class:`~oncoscope.dataset.build.DatasetReport`:
    folder, manifest, rows, failures, splits), with the slices whose liver ROI was empty, the
    ROI Dice summary (:func:`roi_dice_summary`) and notes (an earlier chain removed)."""

    GROUPS: ClassVar[str] = "patients"
    ROWS: ClassVar[str] = "slices"

    empty_roi: list[dict[str, Any]] = field(default_factory=list)
    roi_dice: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def row_counts(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Tumour and healthy slices of one split."""
        tumour = sum(1 for r in rows if r["label"] == TUMOUR)
        return {"tumour": tumour, "healthy": len(rows) - tumour}


def find_cases(
    folder: str | Path, *, volume_prefix: str = "volume-", mask_prefix: str = "segmentation-"
) -> tuple[list[Case], list[tuple[str, str]]]:
    """Pair volumes with their masks by patient id in a LiTS-style folder.

    A volume is ``<volume_prefix>N`` followed by ``.nii``, ``.nii.gz``, ``.mha``, ``.nrrd``, or a
    folder of DICOM files; its mask is ``<mask_prefix>N`` in any of those forms.

    Returns:
        ``(cases, problems)``: cases sorted by patient id (a case whose mask is missing has
        ``mask=None``), and ``(path, message)`` for masks without a volume.

    Raises:
        OncoscopeError: the folder does not exist or holds no volume.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OncoscopeError("is not a folder", folder)
    volumes = _by_id(folder, volume_prefix)
    masks = _by_id(folder, mask_prefix)
    if not volumes:
        raise OncoscopeError(
            f"no {volume_prefix}N.nii[.gz] volumes (or {volume_prefix}N/ DICOM folders) found",
            folder,
        )
    cases = [Case(pid, path, masks.get(pid)) for pid, path in volumes.items()]
    problems = [
        (str(path), f"mask without a {volume_prefix}{pid} volume")
        for pid, path in masks.items()
        if pid not in volumes
    ]
    return sorted(cases, key=lambda c: _natural(c.patient_id)), problems


def prepare_case(case: Case, out_dir: Path, options: PrepareOptions) -> PatientResult:
    """Label, select and write the slices of one patient.

    Raises:
        OncoscopeError: a missing, unreadable or inconsistent volume or mask.
    """
    if case.mask is None:
        raise InvalidVolumeError(
            f"no {options.mask_prefix}{case.patient_id}.nii[.gz] mask beside it", case.volume
        )
    volume = read_volume(case.volume, spacing_mm=options.spacing_mm)
    mask = read_label_mask(case.mask, max_label=2, spacing_mm=options.spacing_mm)
    check_same_grid(volume, mask)
    if not (mask.array >= 1).any():
        raise InvalidVolumeError("mask holds no liver or tumour voxels (labels 1, 2)", case.mask)
    if options.chain.roi == "mask" and not (mask.array == 1).any():
        raise InvalidVolumeError(
            "--roi mask needs the liver label (1), and this segmentation has none", case.mask
        )
    labels, lesions = label_slices(mask.array, volume.spacing_mm, small_mm=options.small_mm)
    chosen = select_slices(
        labels, healthy_per_patient=options.healthy_per_patient, only_small=options.only_small
    )
    folder_name = f"patient-{case.patient_id}"
    rows: list[dict[str, Any]] = []
    scores: list[float] = []
    empty: list[dict[str, Any]] = []
    chain = options.chain
    chain_cell = chain_text(chain.record())
    fill = fill_hu(options.windows)  # black in every window's PNG
    pixel_mm = (volume.spacing_mm[1], volume.spacing_mm[2])
    lesion_ids = _LesionIds(mask.array == TUMOUR_LABEL)
    writing = out_dir / "slices" / folder_name  # the file being written, named if writing fails
    try:
        with (
            atomic_path(out_dir / "slices" / folder_name) as temporary,
            atomic_path(out_dir / "masks" / folder_name) as masks,
        ):
            temporary.mkdir(parents=True)
            masks.mkdir(parents=True)
            for item in chosen:
                name = f"slice-{item.slice_index:04d}.png"
                lesion_name, liver_name = (
                    name.replace(".png", "-lesions.png"),
                    name.replace(".png", "-liver.png"),
                )
                liver_slice = mask.array[item.slice_index] >= 1
                chained = apply_chain(
                    volume.array[item.slice_index],
                    chain,
                    liver_slice,
                    pixel_mm=pixel_mm,
                    fill_hu=fill,
                )
                score = None
                if chain.roi == "em" and chained.roi is not None:
                    score = dice(chained.roi, liver_slice)
                    scores.append(score)
                if chained.roi_empty:
                    drop = options.on_empty_roi == "drop"
                    empty.append(
                        {
                            "patient_id": case.patient_id,
                            "volume": str(case.volume),
                            "slice_index": item.slice_index,
                            "label": item.label,
                            "action": "dropped" if drop else "kept unmasked",
                        }
                    )
                    if drop:
                        continue
                writing = out_dir / "slices" / folder_name / name
                image = render_slice(chained.hu, options.windows, options.size_px)
                Image.fromarray(image).save(temporary / name)
                writing = out_dir / "masks" / folder_name / liver_name
                liver = liver_slice.astype(np.uint8) * 255
                Image.fromarray(_resize_mask(liver, options)).save(masks / liver_name)
                writing = out_dir / "masks" / folder_name / lesion_name
                ids = _resize_mask(lesion_ids.slice(item.slice_index), options)
                Image.fromarray(ids).save(masks / lesion_name)
                geometry = (volume.spacing_mm, volume.shape, out_dir)
                row = _row(case, item, folder_name, name, options, *geometry)
                row["chain"] = chain_cell
                row["roi_dice"] = "" if score is None else round(score, 4)
                row["roi_empty"] = chained.roi_empty
                rows.append(row)
    except OSError as error:  # a full disk...: the partial folders are gone (atomic_path)
        reason = error.strerror or str(error)
        raise OutputWriteError(f"cannot write ({reason})", writing) from error
    lesion_rows = [
        {
            "patient_id": case.patient_id,
            "lesion_id": lesion.lesion_id,
            "diameter_mm": round(lesion.diameter_mm, 3),
            "volume_ml": round(lesion.volume_ml, 4),
            "small": lesion.is_small(options.small_mm),
            "first_slice": lesion.slice_indices[0],
            "last_slice": lesion.slice_indices[-1],
        }
        for lesion in lesions
    ]
    if not lesions:
        stratum = "no-tumour"
    elif all(lesion.is_small(options.small_mm) for lesion in lesions):
        stratum = "small-only"
    else:
        stratum = "large"
    return PatientResult(
        case.patient_id, rows, stratum, lesions=lesion_rows, roi_dice=scores, empty_roi=empty
    )


def _row(
    case: Case,
    item: Any,
    folder_name: str,
    name: str,
    options: PrepareOptions,
    spacing_mm: tuple[float, float, float],
    shape: tuple[int, int, int],
    out_dir: Path,
) -> dict[str, Any]:
    """The manifest row of one written slice (``split`` filled in later).

    ``source`` is the volume's absolute path, ``source_relative`` its path relative to the
    manifest's folder (for a moved folder); a reader takes the first that exists.
    """
    slice_mm, row_mm, col_mm = spacing_mm
    source_relative = os.path.relpath(case.volume.absolute(), out_dir.absolute())
    if options.size_px is not None:
        row_mm = row_mm * shape[1] / options.size_px
        col_mm = col_mm * shape[2] / options.size_px
    return {
        "path": f"slices/{folder_name}/{name}",
        "patient_id": case.patient_id,
        "slice_index": item.slice_index,
        "label": item.label,
        "split": "",
        "lesion_count": item.lesion_count,
        "max_lesion_mm": round(item.max_lesion_mm, 3),
        "liver_fraction": round(item.liver_fraction, 6),
        "group": case.patient_id,
        "max_section_mm": round(item.max_section_mm, 3),
        "all_small": item.all_small,
        "row_mm": row_mm,
        "col_mm": col_mm,
        "slice_mm": slice_mm,
        "window": ",".join(w.name for w in options.windows),
        "source": str(case.volume.absolute()),
        "lesion_mask": f"masks/{folder_name}/{name.replace('.png', '-lesions.png')}",
        "liver_mask": f"masks/{folder_name}/{name.replace('.png', '-liver.png')}",
        "source_relative": source_relative,
    }


def prepare_dataset(
    folder: str | Path,
    out_dir: str | Path,
    options: PrepareOptions,
    *,
    workers: int = 1,
    strict: bool = False,
    on_case_done: Callable[[str, str | None, int], None] | None = None,
) -> PrepareReport:
    """Run ``ct prepare`` over a folder of volumes.

    Args:
        folder: the LiTS-style input folder.
        out_dir: output folder (``manifest.csv``, ``lesions.csv``, ``prepare.json``, ``slices/``).
        options: see :class:`PrepareOptions`.
        workers: processes reading volumes in parallel (1 = in this process).
        strict: stop at the first bad patient instead of reporting it at the end.
        on_case_done: called after each patient with ``(patient_id, error message or None,
            number of patients)``.

    Returns:
        The :class:`PrepareReport`; ``manifest`` is None when no patient succeeded.

    Raises:
        OncoscopeError: the folder holds no volume, too few patients for the split, or (with
            ``strict``) the first bad patient.
        OutputWriteError: the manifest, ``lesions.csv`` or ``prepare.json`` cannot be written
            (a patient that cannot be written is a failure, and stops the batch: the remaining
            patients are reported as not done).
    """
    out = Path(out_dir)
    cases, problems = find_cases(
        folder, volume_prefix=options.volume_prefix, mask_prefix=options.mask_prefix
    )
    if strict and problems:
        raise OncoscopeError(problems[0][1], problems[0][0])
    split_counts(len(cases), options.ratio)  # too few patients for the split: fail before work
    report = PrepareReport(out_dir=out, failures=list(problems))
    report.notes = _clear_other_chain(out, options.chain)

    def extras(results: list[PatientResult]) -> DatasetExtras:
        report.empty_roi = [event for r in results for event in r.empty_roi]
        report.roi_dice = roi_dice_summary([score for r in results for score in r.roi_dice])
        return DatasetExtras(
            record={
                "chain": options.chain.record(),
                "roi_dice": report.roi_dice,
                "empty_roi": report.empty_roi,
                "notes": report.notes,
            },
            tables=[("lesions.csv", [x for r in results for x in r.lesions], LESION_COLUMNS)],
        )

    plan = DatasetPlan[Case, PatientResult](
        identify=lambda case: (case.patient_id, case.volume),
        ratio=options.ratio,
        seed=options.seed,
        columns=CT_COLUMNS,
        record_name="prepare.json",
        record={
            "input": str(Path(folder).resolve()),
            "options": {**asdict(options), "windows": [asdict(w) for w in options.windows]},
        },
        order=_natural,
        extras=extras,
    )
    job = partial(prepare_case, out_dir=out, options=options)
    build_dataset(cases, job, plan, report, workers=workers, strict=strict, on_done=on_case_done)
    return report


def roi_dice_summary(scores: list[float]) -> dict[str, Any] | None:
    """Distribution of the EM ROI's Dice against the liver label: ``slices``, ``min``, ``q1``,
    ``median``, ``q3``, ``max``, ``mean`` and ``below_0.5`` (count); None without scores.

    Every slice the chain ran on counts, dropped ones too (an empty ROI scores 0).
    """
    if not scores:
        return None
    values = np.asarray(scores, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "slices": int(values.size),
        "min": round(float(values.min()), 4),
        "q1": round(float(q1), 4),
        "median": round(float(median), 4),
        "q3": round(float(q3), 4),
        "max": round(float(values.max()), 4),
        "mean": round(float(values.mean()), 4),
        "below_0.5": int((values < 0.5).sum()),
    }


def _clear_other_chain(out: Path, chain: SliceChain) -> list[str]:
    """Remove an earlier run's slices, masks and tables when its ``prepare.json`` records
    another chain (none recorded: none), so that no slice of the other chain stays; return
    what was done, for the report. An unreadable ``prepare.json`` leaves everything as is.
    """
    try:
        earlier = json.loads((out / "prepare.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(earlier, dict) or earlier.get("chain") == chain.record():
        return []
    for name in ("manifest.csv", "lesions.csv", "prepare.json"):
        (out / name).unlink(missing_ok=True)
    for name in ("slices", "masks"):
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    return [
        f"{out} held slices prepared with chain {describe(earlier.get('chain'))}; removed them "
        f"(slices/, masks/, manifest.csv, lesions.csv, prepare.json) before writing chain "
        f"{describe(chain.record())}"
    ]


def _resize_mask(mask: np.ndarray[Any, Any], options: PrepareOptions) -> np.ndarray[Any, Any]:
    """A label slice at the written slice size (nearest neighbour: labels stay labels)."""
    if options.size_px is None:
        return mask
    size = (options.size_px, options.size_px)
    resized = resize(mask, size, order=0, anti_aliasing=False, preserve_range=True)
    return np.asarray(resized, dtype=mask.dtype)


class _LesionIds:
    """Per-slice lesion ids (3-D components numbered as ``lesions.csv`` numbers them).

    Only the tumour's bounding box is labelled (as :func:`find_lesions` does), so the ids match
    and a large volume costs little memory. Slices are uint8 (uint16 beyond 255 lesions).
    """

    def __init__(self, tumour: np.ndarray[Any, Any]) -> None:
        self.shape = tumour.shape[1:]
        hits = [np.flatnonzero(tumour.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
        self.box = tuple(slice(int(h[0]), int(h[-1]) + 1) for h in hits) if hits[0].size else None
        self.labels = label_lesions(tumour[self.box]) if self.box is not None else None
        count = int(self.labels.max()) if self.labels is not None else 0
        self.dtype = np.uint8 if count <= 255 else np.uint16

    def slice(self, index: int) -> np.ndarray[Any, Any]:
        """``(H, W)`` lesion ids of slice ``index`` (0 outside lesions)."""
        ids = np.zeros(self.shape, dtype=self.dtype)
        if self.box is not None and self.labels is not None:
            depth, rows, cols = self.box
            if depth.start <= index < depth.stop:
                ids[rows, cols] = self.labels[index - depth.start]
        return ids


def _by_id(folder: Path, prefix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    suffixes = "|".join(re.escape(s) for s in (*NIFTI_SUFFIXES, *ITK_SUFFIXES))
    pattern = re.compile(rf"^{re.escape(prefix)}(?P<id>[^./]+?)(?:{suffixes})?$", re.IGNORECASE)
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match is None or path.name.startswith("."):
            continue
        if path.is_dir() or path.name.lower().endswith((*NIFTI_SUFFIXES, *ITK_SUFFIXES)):
            found.setdefault(match["id"], path)
    return found


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 62, text)
