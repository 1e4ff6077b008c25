"""``oncoscope locate``: lesion candidates in CT volumes or slices nobody has labelled.

For each input (a CT volume, a slice PNG, or the rows of a manifest split) a folder
``OUT/<name>/`` is written under a temporary name and renamed when complete, with a
``status.json`` recording the settings; a re-run skips inputs done with the same settings and
redoes (or, with ``on_mismatch="error"``, refuses) those done with others. A bad input is
reported and the others still done. ``OUT/candidates.csv`` (one row per 3-D candidate of a
volume, or per candidate of a slice image) and ``OUT/locate.json`` (settings, the threshold and
where it came from, a summary per input) cover the inputs of the run; with ``truth``,
``OUT/detection.json`` and ``OUT/detection.csv`` hold the lesion-level detection scores.

Per volume: ``candidates.nii.gz`` (candidate label map on the input's voxel grid, with the
input's affine), ``candidates.csv``, ``slice_candidates.csv``, ``slices.csv`` (tumour
probability of every liver slice), ``overlays/slice-KKKK.png`` (the map over the slice, the
candidates outlined and boxed), ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from oncoscope import __version__
from oncoscope.ct.couinaud import (
    Landmarks,
    choose_landmarks,
)
from oncoscope.ct.em_lesions import liver_roi_slice, liver_roi_volume
from oncoscope.ct.slices import LIVER_LABEL, TUMOUR_LABEL
from oncoscope.ct.window import from_uint8
from oncoscope.dataset.images import open_image
from oncoscope.dataset.manifest import read_manifest, write_manifest
from oncoscope.errors import (
    CorruptFileError,
    InvalidOptionError,
    InvalidVolumeError,
    ManifestError,
    OncoscopeError,
    OutputWriteError,
)
from oncoscope.explain.cam import maps_version
from oncoscope.explain.overlay import overlay, save_png
from oncoscope.inference.status import (
    file_sha256,
    read_status,
    settings_differences,
    write_status,
)
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.io.volumes import (
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    Volume,
    check_same_grid,
    is_nifti,
    read_label_mask,
    read_volume,
    to_ras_ijk,
)
from oncoscope.locate.candidates import (
    SliceCandidate,
    VolumeCandidate,
    fractions_text,
    slice_candidates,
    stack_slice_candidates,
    volume_candidates,
    world_mm,
)
from oncoscope.locate.detection import (
    DETECTION_FORMAT,
    VolumeDetection,
    detection_scores,
    match_volume,
)
from oncoscope.locate.model_input import (
    CTModelInput,
    ct_model_input,
    model_pixels,
    tumour_maps,
)
from oncoscope.locate.threshold import ThresholdChoice, choose_threshold
from oncoscope.train.checkpoint import load_model

#: The liver of a volume given no ``--liver-mask`` (also in each input's settings, so outputs
#: made with another ROI are redone).
EM_LIVER = "EM liver ROI (seed 001: 3 x 3 median, then EM)"
#: Default ``beyond_liver_mm``: how far outside the EM liver ROI a candidate reaching into it
#: is kept (chosen on the phantom cohort's validation volumes; benchmarks/README.md).
BEYOND_LIVER_MM = 5.0

#: Columns of ``candidates.csv`` (volume candidates fill the slice range and volume; slice
#: candidates their slice, box and pixel centroid).
CANDIDATE_COLUMNS = (
    "input",
    "kind",
    "candidate_id",
    "first_slice",
    "last_slice",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "centroid_row",
    "centroid_col",
    "box",
    "diameter_mm",
    "volume_ml",
    "score",
    "small",
    "segment",
    "segment_fractions",
    "segment_method",
)
SLICE_CANDIDATE_COLUMNS = (
    "slice_index",
    "number",
    "row0",
    "col0",
    "row1",
    "col1",
    "centroid_row",
    "centroid_col",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "diameter_mm",
    "area_px",
    "score",
    "candidate_id",
)
IMAGE_SUFFIXES = (".png",)
ON_MISMATCH = ("redo", "error")


@dataclass(frozen=True)
class LocateOptions:
    """Options of ``locate``.

    Attributes:
        threshold: map threshold in ``(0, 1)``; None reads the checkpoint's record.
        method: CAM method; None uses the one the threshold was picked for (else gradcam).
        min_prob: slices whose tumour probability is below this have no candidates.
        small_mm: a candidate is small when its largest in-plane diameter is at most this (mm).
        liver_mask: a segmentation (labels >= 1 liver; LiTS) for one volume, or a folder of
            them named as the volumes (``segmentation-N`` for ``volume-N``); None: EM liver ROI.
        beyond_liver_mm: with the EM liver ROI, a candidate that reaches into it is kept up to
            this distance (mm) outside it (0: cut at its edge); a ``liver_mask`` is exact.
        landmarks: a Couinaud landmarks JSON, or a folder of them (``phantom-N.json``...).
        vessel_labels: vessel labels of ``liver_mask`` (``ct couinaud --vessel-labels``).
        truth: a ground-truth segmentation (tumour = 2) or folder of them, on the volume's grid.
        spacing_mm: voxel size for files whose own is invalid (``read_volume``).
        batch_size: slices per forward pass.
        overwrite: redo inputs done before, whatever their settings.
        on_mismatch: an input done before with other settings: ``redo`` or ``error``.
        resamples: bootstrap resamples of the detection intervals.
        seed: bootstrap seed.
    """

    threshold: float | None = None
    method: str | None = None
    min_prob: float = 0.5
    small_mm: float = 20.0
    beyond_liver_mm: float = BEYOND_LIVER_MM
    liver_mask: Path | None = None
    landmarks: Path | None = None
    vessel_labels: Mapping[str, int] | None = None
    truth: Path | None = None
    spacing_mm: tuple[float, float, float] | None = None
    batch_size: int = 8
    overwrite: bool = False
    on_mismatch: str = "redo"
    resamples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Item:
    """One input: a volume, or a slice image (with its pixel spacing when a manifest gives it)."""

    kind: str
    path: Path
    key: str
    pixel_mm: tuple[float, float] | None = None


@dataclass
class LocateReport:
    """What :func:`locate` did.

    Attributes:
        out_dir: the output folder.
        rows: ``candidates.csv`` rows of every input done or kept.
        summaries: per input name, its summary (``skipped`` True when kept from a run before).
        failures: ``(path, message)`` per failed input.
        threshold: the threshold used and its source.
        detection: the detection scores (with ``truth``), else None.
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    threshold: ThresholdChoice | None = None
    detection: dict[str, Any] | None = None


@dataclass
class _Context:
    model: nn.Module
    model_input: CTModelInput
    choice: ThresholdChoice
    method: str
    options: LocateOptions
    checkpoint_sha256: str


def locate(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: LocateOptions,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    on_item: Callable[[str, str | None, int], None] | None = None,
) -> LocateReport:
    """Find lesion candidates in every input (see the module docstring for the outputs).

    Args:
        checkpoint: a CT slice classifier checkpoint (``oncoscope train`` on ``ct prepare``
            slices).
        inputs: CT volumes (NIfTI, MHA/NRRD, DICOM series folders or files), slice PNGs, or
            folders of slice PNGs.
        out_dir: the output folder.
        options: see :class:`LocateOptions`.
        data: a manifest whose ``split`` rows are located too (slices, with their spacing).
        split: the manifest's split.
        on_item: called after each input with ``(path, error message or None, inputs)``.

    Returns:
        The :class:`LocateReport`.

    Raises:
        OncoscopeError: a checkpoint that is not a CT slice classifier; no threshold (neither
            ``options.threshold`` nor a record beside the checkpoint) or one outside (0, 1);
            bad options; no input; a manifest without the split. Bad inputs are failures of
            the report, not raised.
    """
    out = Path(out_dir)
    if options.on_mismatch not in ON_MISMATCH:
        raise InvalidOptionError(
            f"--on-mismatch must be one of {', '.join(ON_MISMATCH)}, not '{options.on_mismatch}'"
        )
    if not 0.0 <= options.min_prob <= 1.0:
        raise InvalidOptionError(f"--min-prob {options.min_prob:g} is outside 0..1")
    if not 0.0 <= options.beyond_liver_mm < math.inf:
        raise InvalidOptionError(
            f"--beyond-liver-mm {options.beyond_liver_mm:g} must be a distance >= 0 in mm"
        )
    if options.vessel_labels and options.liver_mask is None:
        raise InvalidOptionError("--vessel-labels name labels of --liver-mask; give it too")
    if options.vessel_labels and options.landmarks is not None:
        raise InvalidOptionError("give landmarks (a JSON file) or vessel labels, not both")
    choice = choose_threshold(checkpoint, options.threshold)
    model, spec = load_model(checkpoint)
    model_input = ct_model_input(spec, checkpoint)
    items = collect_items(inputs, data, split)
    volumes = [i for i in items if i.kind == "volume"]
    for name, given in (
        ("--liver-mask", options.liver_mask),
        ("--landmarks", options.landmarks),
        ("--truth", options.truth),
    ):
        if given is not None and not given.is_dir() and len(volumes) != 1:
            raise InvalidOptionError(
                f"{name} {given} is one file but there are {len(volumes)} volumes; give a folder "
                "holding one per volume, named as the volumes"
            )
    context = _Context(
        model=model,
        model_input=model_input,
        choice=choice,
        method=options.method or choice.method or "gradcam",
        options=options,
        checkpoint_sha256=file_sha256(checkpoint),
    )
    report = LocateReport(out_dir=out, threshold=choice)
    detections: list[VolumeDetection] = []
    out.mkdir(parents=True, exist_ok=True)
    for number, item in enumerate(items):
        try:
            summary, rows, detection = _run_item(item, out, context)
        except OncoscopeError as error:
            report.failures.append((str(error.path or item.path), error.message))
            if on_item:
                on_item(str(item.path), error.message, len(items))
            if isinstance(error, OutputWriteError):  # a full disk: the others would fail too
                report.failures.extend(
                    (str(i.path), f"not done: the run stopped when writing {error.path} failed")
                    for i in items[number + 1 :]
                )
                break
            continue
        report.summaries[item.key] = summary
        report.rows.extend(rows)
        if detection is not None:
            detections.append(detection)
        if on_item:
            on_item(str(item.path), None, len(items))
    if detections:
        report.detection = detection_scores(
            detections, resamples=options.resamples, seed=options.seed
        )
    _write_run_tables(report, checkpoint, context)
    return report


def collect_items(
    inputs: Sequence[str | Path], data: str | Path | None, split: str | None
) -> list[Item]:
    """The inputs as volumes and slice images, each with a unique output name.

    A ``.png`` file is a slice; a folder holding PNG files is its slices; any other file or
    folder is a volume (a folder: a DICOM series). With ``data``, the ``split`` rows of the
    manifest are slices, with the manifest's ``row_mm``/``col_mm``.

    Raises:
        ManifestError: an unreadable manifest, or an empty split.
        InvalidOptionError: no input, or ``data`` without ``split``.
    """
    found: list[tuple[str, Path, tuple[float, float] | None, str]] = []
    for given in inputs:
        path = Path(given)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(("slice", path, None, f"{path.parent.name}/{path.stem}"))
        elif path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            for image in sorted(path.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(("slice", image, None, f"{path.name}/{image.stem}"))
        else:
            found.append(("volume", path, None, volume_name(path)))
    if data is not None:
        if not split:
            raise InvalidOptionError("--data needs --split")
        frame = read_manifest(data, required=("path", "split"))
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise ManifestError(f"the {split} split is empty", data)
        for _, row in rows.iterrows():
            path = Path(str(row["path"]))
            spacing = None
            if "row_mm" in row and "col_mm" in row:
                try:
                    spacing = (float(row["row_mm"]), float(row["col_mm"]))
                except (TypeError, ValueError):
                    spacing = None
                if spacing is not None and not all(math.isfinite(v) and v > 0 for v in spacing):
                    spacing = None
            found.append(("slice", path, spacing, f"{path.parent.name}/{path.stem}"))
    if not found:
        raise InvalidOptionError("no input to locate: give volumes, slice PNGs or --data")
    items, used = [], set()
    for kind, path, spacing, key in found:
        unique, number = key, 2
        while unique in used:
            unique, number = f"{key}-{number}", number + 1
        used.add(unique)
        items.append(Item(kind, path, unique, spacing))
    return items


def volume_name(path: Path) -> str:
    """A volume's name: its file name without ``.nii.gz``, ``.nii``, ``.mha``... suffixes.

    Example:
        >>> volume_name(Path("data/volume-3.nii.gz")), volume_name(Path("scans/CT_1"))
        ('volume-3', 'CT_1')
    """
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *ITK_SUFFIXES, ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def companion(given: Path | None, volume: Path, what: str) -> Path | None:
    """The file of option ``what`` for one volume: ``given`` itself, or, for a folder, the file
    named for the volume: for ``--landmarks`` a JSON named ``phantom-N`` (or as the volume),
    for the others an image named ``segmentation-N`` (or as the volume, not the volume itself),
    so one LiTS folder holding ``volume-N``, ``segmentation-N`` and ``phantom-N.json`` serves
    every option.

    Raises:
        OncoscopeError: a folder holding no such file.
    """
    if given is None or not given.is_dir():
        return given
    stem = volume_name(volume)
    landmarks = what == "--landmarks"
    preferred = stem.replace("volume", "phantom" if landmarks else "segmentation")
    found: dict[str, Path] = {}
    for path in sorted(given.iterdir()):
        if (path.suffix.lower() == ".json") != landmarks or path.resolve() == volume.resolve():
            continue
        name = path.stem if landmarks else volume_name(path)
        found.setdefault(name, path)
    for name in (preferred, stem):
        if name in found:
            return found[name]
    raise OncoscopeError(f"{what} folder {given} holds no file named for {volume.name}", volume)


def _run_item(
    item: Item, out: Path, context: _Context
) -> tuple[dict[str, Any], list[dict[str, Any]], VolumeDetection | None]:
    """Locate one input, or keep what a run before made with the same settings."""
    options = context.options
    liver = truth = landmarks = None
    if item.kind == "volume":
        liver = companion(options.liver_mask, item.path, "--liver-mask")
        truth = companion(options.truth, item.path, "--truth")
        landmarks = companion(options.landmarks, item.path, "--landmarks")
    settings = {
        "checkpoint_sha256": context.checkpoint_sha256,
        "threshold": context.choice.threshold,
        "method": context.method,
        "layers": list(context.choice.layers),
        "stage": context.choice.stage,
        "min_prob": options.min_prob,
        "small_mm": options.small_mm,
        "liver": str(liver.resolve()) if liver else EM_LIVER,
        "beyond_liver_mm": None if liver else options.beyond_liver_mm,  # a given liver is exact
        "landmarks": str(landmarks.resolve()) if landmarks else None,
        "vessel_labels": dict(options.vessel_labels or {}),
        "truth": str(truth.resolve()) if truth else None,
        # detection.json's layout: 2 added the split/joined counts (older ones are redone)
        "detection_format": DETECTION_FORMAT if truth else None,
        "spacing_mm": list(options.spacing_mm) if options.spacing_mm else None,
        "pixel_mm": list(item.pixel_mm) if item.pixel_mm else None,
    }
    version = maps_version(context.method)
    if version > 1:  # maps an older oncoscope made otherwise are redone; unchanged ones kept
        settings["maps_version"] = version
    folder = out / item.key
    status = read_status(folder)
    if status is not None and not options.overwrite:
        changes = settings_differences(status.get("settings"), settings)
        if not changes:
            return _kept(folder, item)
        if options.on_mismatch == "error":
            raise OncoscopeError(
                f"done before with other settings ({'; '.join(changes)}); pass --overwrite or "
                "--on-mismatch redo",
                folder,
            )
    if item.kind == "slice":
        return (*_locate_slice(item, folder, context, settings), None)
    return _locate_volume(item, folder, context, settings, liver, truth, landmarks)


def _kept(
    folder: Path, item: Item
) -> tuple[dict[str, Any], list[dict[str, Any]], VolumeDetection | None]:
    """The summary, candidate rows and detection match of an input done before."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        with (folder / "candidates.csv").open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        detection = None
        if (folder / "detection.json").is_file():
            matched = json.loads((folder / "detection.json").read_text())
            detection = VolumeDetection(
                name=item.key,
                lesions=[(float(d), float(s)) for d, s in matched["lesions"]],
                false_scores=[float(s) for s in matched["false_scores"]],
                candidates_per_lesion=[int(n) for n in matched["candidates_per_lesion"]],
                lesions_per_candidate=[int(n) for n in matched["lesions_per_candidate"]],
            )
    except (OSError, ValueError, KeyError) as error:
        raise CorruptFileError(
            f"done before but its outputs cannot be read ({error}); pass --overwrite", folder
        ) from None
    summary["skipped"] = True
    return summary, rows, detection


def _locate_volume(
    item: Item,
    folder: Path,
    context: _Context,
    settings: dict[str, Any],
    liver_path: Path | None,
    truth_path: Path | None,
    landmarks_path: Path | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], VolumeDetection | None]:
    options = context.options
    volume = read_volume(item.path, spacing_mm=options.spacing_mm)
    spacing = volume.spacing_mm
    tumour = None
    if truth_path is not None:  # checked first: a truth on another grid is refused at once
        truth = read_label_mask(truth_path, spacing_mm=options.spacing_mm)
        check_same_grid(volume, truth)
        tumour = np.asarray(truth.array) == TUMOUR_LABEL
    labels = None
    grid = volume  # the grid landmarks are placed on: the segmentation's, when given
    if liver_path is not None:
        grid = read_label_mask(liver_path, spacing_mm=options.spacing_mm)
        check_same_grid(volume, grid)
        labels = np.asarray(grid.array)
        inside = {LIVER_LABEL, TUMOUR_LABEL} | {
            v for k, v in (options.vessel_labels or {}).items() if k != "ivc"
        }
        liver = np.isin(labels, sorted(inside))
        if not liver.any():
            raise InvalidVolumeError("--liver-mask holds no liver (labels 1, 2)", liver_path)
        liver_source = str(liver_path)
    else:
        liver = liver_roi_volume(volume.array, (spacing[1], spacing[2]))
        if not liver.any():
            raise InvalidVolumeError(
                "no liver found (the EM liver ROI is empty on every slice); give --liver-mask",
                item.path,
            )
        liver_source = f"{EM_LIVER}, largest 3-D connected piece"
    landmarks = choose_landmarks(
        liver,
        grid,
        landmarks_path=landmarks_path,
        labels=labels,
        vessel_labels=options.vessel_labels,
    )
    liver_slices = [int(k) for k in np.flatnonzero(liver.any(axis=(1, 2)))]
    maps = tumour_maps(
        context.model,
        context.model_input,
        [
            model_pixels(volume.array[k], context.model_input, liver[k], (spacing[1], spacing[2]))
            for k in liver_slices
        ],
        method=context.method,
        layers=context.choice.layers,
        stage=context.choice.stage,
        batch_size=options.batch_size,
    )
    stacked = stack_slice_candidates(
        liver_slices,
        [m.heat for m in maps],
        [m.prob for m in maps],
        liver,
        threshold=context.choice.threshold,
        min_prob=options.min_prob,
        pixel_mm=(spacing[1], spacing[2]),
        beyond_liver_mm=settings["beyond_liver_mm"] or 0.0,  # None: a given liver is exact
    )
    candidate_mask, per_slice = stacked.mask, stacked.per_slice
    slice_rows = [
        {
            "slice_index": k,
            "tumour_prob": round(found.prob, 6),
            "liver_px": int(liver[k].sum()),
            "candidates": len(per_slice.get(k, [])),
        }
        for k, found in zip(liver_slices, maps, strict=True)
    ]
    label_map, found3d = volume_candidates(
        candidate_mask,
        stacked.scores,
        liver,
        volume.affine,
        spacing,
        landmarks,
        small_mm=options.small_mm,
    )
    detection = None
    if tumour is not None:
        detection = match_volume(item.key, label_map, [c.score for c in found3d], tumour, spacing)
    rows = [_volume_row(item.key, c, landmarks) for c in found3d]
    summary = {
        "input": str(item.path),
        "path": str(item.path.resolve()),
        "kind": "volume",
        "shape_dhw": list(volume.shape),
        "spacing_mm": [round(v, 6) for v in spacing],
        "liver": liver_source,
        "liver_slices": len(liver_slices),
        "liver_ml": round(float(liver.sum()) * float(np.prod(spacing)) / 1000.0, 3),
        "slices_called_tumour": sum(1 for m in maps if m.prob >= options.min_prob),
        "candidates": len(found3d),
        "small_candidates": sum(1 for c in found3d if c.small),
        "couinaud": _couinaud_note(landmarks),
        "skipped": False,
    }
    try:
        with atomic_path(folder) as temporary:
            temporary.mkdir(parents=True)
            _save_label_map(label_map, volume, temporary / "candidates.nii.gz")
            write_manifest(
                [{k: v for k, v in r.items()} for r in rows],
                temporary / "candidates.csv",
                CANDIDATE_COLUMNS,
            )
            write_manifest(
                _slice_candidate_rows(per_slice, label_map, volume.affine),
                temporary / "slice_candidates.csv",
                SLICE_CANDIDATE_COLUMNS,
            )
            write_manifest(
                slice_rows,
                temporary / "slices.csv",
                ("slice_index", "tumour_prob", "liver_px", "candidates"),
            )
            for k, candidates in per_slice.items():
                pixels = model_pixels_native(volume.array[k], context.model_input)
                picture = overlay(
                    pixels,
                    stacked.heats[k],
                    contours=candidate_mask[k],
                    boxes=[c.box for c in candidates],
                )
                save_png(picture, temporary / "overlays" / f"slice-{k:04d}.png")
            if detection is not None:
                (temporary / "detection.json").write_text(
                    json.dumps(
                        {
                            "lesions": detection.lesions,
                            "false_scores": detection.false_scores,
                            "candidates_per_lesion": detection.candidates_per_lesion,
                            "lesions_per_candidate": detection.lesions_per_candidate,
                        }
                    )
                )
            (temporary / "summary.json").write_text(json.dumps(summary, indent=2))
            write_status(temporary, {"input": str(item.path), "settings": settings})
    except OSError as error:
        raise OutputWriteError(f"cannot write ({error.strerror or error})", folder) from error
    return summary, rows, detection


def model_pixels_native(
    hu_slice: npt.NDArray[Any], model_input: CTModelInput
) -> npt.NDArray[np.uint8]:
    """The slice windowed as the model's PNGs are, at the volume's own size (for overlays)."""
    from oncoscope.ct.render import render_slice

    pixels: npt.NDArray[np.uint8] = render_slice(hu_slice, model_input.windows, None)
    return pixels


def _locate_slice(
    item: Item, folder: Path, context: _Context, settings: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model_input = context.model_input
    mode = "L" if len(model_input.windows) == 1 else "RGB"
    try:
        with open_image(str(item.path)) as image:
            pixels = np.array(image.convert(mode))
    except (OSError, ValueError) as error:
        raise CorruptFileError(f"cannot read image ({error})", item.path) from None
    grey = pixels if pixels.ndim == 2 else pixels[..., 0]
    hu = from_uint8(grey, model_input.windows[0])  # HU clipped to the window: enough for EM
    liver = liver_roi_slice(hu, item.pixel_mm or (1.0, 1.0))
    if not liver.any():
        raise InvalidVolumeError("no liver found (the EM liver ROI is empty)", item.path)
    (found,) = tumour_maps(
        context.model,
        model_input,
        [pixels],
        method=context.method,
        layers=context.choice.layers,
        stage=context.choice.stage,
    )
    mask, candidates = slice_candidates(
        found.heat,
        liver,
        found.prob,
        threshold=context.choice.threshold,
        min_prob=context.options.min_prob,
        pixel_mm=item.pixel_mm,
        beyond_liver_mm=settings["beyond_liver_mm"],
    )
    rows = [
        {
            "input": item.key,
            "kind": "slice",
            "candidate_id": c.number,
            "first_slice": "",
            "last_slice": "",
            "centroid_x_mm": "",
            "centroid_y_mm": "",
            "centroid_z_mm": "",
            "centroid_row": round(c.centroid_rc[0], 2),
            "centroid_col": round(c.centroid_rc[1], 2),
            "box": " ".join(str(v) for v in c.box),
            "diameter_mm": "" if math.isnan(c.diameter_mm) else round(c.diameter_mm, 3),
            "volume_ml": "",
            "score": round(c.score, 6),
            "small": "" if math.isnan(c.diameter_mm) else c.diameter_mm <= context.options.small_mm,
            "segment": "",
            "segment_fractions": "",
            "segment_method": "",
        }
        for c in candidates
    ]
    summary = {
        "input": str(item.path),
        "path": str(item.path.resolve()),
        "kind": "slice",
        "tumour_prob": round(found.prob, 6),
        "liver": f"{EM_LIVER} on the windowed slice",
        "pixel_mm": list(item.pixel_mm) if item.pixel_mm else None,
        "candidates": len(candidates),
        "skipped": False,
    }
    try:
        with atomic_path(folder) as temporary:
            temporary.mkdir(parents=True)
            write_manifest(rows, temporary / "candidates.csv", CANDIDATE_COLUMNS)
            picture = overlay(pixels, found.heat, contours=mask, boxes=[c.box for c in candidates])
            save_png(picture, temporary / "overlay.png")
            (temporary / "summary.json").write_text(json.dumps(summary, indent=2))
            write_status(temporary, {"input": str(item.path), "settings": settings})
    except OSError as error:
        raise OutputWriteError(f"cannot write ({error.strerror or error})", folder) from error
    return summary, rows


def _couinaud_note(landmarks: Landmarks) -> dict[str, Any]:
    approximate = landmarks.method == "approximate"
    return {
        "method": landmarks.method,
        "approximate": approximate,
        "note": (
            "landmarks estimated from the liver's bounding box (no landmarks, no vessel "
            "labels): segments are APPROXIMATE"
            if approximate
            else f"planes through landmarks from {landmarks.source}"
        ),
    }


def _volume_row(key: str, c: VolumeCandidate, landmarks: Landmarks) -> dict[str, Any]:
    return {
        "input": key,
        "kind": "volume",
        "candidate_id": c.candidate_id,
        "first_slice": c.first_slice,
        "last_slice": c.last_slice,
        "centroid_x_mm": round(c.centroid_mm[0], 2),
        "centroid_y_mm": round(c.centroid_mm[1], 2),
        "centroid_z_mm": round(c.centroid_mm[2], 2),
        "centroid_row": round(c.centroid_dhw[1], 2),
        "centroid_col": round(c.centroid_dhw[2], 2),
        "box": "",
        "diameter_mm": round(c.diameter_mm, 3),
        "volume_ml": round(c.volume_ml, 4),
        "score": round(c.score, 6),
        "small": c.small,
        "segment": c.segment,
        "segment_fractions": fractions_text(c.segment_fractions),
        "segment_method": landmarks.method,
    }


def _slice_candidate_rows(
    per_slice: dict[int, list[SliceCandidate]],
    label_map: npt.NDArray[np.uint16],
    affine: npt.NDArray[np.float64],
) -> list[dict[str, Any]]:
    rows = []
    for k, candidates in sorted(per_slice.items()):
        for c in candidates:
            row, col = c.centroid_rc
            x, y, z = world_mm(affine, (k, row, col))
            row0, col0, row1, col1 = c.box
            ids = label_map[k, row0:row1, col0:col1]
            rows.append(
                {
                    "slice_index": k,
                    "number": c.number,
                    "row0": row0,
                    "col0": col0,
                    "row1": row1,
                    "col1": col1,
                    "centroid_row": round(row, 2),
                    "centroid_col": round(col, 2),
                    "centroid_x_mm": round(x, 2),
                    "centroid_y_mm": round(y, 2),
                    "centroid_z_mm": round(z, 2),
                    "diameter_mm": round(c.diameter_mm, 3),
                    "area_px": c.area_px,
                    "score": round(c.score, 6),
                    "candidate_id": int(ids.max()),
                }
            )
    return rows


def _save_label_map(labels: npt.NDArray[np.uint16], volume: Volume, path: Path) -> None:
    """Write the ``(D, H, W)`` label map as NIfTI on the input's own voxel grid: for a NIfTI
    input its array order and affine, else the RAS-ordered grid of the volume."""
    import nibabel as nib

    image = nib.Nifti1Image(*to_ras_ijk(labels, volume.affine))
    if volume.source.is_file() and is_nifti(volume.source):
        loaded: Any = nib.load(volume.source)
        original = np.asarray(loaded.affine, np.float64)
        target = nib.orientations.io_orientation(original)
        transform = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(("R", "A", "S")), target
        )
        image = image.as_reoriented(transform)
        if np.allclose(image.affine, original, atol=1e-3):
            image = nib.Nifti1Image(np.asarray(image.dataobj), original)
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path) as temporary:
        nib.save(image, temporary)


def _write_run_tables(report: LocateReport, checkpoint: str | Path, context: _Context) -> None:
    """``candidates.csv``, ``locate.json`` and (with truth) ``detection.json``/``.csv``."""
    out = report.out_dir
    choice = context.choice
    record = {
        "oncoscope_version": __version__,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": context.checkpoint_sha256,
        "model": context.model_input.spec.model,
        "windows": [asdict(w) for w in context.model_input.windows],
        "image_size": context.model_input.image_size,
        "threshold": choice.threshold,
        "threshold_source": choice.source,
        "method": context.method,
        "maps_version": maps_version(context.method),
        "layers": list(choice.layers),
        "stage": choice.stage,
        "min_prob": context.options.min_prob,
        "small_mm": context.options.small_mm,
        "beyond_liver_mm": None if context.options.liver_mask else context.options.beyond_liver_mm,
        "score": "slice tumour probability x largest map value in the candidate",
        "coordinates": "RAS+ patient mm; slices d of the canonical layout (inferior to superior)",
        "inputs": report.summaries,
        "failures": [{"path": p, "error": m} for p, m in report.failures],
    }
    try:
        write_manifest(report.rows, out / "candidates.csv", CANDIDATE_COLUMNS)
        if report.detection is not None:
            record["detection"] = report.detection
            write_json(out / "detection.json", report.detection, indent=2)
            write_manifest(_froc_rows(report.detection), out / "detection.csv", _FROC_COLUMNS)
        write_json(out / "locate.json", record, indent=2)
    except OSError as error:
        raise OutputWriteError(f"cannot write ({error.strerror or error})", out) from error


_FROC_COLUMNS = (
    "min_score",
    "figure",
    "value",
    "ci_low",
    "ci_high",
)


def _froc_rows(detection: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for point in detection["froc"]:
        figures = {
            "sensitivity": point["sensitivity"],
            **{f"sensitivity {k}": v for k, v in point["sensitivity_by_size"].items()},
            "false positives per volume": point["false_positives_per_volume"],
        }
        for name, value in figures.items():
            rows.append(
                {
                    "min_score": point["min_score"],
                    "figure": name,
                    "value": "" if value["value"] is None else value["value"],
                    "ci_low": "" if value["ci_low"] is None else value["ci_low"],
                    "ci_high": "" if value["ci_high"] is None else value["ci_high"],
                }
            )
    return rows
