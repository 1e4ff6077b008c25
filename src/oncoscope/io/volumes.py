"""Read CT volumes and label masks into one canonical layout.

NIfTI files are read with nibabel; DICOM (a folder holding one series, or a single file, single- or
enhanced multi-frame, uncompressed or compressed) with pydicom and its pylibjpeg decoders (see
:mod:`oncoscope.io.dicom`: slices sorted along the slice normal by ImagePositionPatient, each
slice's rescale applied, gaps, duplicates and gantry tilt refused); MHA and NRRD with SimpleITK.

Every volume is brought to the closest canonical RAS+ orientation (nibabel's
``as_closest_canonical``: axes permuted and flipped, never resampled) and then stored as
``(D, H, W)``:

* ``D``: transverse slices, index 0 the most inferior, increasing towards superior (RAS ``S``);
* ``H``: rows, 0 the most anterior, increasing towards posterior;
* ``W``: columns, 0 the patient's right, increasing towards the patient's left.

So ``volume.array[k]`` is slice ``k`` shown in the radiological convention (anterior up, patient's
right on the viewer's left), the way LiTS viewers and PACS show it, and the same patient stored
with flipped or permuted axes gives the same array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from oncoscope.errors import (
    CorruptFileError,
    InvalidOptionError,
    InvalidVolumeError,
    MissingMetadataError,
    OncoscopeError,
    UnsupportedFormatError,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")

# LPS (DICOM/ITK world) to RAS (NIfTI world): negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, repr=False)
class Volume:
    """A CT volume or label mask in oncoscope's canonical ``(D, H, W)`` layout.

    Attributes:
        array: ``(D, H, W)`` voxels; float32 Hounsfield units for CT, uint8 labels for masks.
        affine: ``(4, 4)`` float64 map from a ``(d, h, w, 1)`` index to RAS+ world mm.
        source: the file or folder it was read from.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    source: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``: slices, rows, columns."""
        d, h, w = self.array.shape
        return int(d), int(h), int(w)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(D, H, W)``: slice spacing, row spacing, column spacing."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    def __repr__(self) -> str:
        d, h, w = self.shape
        sd, sh, sw = self.spacing_mm
        return (
            f"Volume(shape=(D={d}, H={h}, W={w}), spacing_mm=({sd:.3g}, {sh:.3g}, {sw:.3g}), "
            f"dtype={self.array.dtype}, orientation=RAS, source='{self.source}')"
        )


def is_nifti(path: Path) -> bool:
    """True when ``path`` names a NIfTI file by its suffix (``.nii`` or ``.nii.gz``)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> Volume:
    """Read a CT volume in Hounsfield units, in the canonical ``(D, H, W)`` layout.

    Args:
        path: a NIfTI file (``.nii``, ``.nii.gz``), a folder holding one DICOM series, a single
            DICOM file (single- or enhanced multi-frame; uncompressed, RLE, JPEG, JPEG-LS,
            JPEG 2000 or HTJ2K), or an MHA/NRRD file.
        series_uid: for a DICOM folder holding several series, the SeriesInstanceUID to read.
        spacing_mm: voxel size ``(D, H, W)`` in mm (slice, row, column spacing) to use when the
            file's own spacing is zero, negative or NaN (NIfTI ``pixdim``, ITK spacing); a file
            with a valid spacing keeps its own.

    Returns:
        A :class:`Volume` with float32 HU values (rescale slope and intercept applied).

    Raises:
        OncoscopeError: the path does not exist.
        UnsupportedFormatError: not a format oncoscope reads, a folder with no DICOM series, or
            a DICOM transfer syntax no installed decoder reads (file and syntax named).
        MixedSeriesError: a DICOM folder with several series and no ``series_uid``.
        CorruptFileError: the file cannot be decoded (for DICOM: the file and its transfer
            syntax named).
        InvalidVolumeError: the volume is empty, not 3-D, holds non-finite values, or its voxels
            are not real numbers (RGB, complex); a DICOM series with a gantry tilt (slices
            stepping off the slice normal; the angle in degrees is named).
        MissingMetadataError: the voxel spacing is zero, negative or NaN and no ``spacing_mm``
            was given.
        UnevenSlicesError: a DICOM series with a missing slice, two slices at one position, or
            uneven slice spacing along the slice normal.

    Example:
        >>> import nibabel as nib, numpy as np, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "v.nii.gz"
        >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), f)
        >>> read_volume(f).shape
        (6, 5, 4)
    """
    path = Path(path)
    data, affine_ras, spacing_valid = _read_raw(path, series_uid=series_uid)
    if np.asarray(data).dtype.kind not in "iufb":
        raise InvalidVolumeError(
            f"voxel type {_dtype_name(data)} is not greyscale CT; expected integer or real "
            "Hounsfield units (not RGB or complex)",
            path,
        )
    array = np.asarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidVolumeError("volume holds NaN or infinite values", path)
    return _canonical(array, affine_ras, path, _spacing_override(spacing_valid, spacing_mm, path))


def read_label_mask(
    path: str | Path,
    *,
    max_label: int = 255,
    spacing_mm: tuple[float, float, float] | None = None,
) -> Volume:
    """Read a label mask (e.g. a LiTS segmentation) in the canonical ``(D, H, W)`` layout.

    Args:
        path: as for :func:`read_volume`.
        max_label: the largest label value allowed (LiTS: 2).
        spacing_mm: as for :func:`read_volume`: used only when the file's spacing is invalid.

    Returns:
        A :class:`Volume` with uint8 labels.

    Raises:
        InvalidVolumeError: non-integer, negative or too large label values, or an empty mask;
            plus every error of :func:`read_volume`.
    """
    path = Path(path)
    data, affine_ras, spacing_valid = _read_raw(path, series_uid=None)
    values = np.asarray(data)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InvalidVolumeError("label mask holds NaN or infinite values", path)
        if not np.array_equal(values, np.round(values)):
            raise InvalidVolumeError(
                "label mask holds non-integer values; expected integer labels", path
            )
    elif values.dtype.kind not in "iub":
        raise InvalidVolumeError(
            f"label mask has voxel type {_dtype_name(values)}; expected integers", path
        )
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > max_label:
        found = sorted({int(v) for v in np.unique(values)})[:10]
        raise InvalidVolumeError(f"label values {found} outside 0..{max_label}", path)
    override = _spacing_override(spacing_valid, spacing_mm, path)
    return _canonical(values.astype(np.uint8), affine_ras, path, override)


def parse_spacing_mm(text: str) -> tuple[float, float, float]:
    """Parse ``--spacing-mm``: ``"D,H,W"`` (slice, row, column spacing in mm) into a tuple.

    Raises:
        InvalidOptionError: not three positive finite numbers.

    Example:
        >>> parse_spacing_mm("2.5,0.8,0.8")
        (2.5, 0.8, 0.8)
    """
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InvalidOptionError(
            f"--spacing-mm '{text}' is not three positive numbers D,H,W (slice, row, column "
            "spacing in mm), e.g. 2.5,0.8,0.8"
        )
    return values[0], values[1], values[2]


def check_same_grid(volume: Volume, mask: Volume, *, tolerance_mm: float = 1e-3) -> None:
    """Check that a mask lies on the voxel grid of its volume.

    Args:
        volume: the CT volume.
        mask: its label mask.
        tolerance_mm: largest allowed difference between the two affines, in mm.

    Raises:
        InvalidVolumeError: the shapes or the affines differ (the message names the mask file).
    """
    if volume.shape != mask.shape:
        raise InvalidVolumeError(
            f"mask shape {mask.shape} differs from volume shape {volume.shape} "
            f"({volume.source.name})",
            mask.source,
        )
    worst = float(np.abs(volume.affine - mask.affine).max())
    if worst > tolerance_mm:
        raise InvalidVolumeError(
            f"mask affine differs from the affine of {volume.source.name} by up to "
            f"{worst:.4g} mm; the mask must be on the volume's voxel grid",
            mask.source,
        )


def to_ras_ijk(
    data_dhw: npt.NDArray[np.generic], affine_dhw: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64]]:
    """Inverse of the reader's layout change: a ``(D, H, W)`` array back to RAS ``(I, J, K)``.

    Args:
        data_dhw: an array in the canonical layout.
        affine_dhw: its ``(d, h, w, 1)`` to RAS mm map.

    Returns:
        The array in RAS ``(I, J, K)`` order and its ``(i, j, k, 1)`` to RAS mm affine, as NIfTI
        stores them.
    """
    _, height, width = data_dhw.shape
    ras = np.ascontiguousarray(data_dhw.transpose(2, 1, 0)[::-1, ::-1, :])
    dhw_from_ras = np.array(
        [
            [0.0, 0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0, height - 1.0],
            [-1.0, 0.0, 0.0, width - 1.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return ras, affine_dhw @ dhw_from_ras


def _canonical(
    data_ijk: npt.NDArray[np.generic],
    affine_ras: npt.NDArray[np.float64],
    path: Path,
    spacing_mm: tuple[float, float, float] | None = None,
) -> Volume:
    """Reorient an ``(I, J, K)`` array with its RAS affine to the ``(D, H, W)`` layout.

    ``spacing_mm``, when given, replaces the voxel size ``(D, H, W)`` of the result (the affine's
    directions and origin are kept).
    """
    if data_ijk.ndim == 4 and data_ijk.shape[3] == 1:
        data_ijk = data_ijk[..., 0]
    if data_ijk.ndim != 3:
        raise InvalidVolumeError(f"expected a 3-D volume, got shape {data_ijk.shape}", path)
    if 0 in data_ijk.shape:
        raise InvalidVolumeError(f"volume is empty (shape {data_ijk.shape})", path)
    if not np.isfinite(affine_ras).all():
        raise MissingMetadataError("affine holds NaN or infinite values", path)
    zooms = np.linalg.norm(affine_ras[:3, :3], axis=0)
    if (zooms <= 0).any() or np.linalg.matrix_rank(affine_ras[:3, :3]) < 3:
        raise MissingMetadataError(
            f"voxel spacing {tuple(float(z) for z in zooms)} mm is degenerate", path
        )
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data_ijk, affine_ras))
    ras = np.asanyarray(canonical.dataobj)
    affine_canonical = np.asarray(canonical.affine, dtype=np.float64)
    n_i, n_j, _ = ras.shape
    dhw = ras[::-1, ::-1, :].transpose(2, 1, 0)  # a view: no copy of a large volume
    ras_from_dhw = np.array(
        [
            [0.0, 0.0, -1.0, n_i - 1.0],
            [0.0, -1.0, 0.0, n_j - 1.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    affine_dhw = affine_canonical @ ras_from_dhw
    if spacing_mm is not None:
        columns = affine_dhw[:3, :3]
        affine_dhw[:3, :3] = columns / np.linalg.norm(columns, axis=0) * np.asarray(spacing_mm)
    return Volume(array=dhw, affine=affine_dhw, source=path)


def _spacing_override(
    spacing_valid: bool, spacing_mm: tuple[float, float, float] | None, path: Path
) -> tuple[float, float, float] | None:
    """The spacing to impose: None for a file with a valid spacing, else the user's."""
    if spacing_valid:
        return None
    if spacing_mm is None:
        raise MissingMetadataError(
            "voxel spacing is zero, negative or NaN in the file; pass the spacing with "
            "--spacing-mm D,H,W (slice, row, column spacing in mm)",
            path,
        )
    if len(spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_mm):
        raise MissingMetadataError(
            f"--spacing-mm {spacing_mm} must be three positive numbers (mm)", path
        )
    return (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))


def _dtype_name(data: Any) -> str:
    dtype = np.asarray(data).dtype
    return "RGB" if dtype.names else str(dtype)


def _read_raw(
    path: Path, *, series_uid: str | None
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64], bool]:
    """Read ``(array in file index order (I, J, K), RAS affine, spacing valid)``.

    When the file's voxel spacing is zero, negative or NaN, the affine has unit spacing along
    its (valid) directions and the flag is False.
    """
    if not path.exists():
        raise OncoscopeError("does not exist", path)
    if is_nifti(path):
        return _read_nifti(path)
    if path.name.lower().endswith(ITK_SUFFIXES):
        return _read_itk_file(path)
    if path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES) or _has_dicom_preamble(path):
        from oncoscope.io.dicom import read_dicom

        return read_dicom(path, series_uid=series_uid)
    raise UnsupportedFormatError("not a NIfTI (.nii, .nii.gz), DICOM, MHA or NRRD file", path)


def _read_nifti(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64], bool]:
    try:
        image: Any = nib.load(path)
        # get_fdata applies scl_slope/scl_inter; float32 halves the memory of float64.
        scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
        raw = np.asanyarray(image.dataobj)
        if raw.dtype.kind not in "iufb":
            return raw, np.asarray(image.affine, dtype=np.float64), True  # refused by the caller
        data = image.get_fdata(dtype=np.float32) if scaled else raw
        # nibabel silently reads a zero pixdim as 1 mm and a negative one as its absolute value:
        # look at the header as stored.
        with nib.openers.ImageOpener(str(path)) as opener:
            stored = type(image.header).from_fileobj(opener, check=False)
    except Exception as error:  # nibabel raises many types for a damaged file
        raise CorruptFileError(f"cannot read NIfTI ({_reason(error)})", path) from error
    affine = np.asarray(image.affine, dtype=np.float64)
    if int(stored["sform_code"]) > 0:
        return data, affine, True  # the sform matrix holds the spacing; checked when reoriented
    pixdim = np.asarray(stored["pixdim"][1:4], dtype=np.float64)
    if np.isfinite(pixdim).all() and (pixdim > 0).all():
        return data, affine, True
    directions = affine[:3, :3]
    norms = np.linalg.norm(directions, axis=0)
    if not np.isfinite(norms).all() or (norms <= 0).any():
        affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # nibabel's orientation without a qform or sform
    else:
        affine[:3, :3] = directions / norms
    return data, affine, False


def _has_dicom_preamble(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_itk_file(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64], bool]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise CorruptFileError(f"cannot read image ({_reason(error)})", path) from error
    return _from_sitk(image, path)


def _from_sitk(
    image: Any, path: Path
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64], bool]:
    """Array in (I, J, K) order, RAS affine and spacing validity of a SimpleITK image (ITK world
    is LPS)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidVolumeError(
            f"image has {image.GetNumberOfComponentsPerPixel()} channels; expected greyscale CT",
            path,
        )
    data = sitk.GetArrayFromImage(image)  # (K, J, I)
    dimension = image.GetDimension()
    if dimension == 2:
        data = data[np.newaxis]
        spacing = (*image.GetSpacing(), 1.0)
        origin = (*image.GetOrigin(), 0.0)
        direction = np.eye(3)
        direction[:2, :2] = np.asarray(image.GetDirection()).reshape(2, 2)
    else:
        spacing = image.GetSpacing()
        origin = image.GetOrigin()
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    valid = all(math.isfinite(s) and s > 0 for s in spacing)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction @ np.diag(spacing if valid else (1.0, 1.0, 1.0))
    affine_lps[:3, 3] = origin
    return np.ascontiguousarray(data.transpose(2, 1, 0)), _LPS_TO_RAS @ affine_lps, valid


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[-1] if text else ""
    return f"{type(error).__name__}: {first}"[:200]
