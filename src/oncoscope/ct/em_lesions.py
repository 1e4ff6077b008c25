"""Liver lesion candidates by expectation-maximisation (a Gaussian mixture on HU), seed 001.

The seed segments the liver ROI with EM; this module does the next step it shows, the lesions
inside that ROI, as a classical baseline beside the CNN's weak localisation.

Method, in HU and millimetres:

1. **ROI.** The liver: a LiTS segmentation (labels 1 and 2) or else the EM liver ROI of each
   slice (:func:`oncoscope.ct.liver_roi.liver_roi_em`). Each slice is median-filtered in-plane
   (``median_size_px``), because EM on single noisy voxels gives speckle.
2. **Core.** The ROI is eroded in-plane by ``margin_mm``: at the liver's edge every voxel mixes
   liver with the fat around it (partial volume) and is as dark as a lesion, a ring of false
   candidates. The mixture is fitted on the core only.
3. **Mixture.** A Gaussian mixture is fitted by EM (scikit-learn) to the core's HU. Three
   components by default, for the three tissues a contrast CT shows inside the liver:
   hypodense lesions, parenchyma, enhanced vessels (hyperdense). Lesions are a small share of
   the liver (often under 1 %), and EM started from k-means puts all three components into
   the parenchyma's bulk and never finds them; so EM starts from the tissues' order instead:
   means at the core's median HU and ``init_offset_hu`` below and above it (evenly spread
   when there are more components). EM then moves them where the data are.
4. **Components.** The parenchyma is the heaviest component. Lesion components are those whose
   mean lies at least ``min_contrast_hu`` below it (``phase="hypodense"``: metastases, cysts,
   HCC after washout) or above it (``phase="hyperdense"``: arterial-phase HCC, whose enhanced
   vessels are hyperdense too and so become candidates unless the opening removes them). A
   mixture whose components all lie close to the parenchyma has split the parenchyma, not
   found lesions: it yields none.
5. **Candidates.** Core voxels whose posterior probability of the lesion components exceeds
   0.5, opened in-plane by ``opening_mm`` (removes speckle and structures thinner than twice
   that), grown back into the rim by ``margin_mm`` (only rim voxels at least
   ``min_contrast_hu`` from the parenchyma's mean, so a lesion at the liver's edge keeps its
   edge and the rim alone never makes one), labelled as 3-D connected components (26-connectivity,
   :func:`oncoscope.ct.lesions.label_lesions`) and kept when their largest in-plane
   cross-section is at least ``min_area_mm2``.

:func:`score_lesions` scores a label map against a tumour mask: Dice, and lesion-level
sensitivity by diameter with false positives per volume.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from oncoscope.ct.denoise import check_median_size, median_denoise
from oncoscope.ct.lesions import bounding_box, find_lesions, label_lesions
from oncoscope.ct.liver_roi import dice, liver_roi_em
from oncoscope.ct.slices import TUMOUR_LABEL
from oncoscope.errors import InvalidOptionError, InvalidVolumeError, OncoscopeError
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.io.volumes import Volume, check_same_grid, read_label_mask, read_volume, to_ras_ijk

Phase = Literal["hypodense", "hyperdense"]
PHASES: tuple[str, ...] = ("hypodense", "hyperdense")
#: Lesion size bins of the lesion-level score, by largest in-plane diameter in mm.
SIZE_BINS_MM: tuple[tuple[str, float, float], ...] = (
    ("<10 mm", 0.0, 10.0),
    ("10-20 mm", 10.0, 20.0),
    (">20 mm", 20.0, math.inf),
)
#: Files :func:`save_segment_em` writes.
OUTPUT_NAMES = ("lesions.nii.gz", "lesions.csv", "segment_em.json")


@dataclass(frozen=True)
class EMLesionOptions:
    """Parameters of the EM lesion segmentation (see the module docstring for each step).

    Attributes:
        phase: ``"hypodense"`` (lesions darker than parenchyma) or ``"hyperdense"`` (brighter).
        n_components: mixture components, 2 to 6 (3: lesion, parenchyma, vessels).
        init_offset_hu: EM starts with means at the core's median and this far below and above.
        min_contrast_hu: a lesion component's mean lies at least this far from the parenchyma's.
        min_area_mm2: a lesion's largest in-plane cross-section is at least this, in mm².
        margin_mm: in-plane rim of the ROI left out of the fit (partial volume), in mm.
        opening_mm: in-plane opening radius in mm (at least one pixel).
        median_size_px: in-plane median filter window, odd pixels (1: none).
        max_samples: at most this many core voxels fit the mixture.
        seed: seed of the sampling and of EM.
    """

    phase: Phase = "hypodense"
    n_components: int = 3
    init_offset_hu: float = 40.0
    min_contrast_hu: float = 15.0
    min_area_mm2: float = 30.0
    margin_mm: float = 3.0
    opening_mm: float = 2.0
    median_size_px: int = 3
    max_samples: int = 200_000
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`InvalidOptionError` for an option out of range."""
        if self.phase not in PHASES:
            raise InvalidOptionError(f"--phase '{self.phase}' is not one of {', '.join(PHASES)}")
        if not 2 <= self.n_components <= 6:
            raise InvalidOptionError(f"--components must be 2 to 6, got {self.n_components}")
        check_median_size(self.median_size_px, "--median-size")
        for name, value in (
            ("--init-offset-hu", self.init_offset_hu),
            ("--min-contrast-hu", self.min_contrast_hu),
            ("--min-area-mm2", self.min_area_mm2),
            ("--margin-mm", self.margin_mm),
            ("--opening-mm", self.opening_mm),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidOptionError(f"{name} must be a number >= 0, got {value}")


@dataclass(frozen=True)
class MixtureFit:
    """The fitted mixture, components in ascending order of mean HU.

    Attributes:
        means_hu: mean of each component, HU.
        stds_hu: standard deviation of each component, HU.
        weights: share of the core's voxels of each component.
        parenchyma: index of the parenchyma (the heaviest component).
        lesion_components: indices of the components taken as lesion.
        fitted_voxels: how many voxels fitted it.
    """

    means_hu: tuple[float, ...]
    stds_hu: tuple[float, ...]
    weights: tuple[float, ...]
    parenchyma: int
    lesion_components: tuple[int, ...]
    fitted_voxels: int


@dataclass
class EMLesionResult:
    """Lesion labels of a volume (or of one slice, ``D = 1``).

    Attributes:
        labels: ``(D, H, W)`` int32, 0 outside lesions, 1..N lesions in scan order.
        roi: ``(D, H, W)`` liver ROI used.
        mixture: the fitted mixture; None when the ROI's core was too small to fit one.
        empty_roi_slices: indices of the slices whose ROI is empty.
    """

    labels: npt.NDArray[np.int32]
    roi: npt.NDArray[np.bool_]
    mixture: MixtureFit | None
    empty_roi_slices: list[int] = field(default_factory=list)


def segment_lesions_em(
    hu: npt.NDArray[np.floating],
    roi: npt.NDArray[np.bool_],
    spacing_mm: tuple[float, float, float],
    options: EMLesionOptions = EMLesionOptions(),
) -> EMLesionResult:
    """Segment lesion candidates inside a liver ROI with a Gaussian mixture fitted by EM.

    Args:
        hu: ``(D, H, W)`` volume (or ``(H, W)`` slice) in HU, canonical layout.
        roi: liver ROI of the same shape (lesions inside it included, as holes filled).
        spacing_mm: voxel size ``(slice, row, col)`` in mm (the slice spacing is unused).
        options: see :class:`EMLesionOptions`.

    Returns:
        The :class:`EMLesionResult` (``(D, H, W)`` arrays, ``D = 1`` for a slice).

    Raises:
        InvalidOptionError: an option out of range, or ``roi`` of another shape than ``hu``.

    Example:
        >>> import numpy as np
        >>> hu = np.random.default_rng(0).normal(100, 8, (3, 64, 64)).astype(np.float32)
        >>> yy, xx = np.mgrid[:64, :64]
        >>> hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 <= 36] -= 50   # a 13-pixel dark disc
        >>> result = segment_lesions_em(hu, np.ones(hu.shape, bool), (5.0, 1.0, 1.0))
        >>> int(result.labels.max()), bool(result.labels[1, 32, 32])
        (1, True)
    """
    options.check()
    volume = np.asarray(hu, dtype=np.float32)
    mask = np.asarray(roi, dtype=bool)
    if volume.ndim == 2:
        volume, mask = volume[None], mask[None]
    if volume.shape != mask.shape or volume.ndim != 3:
        raise InvalidOptionError(f"ROI shape {mask.shape} differs from image shape {volume.shape}")
    labels = np.zeros(volume.shape, dtype=np.int32)
    empty = [int(k) for k in np.flatnonzero(~mask.any(axis=(1, 2)))]
    box = bounding_box(mask)
    if box is None:
        return EMLesionResult(labels, mask, None, empty)
    _, row_mm, col_mm = spacing_mm
    margin_px = _pixels(options.margin_mm, row_mm, col_mm, minimum=0)
    opening_px = _pixels(options.opening_mm, row_mm, col_mm, minimum=1 if options.opening_mm else 0)
    pad = margin_px + opening_px + options.median_size_px
    crop = _padded(box, volume.shape, pad)
    image = median_denoise(volume[crop], options.median_size_px)
    region = mask[crop]
    core = _erode_in_plane(region, margin_px)
    values = image[core]
    if values.size < 20 * options.n_components:
        return EMLesionResult(labels, mask, None, empty)
    mixture, fit, columns = _fit_mixture(values, options)
    candidates = np.zeros(region.shape, dtype=bool)
    if columns:
        posterior = mixture.predict_proba(values[:, None].astype(np.float64))
        candidates[core] = posterior[:, list(columns)].sum(axis=1) > 0.5
        parenchyma_hu = fit.means_hu[fit.parenchyma]
        if options.phase == "hypodense":
            contrasted = image <= parenchyma_hu - options.min_contrast_hu
        else:
            contrasted = image >= parenchyma_hu + options.min_contrast_hu
        if opening_px:
            candidates = ndimage.binary_opening(candidates, _disk_in_plane(opening_px))
        if margin_px:
            grown = ndimage.binary_dilation(candidates, _disk_in_plane(margin_px))
            candidates |= grown & region & ~core & contrasted
    kept = _keep_large(label_lesions(candidates), row_mm * col_mm, options.min_area_mm2)
    labels[crop] = kept
    return EMLesionResult(labels, mask, fit, empty)


#: Side of the median window (pixels) applied before the EM liver ROI, as seed 001's chain does:
#: EM on single noisy pixels leaves the ROI ragged and drops hypodense lesions at its edge.
ROI_MEDIAN_SIZE_PX = 3


def liver_roi_slice(
    hu: npt.NDArray[np.floating],
    pixel_mm: tuple[float, float],
    *,
    seed: int = 0,
    median_size_px: int = ROI_MEDIAN_SIZE_PX,
) -> npt.NDArray[np.bool_]:
    """Seed 001's liver ROI of one slice: a 3 x 3 median, then the EM liver ROI
    (:func:`oncoscope.ct.liver_roi.liver_roi_em`).

    Args:
        hu: ``(H, W)`` slice in HU, canonical layout.
        pixel_mm: ``(row, col)`` pixel size in mm.
        seed: seed of EM.
        median_size_px: the median window, odd pixels (1: EM on the raw pixels).

    Returns:
        ``(H, W)`` boolean ROI; all False when no liver-like region is found (a slice of one
        value, such as air, among them: EM's warning that it found fewer clusters is silenced).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return liver_roi_em(median_denoise(hu, median_size_px), pixel_mm, seed=seed)


def liver_roi_volume(
    hu: npt.NDArray[np.floating],
    pixel_mm: tuple[float, float],
    *,
    seed: int = 0,
    on_slice: Callable[[int], None] | None = None,
    median_size_px: int = ROI_MEDIAN_SIZE_PX,
) -> npt.NDArray[np.bool_]:
    """Seed 001's liver ROI (:func:`liver_roi_slice`) of every slice, as one organ: only the
    largest 3-D connected piece of the slices' ROIs is kept, since on slices above or below the
    liver the per-slice ROI settles on another organ.

    Args:
        hu: ``(D, H, W)`` volume in HU, canonical layout.
        pixel_mm: ``(row, col)`` pixel size in mm.
        seed: seed of EM.
        on_slice: called with each slice index when it is done (progress).
        median_size_px: the median window, odd pixels (1: EM on the raw pixels).

    Returns:
        ``(D, H, W)`` boolean ROI; a slice where no liver-like region is found (or only one
        apart from the largest piece) is all False.
    """
    volume = np.asarray(hu, dtype=np.float32)
    roi = np.zeros(volume.shape, dtype=bool)
    for k in range(volume.shape[0]):
        roi[k] = liver_roi_slice(volume[k], pixel_mm, seed=seed, median_size_px=median_size_px)
        if on_slice is not None:
            on_slice(k)
    pieces, count = ndimage.label(roi)
    if count > 1:
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        roi = pieces == int(sizes.argmax())
    return roi


@dataclass(frozen=True)
class SizeBinScore:
    """Lesion-level detection in one size bin.

    Attributes:
        name: the bin, e.g. ``"10-20 mm"``.
        lesions: true lesions in it.
        detected: of those, how many overlap a predicted lesion.
    """

    name: str
    lesions: int
    detected: int

    @property
    def sensitivity(self) -> float | None:
        """``detected / lesions``; None for an empty bin."""
        return self.detected / self.lesions if self.lesions else None


@dataclass(frozen=True)
class LesionScore:
    """A predicted lesion map scored against a tumour mask.

    Attributes:
        dice: voxel Dice of predicted against true tumour (1.0 when both are empty).
        bins: detection by true lesion diameter (:data:`SIZE_BINS_MM`).
        true_lesions: true lesions (3-D components of the tumour mask).
        detected: true lesions that overlap a predicted lesion by at least one voxel.
        predicted_lesions: predicted lesions.
        false_positives: predicted lesions that overlap no true lesion.
    """

    dice: float
    bins: tuple[SizeBinScore, ...]
    true_lesions: int
    detected: int
    predicted_lesions: int
    false_positives: int

    def to_json(self) -> dict[str, Any]:
        """The record written under ``score`` in ``segment_em.json``."""
        return {
            "dice": round(self.dice, 4),
            "true_lesions": self.true_lesions,
            "detected": self.detected,
            "sensitivity": round(self.detected / self.true_lesions, 4)
            if self.true_lesions
            else None,
            "predicted_lesions": self.predicted_lesions,
            "false_positives": self.false_positives,
            "by_size": {
                b.name: {
                    "lesions": b.lesions,
                    "detected": b.detected,
                    "sensitivity": None if b.sensitivity is None else round(b.sensitivity, 4),
                }
                for b in self.bins
            },
            "rule": "a true lesion (3-D component of label 2) is detected when a predicted "
            "lesion overlaps it by one voxel or more; a predicted lesion overlapping none is a "
            "false positive; size = the true lesion's largest in-plane Feret diameter",
        }


def score_lesions(
    predicted: npt.NDArray[np.integer],
    tumour: npt.NDArray[np.bool_],
    spacing_mm: tuple[float, float, float],
) -> LesionScore:
    """Score predicted lesion labels against a true tumour mask.

    Args:
        predicted: ``(D, H, W)`` lesion labels (0 background) or a boolean mask.
        tumour: ``(D, H, W)`` true tumour mask.
        spacing_mm: voxel size ``(slice, row, col)`` in mm, for the lesions' diameters.

    Returns:
        The :class:`LesionScore`.
    """
    found = np.asarray(predicted) > 0
    truth = np.asarray(tumour, dtype=bool)
    true_labels = label_lesions(truth)
    predicted_labels = label_lesions(found)
    lesions = find_lesions(truth, spacing_mm)
    hit_true = set(np.unique(true_labels[found]).tolist()) - {0}
    hit_predicted = set(np.unique(predicted_labels[truth]).tolist()) - {0}
    bins = []
    for name, low, high in SIZE_BINS_MM:
        members = [
            lesion
            for lesion in lesions
            if low <= lesion.diameter_mm < high or (high == 20.0 and lesion.diameter_mm == high)
        ]
        detected = sum(1 for lesion in members if lesion.lesion_id in hit_true)
        bins.append(SizeBinScore(name, len(members), detected))
    n_predicted = int(predicted_labels.max())
    return LesionScore(
        dice=dice(found, truth),
        bins=tuple(bins),
        true_lesions=len(lesions),
        detected=sum(1 for lesion in lesions if lesion.lesion_id in hit_true),
        predicted_lesions=n_predicted,
        false_positives=n_predicted - len(hit_predicted),
    )


@dataclass
class SegmentEMResult:
    """What ``oncoscope ct segment-em`` computed for one volume.

    Attributes:
        volume: the CT volume (canonical layout).
        result: the segmentation.
        options: its options.
        liver_source: ``"mask"`` (a segmentation) or ``"em-roi"`` (EM liver ROI per slice).
        liver_mask_path: the liver segmentation, when one was given.
        score: the score against ``truth_path``, when one was given.
        truth_path: the reference segmentation.
    """

    volume: Volume
    result: EMLesionResult
    options: EMLesionOptions
    liver_source: Literal["mask", "em-roi"]
    liver_mask_path: Path | None = None
    score: LesionScore | None = None
    truth_path: Path | None = None

    def lesion_rows(self, small_mm: float) -> list[dict[str, Any]]:
        """One row per lesion for ``lesions.csv`` (centroid in RAS mm, slices canonical)."""
        labels = self.result.labels
        affine = self.volume.affine
        rows = []
        for lesion in find_lesions(labels > 0, self.volume.spacing_mm):
            # find_lesions numbers components in scan order, as the label map does
            centroid = affine[:3, :3] @ np.asarray(lesion.centroid_dhw) + affine[:3, 3]
            mean_hu = float(self.volume.array[labels == lesion.lesion_id].mean())
            rows.append(
                {
                    "id": lesion.lesion_id,
                    "centroid_x_mm": round(float(centroid[0]), 2),
                    "centroid_y_mm": round(float(centroid[1]), 2),
                    "centroid_z_mm": round(float(centroid[2]), 2),
                    "max_diameter_mm": round(lesion.diameter_mm, 2),
                    "volume_ml": round(lesion.volume_ml, 4),
                    "first_slice": lesion.slice_indices[0],
                    "last_slice": lesion.slice_indices[-1],
                    "mean_hu": round(mean_hu, 1),
                    "small": lesion.is_small(small_mm),
                }
            )
        return rows

    def to_json(self, small_mm: float) -> dict[str, Any]:
        """The record written to ``segment_em.json``."""
        fit = self.result.mixture
        depth = self.volume.shape[0]
        return {
            "volume": str(self.volume.source),
            "liver": {
                "source": self.liver_source,
                "mask": str(self.liver_mask_path) if self.liver_mask_path else None,
                "roi_slices": depth - len(self.result.empty_roi_slices),
                "empty_roi_slices": self.result.empty_roi_slices,
                "empty_roi_ranges": slice_ranges(self.result.empty_roi_slices),
            },
            "options": {**asdict(self.options), "small_mm": small_mm},
            "spacing_mm": list(self.volume.spacing_mm),
            "mixture": None if fit is None else asdict(fit),
            "lesion_count": int(self.result.labels.max()),
            "lesions": self.lesion_rows(small_mm),
            "coordinates": "centroids in RAS+ patient mm; slices indexed inferior (0) to "
            "superior, as oncoscope reads volumes",
            "truth": str(self.truth_path) if self.truth_path else None,
            "score": None if self.score is None else self.score.to_json(),
        }


def segment_em(
    volume_path: str | Path,
    *,
    liver_mask_path: str | Path | None = None,
    truth_path: str | Path | None = None,
    options: EMLesionOptions = EMLesionOptions(),
    spacing_mm: tuple[float, float, float] | None = None,
    on_slice: Callable[[int, int], None] | None = None,
) -> SegmentEMResult:
    """EM lesion segmentation of a CT volume, optionally scored against a reference.

    Args:
        volume_path: the CT volume (any format of :func:`oncoscope.io.volumes.read_volume`).
        liver_mask_path: a LiTS segmentation on the volume's grid whose labels 1 and 2 are the
            liver ROI; without it, the EM liver ROI of each slice.
        truth_path: a LiTS segmentation on the volume's grid to score against (label 2).
        options: see :class:`EMLesionOptions`.
        spacing_mm: voxel size ``(D, H, W)`` in mm for files whose own is zero, negative or NaN.
        on_slice: called ``(done, total)`` as the EM liver ROI proceeds slice by slice.

    Returns:
        The :class:`SegmentEMResult`.

    Raises:
        InvalidOptionError: an option out of range.
        InvalidVolumeError: a segmentation off the volume's grid, with labels other than 0, 1,
            2, or without liver; a liver ROI that is empty on every slice.
        OncoscopeError: every error of :func:`oncoscope.io.volumes.read_volume`.
    """
    options.check()
    volume = read_volume(volume_path, spacing_mm=spacing_mm)
    truth = None
    if truth_path is not None:
        truth_mask = read_label_mask(truth_path, max_label=2, spacing_mm=spacing_mm)
        check_same_grid(volume, truth_mask)
        truth = np.asarray(truth_mask.array == TUMOUR_LABEL)
    if liver_mask_path is not None:
        mask = read_label_mask(liver_mask_path, max_label=2, spacing_mm=spacing_mm)
        check_same_grid(volume, mask)
        roi = np.asarray(mask.array >= 1)
        if not roi.any():
            raise InvalidVolumeError("segmentation holds no liver (label 1 or 2)", mask.source)
        source: Literal["mask", "em-roi"] = "mask"
    else:
        depth = volume.shape[0]
        roi = liver_roi_volume(
            volume.array,
            volume.spacing_mm[1:],
            seed=options.seed,
            on_slice=None if on_slice is None else lambda k: on_slice(k + 1, depth),
        )
        if not roi.any():
            raise InvalidVolumeError(
                "the EM liver ROI is empty on every slice (no liver-like soft tissue found); "
                "give the liver with --liver-mask",
                volume.source,
            )
        source = "em-roi"
    result = segment_lesions_em(volume.array, roi, volume.spacing_mm, options)
    score = None if truth is None else score_lesions(result.labels, truth, volume.spacing_mm)
    return SegmentEMResult(
        volume=volume,
        result=result,
        options=options,
        liver_source=source,
        liver_mask_path=Path(liver_mask_path) if liver_mask_path is not None else None,
        score=score,
        truth_path=Path(truth_path) if truth_path is not None else None,
    )


def check_outputs_free(out_dir: str | Path, *, overwrite: bool) -> None:
    """Refuse to replace earlier outputs in ``out_dir`` unless ``overwrite``.

    Raises:
        OncoscopeError: one of :data:`OUTPUT_NAMES` exists and ``overwrite`` is False.
    """
    existing = [name for name in OUTPUT_NAMES if (Path(out_dir) / name).exists()]
    if existing and not overwrite:
        raise OncoscopeError(
            f"already holds {', '.join(existing)}; pass --overwrite to replace them or choose "
            "another --out",
            out_dir,
        )


def save_segment_em(
    found: SegmentEMResult, out_dir: str | Path, *, small_mm: float = 20.0
) -> dict[str, Path]:
    """Write ``lesions.nii.gz``, ``lesions.csv`` and ``segment_em.json`` (each atomically).

    The label map lies on the input's voxel grid: for a NIfTI input it is stored with the
    input's own axis order and affine (so it overlays voxel for voxel, in numpy as in 3D
    Slicer); for DICOM and ITK inputs in RAS order with the volume's RAS affine.

    Args:
        found: from :func:`segment_em`.
        out_dir: the output folder (created if missing).
        small_mm: a lesion with a largest in-plane diameter at most this is flagged small.

    Returns:
        ``{"labels": ..., "csv": ..., "json": ...}`` paths.
    """
    import nibabel as nib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out_dir / file
        for name, file in zip(("labels", "csv", "json"), OUTPUT_NAMES, strict=True)
    }
    labels = found.result.labels
    dtype = np.uint8 if labels.max() < 256 else np.uint16 if labels.max() < 65536 else np.int32
    image = nib.Nifti1Image(*to_ras_ijk(labels.astype(dtype), found.volume.affine))
    image = _as_input_orientation(image, found.volume.source)
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(paths["labels"]) as temporary:
        nib.save(image, temporary)
    rows = found.lesion_rows(small_mm)
    with atomic_path(paths["csv"]) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_json(paths["json"], found.to_json(small_mm), indent=2)
    return paths


def slice_ranges(indices: Sequence[int]) -> list[str]:
    """Compact runs of slice indices: ``[0, 1, 2, 7]`` -> ``["0-2", "7"]``.

    Example:
        >>> slice_ranges([0, 1, 2, 7, 9, 10])
        ['0-2', '7', '9-10']
    """
    runs: list[str] = []
    start = previous = None
    for index in [*sorted(indices), None]:
        if index is not None and previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return runs


_CSV_COLUMNS = [
    "id",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "max_diameter_mm",
    "volume_ml",
    "first_slice",
    "last_slice",
    "mean_hu",
    "small",
]


def _fit_mixture(
    values: npt.NDArray[np.float32], options: EMLesionOptions
) -> tuple[GaussianMixture, MixtureFit, tuple[int, ...]]:
    """Fit the mixture (see the module docstring); return it, its summary in ascending order
    of mean, and the posterior columns of the lesion components."""
    rng = np.random.default_rng(options.seed)
    sample = values
    if values.size > options.max_samples:
        sample = rng.choice(values, options.max_samples, replace=False)
    x = sample.astype(np.float64)[:, None]
    centre = float(np.median(sample))
    k = options.n_components
    offset = options.init_offset_hu
    if k == 2:
        sign = -1.0 if options.phase == "hypodense" else 1.0
        initial = [centre, centre + sign * offset]
    else:
        initial = [centre - offset, centre, centre + offset]
        initial += list(np.linspace(centre - offset / 2, centre + offset / 2, k - 1)[1:-1])
        initial = initial[:k]
    mixture = GaussianMixture(
        n_components=k,
        means_init=np.sort(np.asarray(initial))[:, None],
        random_state=options.seed,
        max_iter=300,
        reg_covar=1.0,  # HU are integers: keep a variance of at least 1 HU²
    )
    mixture.fit(x)
    order = np.argsort(mixture.means_[:, 0])
    means = mixture.means_[order, 0]
    stds = np.sqrt(mixture.covariances_.reshape(k, -1)[order, 0])
    weights = mixture.weights_[order]
    parenchyma = int(np.argmax(weights))
    if options.phase == "hypodense":
        lesion = [i for i in range(k) if means[i] <= means[parenchyma] - options.min_contrast_hu]
    else:
        lesion = [i for i in range(k) if means[i] >= means[parenchyma] + options.min_contrast_hu]
    fit = MixtureFit(
        means_hu=tuple(round(float(v), 2) for v in means),
        stds_hu=tuple(round(float(v), 2) for v in stds),
        weights=tuple(round(float(v), 5) for v in weights),
        parenchyma=parenchyma,
        lesion_components=tuple(lesion),
        fitted_voxels=int(sample.size),
    )
    # the posterior's columns follow the mixture's own order, not the sorted one
    return mixture, fit, tuple(int(order[i]) for i in lesion)


def _pixels(size_mm: float, row_mm: float, col_mm: float, *, minimum: int) -> int:
    """A length in mm as whole pixels of the finer in-plane spacing, at least ``minimum``."""
    return max(minimum, round(size_mm / min(row_mm, col_mm)))


def _padded(
    box: tuple[slice, slice, slice], shape: tuple[int, ...], pad: int
) -> tuple[slice, slice, slice]:
    """The box grown in-plane by ``pad`` pixels, within ``shape``."""
    d, h, w = box
    return (
        d,
        slice(max(0, h.start - pad), min(shape[1], h.stop + pad)),
        slice(max(0, w.start - pad), min(shape[2], w.stop + pad)),
    )


def _disk_in_plane(radius_px: int) -> npt.NDArray[np.bool_]:
    """A ``(1, 2r+1, 2r+1)`` disc: morphology on each slice alone."""
    rows, cols = np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    return np.asarray((rows**2 + cols**2 <= radius_px**2)[None], dtype=bool)


def _erode_in_plane(mask: npt.NDArray[np.bool_], radius_px: int) -> npt.NDArray[np.bool_]:
    if radius_px == 0:
        return mask
    eroded = ndimage.binary_erosion(mask, _disk_in_plane(radius_px), border_value=0)
    return np.asarray(eroded, dtype=bool)


def _keep_large(
    labels: npt.NDArray[np.int32], pixel_mm2: float, min_area_mm2: float
) -> npt.NDArray[np.int32]:
    """Keep the components whose largest in-plane cross-section is >= ``min_area_mm2``,
    renumbered 1..N in scan order."""
    keep = np.zeros(int(labels.max()) + 1, dtype=bool)
    for index, extent in enumerate(ndimage.find_objects(labels), start=1):
        if extent is None:
            continue
        largest_px = int((labels[extent] == index).sum(axis=(1, 2)).max())
        keep[index] = largest_px * pixel_mm2 >= min_area_mm2
    return label_lesions(keep[labels])


def _as_input_orientation(image: Any, source: Path) -> Any:
    """``image`` (RAS order) stored in the axis order of a NIfTI ``source``; else unchanged."""
    import nibabel as nib

    from oncoscope.io.volumes import is_nifti

    if not (source.is_file() and is_nifti(source)):
        return image
    codes = nib.aff2axcodes(cast(Any, nib.load(source)).affine)  # read_volume read it already
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes)
    )
    return image.as_reoriented(transform)
