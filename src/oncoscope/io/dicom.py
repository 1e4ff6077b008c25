"""Read DICOM CT as archives deliver it: a series of single-frame files, or enhanced multi-frame.

Pixel data is decoded by pydicom's pixel-data handlers, so every transfer syntax they decode is
read: uncompressed (little and big endian, deflated), RLE lossless, JPEG baseline, extended and
lossless, JPEG-LS lossless and near-lossless, JPEG 2000 lossless and lossy, and HTJ2K. The
decoders are dependencies of oncoscope: ``pylibjpeg-openjpeg`` (JPEG 2000, HTJ2K),
``pylibjpeg-rle`` (RLE), ``python-gdcm`` (JPEG, JPEG-LS) and, for the 12-bit JPEG Extended that
GDCM's pydicom plugin refuses, imagecodecs (:mod:`oncoscope.io.pydicom_imagecodecs`).

Geometry comes from the DICOM plane attributes, per file or, for enhanced multi-frame images
(Enhanced CT Image Storage and the like), per frame from the functional groups
(PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence); Hounsfield units from
each slice's own rescale (RescaleSlope/RescaleIntercept, per frame in
PixelValueTransformationSequence, or a Modality LUT). Slices are ordered by their position along
the slice normal and must be evenly spaced along it, and step straight along it: a gap, a
duplicate, uneven steps or a gantry tilt is refused in one line, never stacked as if regular.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import UID

from oncoscope.errors import (
    CorruptFileError,
    InvalidVolumeError,
    MissingMetadataError,
    MixedSeriesError,
    UnevenSlicesError,
    UnsupportedFormatError,
)
from oncoscope.io import pydicom_imagecodecs

# LPS (DICOM world) to RAS (NIfTI world): negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True)
class _Slice:
    """One 2-D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None  # frame index in a multi-frame file; None for a single-frame file
    rows: int
    columns: int
    position: npt.NDArray[np.float64] | None  # ImagePositionPatient, LPS mm
    orientation: npt.NDArray[np.float64] | None  # ImageOrientationPatient: row, column cosines
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slice_spacing: float | None  # SpacingBetweenSlices, else SliceThickness, mm
    rescale: Dataset  # the dataset holding this slice's rescale slope/intercept or Modality LUT


def read_dicom(
    path: Path, *, series_uid: str | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], bool]:
    """Read a DICOM series folder or file as ``(I, J, K)`` HU, its RAS affine and spacing validity.

    Args:
        path: a folder holding one series (single-frame files, or one or more multi-frame
            files; other files are skipped), or one DICOM file (single- or multi-frame).
        series_uid: for a folder holding several series, the SeriesInstanceUID to read.

    Returns:
        ``(array, affine, spacing_valid)``: float32 Hounsfield units indexed ``(column, row,
        slice)`` with slices in increasing position along the slice normal, the
        ``(i, j, k, 1)`` to RAS mm affine, and False when PixelSpacing is missing or not
        positive (the affine then has 1 mm in-plane spacing).

    Raises:
        UnsupportedFormatError: no DICOM image in the folder, a multi-frame file without
            per-frame positions, or a transfer syntax no installed decoder reads (the message
            names the file and the transfer syntax).
        MixedSeriesError: several series and no ``series_uid``, or no such series.
        CorruptFileError: a DICOM file that cannot be parsed, or compressed pixel data that
            cannot be decoded (the message names the file and the transfer syntax).
        MissingMetadataError: several slices without ImagePositionPatient or
            ImageOrientationPatient, so they cannot be ordered.
        InvalidVolumeError: pixels that are not greyscale, slices of different sizes or
            orientations, or a gantry tilt (the slice positions step off the slice normal by
            more than half a pixel; the message gives the angle in degrees).
        UnevenSlicesError: a missing slice, two slices at one position, or uneven steps.
    """
    if path.is_dir():
        headers = _series_headers(path, series_uid)
    else:
        header = _read_header(path, skip_non_dicom=False)
        if header is None or not _is_image(header, path):
            raise UnsupportedFormatError("not a DICOM image (no Rows and Columns)", path)
        headers = [(path, header)]
    slices: list[_Slice] = []
    for file, header in headers:
        slices.extend(_slices_of(file, header))
    order, affine_lps, valid = _stack_geometry(slices, path)
    volume = np.empty((len(slices), slices[0].rows, slices[0].columns), dtype=np.float32)
    by_file: dict[Path, list[tuple[int, _Slice]]] = {}
    for k, index in enumerate(order):
        by_file.setdefault(slices[index].path, []).append((k, slices[index]))
    for file, members in by_file.items():
        pixels = _decode(file)
        for k, item in members:
            frame = pixels if item.frame is None or pixels.ndim == 2 else pixels[item.frame]
            volume[k] = np.asarray(apply_modality_lut(frame, item.rescale), dtype=np.float32)
    return volume.transpose(2, 1, 0), _LPS_TO_RAS @ affine_lps, valid


def _series_headers(folder: Path, series_uid: str | None) -> list[tuple[Path, Dataset]]:
    """The headers of the chosen series' image files in ``folder`` (not its subfolders)."""
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for file in sorted(folder.iterdir()):
        if not file.is_file():
            continue
        header = _read_header(file, skip_non_dicom=True)
        if header is None or not _is_image(header, file):
            continue  # not a DICOM image: DICOMDIR, a report, a text file
        by_series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((file, header))
    if not by_series:
        raise UnsupportedFormatError("folder holds no DICOM series", folder)
    if series_uid is None:
        if len(by_series) > 1:
            counts = ", ".join(f"{uid} ({len(files)} files)" for uid, files in by_series.items())
            raise MixedSeriesError(
                f"folder holds {len(by_series)} DICOM series: {counts}; "
                "keep one series per folder or choose one with its SeriesInstanceUID",
                folder,
            )
        return next(iter(by_series.values()))
    if series_uid not in by_series:
        raise MixedSeriesError(
            f"no series {series_uid} in folder (found {list(by_series)})", folder
        )
    return by_series[series_uid]


def _is_image(header: Dataset, path: Path) -> bool:
    """True for a DICOM image header; refuses an image header cut short before its size.

    pydicom reads a truncated file without complaint, so an image SOP class (``... Image
    Storage``) without Rows and Columns is a truncated file, never skipped as a non-image.
    """
    if "Rows" in header and "Columns" in header:
        return True
    meta = getattr(header, "file_meta", None)
    sop_class = header.get("SOPClassUID") or (
        None if meta is None else meta.get("MediaStorageSOPClassUID")
    )
    if sop_class is not None and "Image Storage" in UID(str(sop_class)).name:
        raise CorruptFileError(
            f"{UID(str(sop_class)).name} header ends before its Rows and Columns; the file is "
            "truncated",
            path,
        )
    return False


def _read_header(path: Path, *, skip_non_dicom: bool) -> Dataset | None:
    """A file's DICOM header without its pixel data; None for a non-DICOM file when skipping.

    A file with the DICOM preamble that cannot be parsed is corrupt, never skipped. A file
    without it is tried as a preamble-less DICOM dataset and, when skipping, kept only if it
    names its SOP class.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception as error:  # pydicom raises many types for a damaged file
        raise CorruptFileError(f"cannot read DICOM ({_reason(error)})", path) from error
    try:
        with warnings.catch_warnings():  # a forced read of a text file warns about its "VR"
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as error:  # not a DICOM dataset at all
        if skip_non_dicom:
            return None
        raise CorruptFileError(f"not a readable DICOM file ({_reason(error)})", path) from error
    if "SOPClassUID" not in header or "Rows" not in header:
        if skip_non_dicom:
            return None
        raise UnsupportedFormatError("not a DICOM image (no SOPClassUID or Rows)", path)
    return header


def _slices_of(path: Path, header: Dataset) -> list[_Slice]:
    """The 2-D images of one file: one for a single-frame file, one per frame otherwise."""
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InvalidVolumeError(f"image has {samples} channels; expected greyscale CT", path)
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in _GREYSCALE:
        raise InvalidVolumeError(
            f"photometric interpretation {photometric} is not greyscale CT", path
        )
    rows, columns = int(header.Rows), int(header.Columns)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        if frames != 1:
            raise UnsupportedFormatError(
                f"multi-frame DICOM ({frames} frames) without per-frame positions "
                "(PerFrameFunctionalGroupsSequence); store the series as enhanced multi-frame "
                "or as single-frame files",
                path,
            )
        return [
            _Slice(
                path=path,
                frame=None,
                rows=rows,
                columns=columns,
                position=_vector(header, "ImagePositionPatient", 3),
                orientation=_vector(header, "ImageOrientationPatient", 6),
                pixel_spacing=_pixel_spacing(header),
                slice_spacing=_slice_spacing(header),
                rescale=header,
            )
        ]
    if len(per_frame) != frames:
        raise CorruptFileError(
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {frames} frames",
            path,
        )
    shared_sequence = header.get("SharedFunctionalGroupsSequence")
    shared = shared_sequence[0] if shared_sequence else Dataset()

    def group(item: Dataset, name: str) -> Dataset | None:
        for source in (item, shared):
            sequence = source.get(name)
            if sequence:
                first: Dataset = sequence[0]
                return first
        return None

    slices = []
    for index, item in enumerate(per_frame):
        plane = group(item, "PlanePositionSequence")
        orientation = group(item, "PlaneOrientationSequence")
        measures = group(item, "PixelMeasuresSequence")
        rescale = group(item, "PixelValueTransformationSequence")
        slices.append(
            _Slice(
                path=path,
                frame=index,
                rows=rows,
                columns=columns,
                position=None if plane is None else _vector(plane, "ImagePositionPatient", 3),
                orientation=None
                if orientation is None
                else _vector(orientation, "ImageOrientationPatient", 6),
                pixel_spacing=None if measures is None else _pixel_spacing(measures),
                slice_spacing=None if measures is None else _slice_spacing(measures),
                rescale=header if rescale is None else rescale,
            )
        )
    return slices


def _vector(dataset: Dataset, keyword: str, size: int) -> npt.NDArray[np.float64] | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    try:
        vector = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if vector.shape != (size,) or not np.isfinite(vector).all():
        return None
    return vector


def _pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    spacing = _vector(dataset, "PixelSpacing", 2)
    if spacing is None or (spacing <= 0).any():
        return None
    return float(spacing[0]), float(spacing[1])


def _slice_spacing(dataset: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(dataset.get(keyword) or "nan")
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def _stack_geometry(
    slices: Sequence[_Slice], where: Path
) -> tuple[list[int], npt.NDArray[np.float64], bool]:
    """The slices' order along the normal, the ``(i, j, k, 1)`` to LPS affine, spacing valid."""
    first = slices[0]
    for item in slices[1:]:
        if (item.rows, item.columns) != (first.rows, first.columns):
            raise InvalidVolumeError(
                f"slices of different sizes: {item.path.name} is {item.rows}x{item.columns}, "
                f"{first.path.name} is {first.rows}x{first.columns} (rows x columns)",
                where,
            )
    spacing = first.pixel_spacing
    valid = spacing is not None and all(item.pixel_spacing == spacing for item in slices)
    row_mm, column_mm = spacing if valid and spacing is not None else (1.0, 1.0)
    if first.orientation is None or any(
        item.position is None or item.orientation is None for item in slices
    ):
        if len(slices) > 1:
            missing = next(
                item for item in slices if item.position is None or item.orientation is None
            )
            raise MissingMetadataError(
                f"no ImagePositionPatient or ImageOrientationPatient in {missing.path.name}; "
                "the slices cannot be ordered",
                where,
            )
        orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        positions = np.zeros((1, 3)) if first.position is None else first.position[None]
    else:
        orientation = first.orientation
        positions = np.stack([item.position for item in slices if item.position is not None])
        for item in slices[1:]:
            assert item.orientation is not None
            if np.abs(item.orientation - orientation).max() > 1e-4:
                raise InvalidVolumeError(
                    f"slices with different ImageOrientationPatient ({item.path.name} and "
                    f"{first.path.name}); expected one plane orientation for the series",
                    where,
                )
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    if np.linalg.norm(normal) < 1e-3:
        raise MissingMetadataError(
            f"ImageOrientationPatient {orientation.tolist()} has parallel row and column "
            "directions",
            where,
        )
    row_cosine = row_cosine / np.linalg.norm(row_cosine)
    column_cosine = column_cosine / np.linalg.norm(column_cosine)
    normal = normal / np.linalg.norm(normal)
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    if len(slices) > 1:
        step_mm = _check_even(along[order], where)
        _check_no_tilt(positions[order], normal, min(row_mm, column_mm), where)
    else:
        step_mm = first.slice_spacing or 1.0
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * column_mm  # i: along a row, one column to the next
    affine[:3, 1] = column_cosine * row_mm  # j: down a column, one row to the next
    affine[:3, 2] = normal * step_mm
    affine[:3, 3] = positions[order[0]]
    return order, affine, valid


def _check_even(ordered: npt.NDArray[np.float64], where: Path) -> float:
    """The even step in mm between sorted positions along the normal; refuses gaps, duplicates.

    Two steps differ when they differ by more than 1% of the median step or 0.01 mm, whichever
    is larger.
    """
    steps = np.diff(ordered)
    step = float(np.median(steps))
    tolerance = max(0.01, 0.01 * step)
    for i, gap in enumerate(steps):
        if gap <= tolerance:
            raise UnevenSlicesError(
                f"two slices at z={float(ordered[i]):.4g} mm along the slice normal; "
                "remove the duplicate",
                where,
            )
    for i, gap in enumerate(steps):
        low, high = float(ordered[i]), float(ordered[i + 1])
        if abs(gap - step) > tolerance:
            what = "missing slice" if gap > step else "uneven slice spacing"
            raise UnevenSlicesError(
                f"{what} between z={low:.4g} and z={high:.4g} mm along the slice normal "
                f"({gap:.4g} mm apart, {step:.4g} mm elsewhere); the slices cannot be stacked "
                "at even spacing",
                where,
            )
    return float((ordered[-1] - ordered[0]) / (len(ordered) - 1))


def _check_no_tilt(
    positions: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    pixel_mm: float,
    where: Path,
) -> None:
    """Refuse slices whose positions step off the slice normal (a gantry tilt, a sheared stack).

    A slice is off when its position, relative to the first slice, is more than half a pixel
    away from the line through the first slice along the normal.
    """
    offsets = positions - positions[0]
    along = offsets @ normal
    across = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    worst = int(np.argmax(across))
    if across[worst] <= 0.5 * pixel_mm:
        return
    angle = math.degrees(math.atan2(float(across[worst]), abs(float(along[worst]))))
    raise InvalidVolumeError(
        f"gantry tilt of {angle:.1f} degrees: the slice positions (ImagePositionPatient) step "
        f"off the slice normal ({float(across[worst]):.3g} mm sideways over "
        f"{abs(float(along[worst])):.4g} mm), so the slices are sheared, not a box; resample "
        "the series to untilted slices first (dcm2niix, for one, corrects gantry tilt)",
        where,
    )


def _decode(path: Path) -> npt.NDArray[Any]:
    """The stored pixel values of a file, ``(rows, columns)`` or ``(frames, rows, columns)``."""
    pydicom_imagecodecs.register()  # 12-bit JPEG Extended, which GDCM and Pillow refuse
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a damaged file
        raise CorruptFileError(f"cannot read DICOM ({_reason(error)})", path) from error
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise CorruptFileError("DICOM image without pixel data", path)
    meta = getattr(dataset, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    if syntax is not None:
        syntax = UID(str(syntax))
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise UnsupportedFormatError(
                f"no decoder for transfer syntax {_syntax_name(syntax)}; oncoscope reads "
                "uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000 and HTJ2K DICOM",
                path,
            ) from error
        if not decoder.is_available:
            raise UnsupportedFormatError(
                f"no decoder installed for transfer syntax {_syntax_name(syntax)} "
                f"({'; '.join(decoder.missing_dependencies)})",
                path,
            )
    try:
        pixels: npt.NDArray[Any] = dataset.pixel_array
    except MemoryError:
        raise
    except Exception as error:  # pydicom's decoders raise many types for damaged data
        name = "pixel data" if syntax is None else f"{_syntax_name(syntax)} pixel data"
        raise CorruptFileError(
            f"cannot decode the {name} ({_decoder_reason(error)}); the file is damaged or "
            "truncated",
            path,
        ) from error
    return pixels


def _syntax_name(syntax: UID) -> str:
    name = syntax.name
    return f"{name} ({syntax})" if name != str(syntax) else str(syntax)


def _decoder_reason(error: BaseException) -> str:
    """pydicom's decoder failure in one line: each plugin's reason, joined."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return "; ".join(lines)[:240] or type(error).__name__


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[-1] if text else ""
    return f"{type(error).__name__}: {first}"[:200]
