"""The seed-001 chain as a dataset step: median denoising, liver ROI, masking, on one HU slice.

:func:`apply_chain` is the one function that ``ct prepare`` applies to every slice it writes, so
that any later command can apply the same chain to new data. Steps, in HU, before windowing:

1. median denoising with a ``size x size`` pixel window (:func:`oncoscope.ct.denoise.
   median_denoise`), or none;
2. the liver region: the EM/Gaussian-mixture ROI fitted on the denoised slice
   (:func:`oncoscope.ct.liver_roi.liver_roi_em`), the segmentation's liver label (labels 1 and 2,
   so lesions stay inside), or none;
3. everything outside the region set to ``fill_hu``, the window's low end (black in the PNG;
   with three windows, the lowest of their low ends, so black in every channel). A slice whose
   ROI comes out empty is left unmasked (``ct prepare --on-empty-roi`` keeps or drops it).

The chain is recorded as JSON (:meth:`SliceChain.record`) in ``prepare.json``, in the manifest's
``chain`` column and, through training, in the checkpoint's ``spec["preprocessing"]["ct_chain"]``
(:func:`spec_chain` reads it); :func:`check_manifest_chain` refuses a manifest made with another
chain than a checkpoint's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from oncoscope.ct.denoise import check_median_size, median_denoise
from oncoscope.ct.window import HUWindow
from oncoscope.errors import InvalidOptionError, ManifestError

if TYPE_CHECKING:
    from oncoscope.models.spec import ModelSpec

RoiSource = Literal["none", "em", "mask"]
ROI_SOURCES: tuple[str, ...] = ("none", "em", "mask")
#: Manifest column holding the chain as JSON (empty: no chain).
CHAIN_COLUMN = "chain"
#: Key of the chain in a checkpoint spec's ``preprocessing``.
SPEC_KEY = "ct_chain"


@dataclass(frozen=True)
class SliceChain:
    """Parameters of the chain.

    Attributes:
        median_size_px: side of the median window in pixels (odd); None: no denoising.
        roi: ``"em"`` (Gaussian mixture on HU), ``"mask"`` (the segmentation's liver label) or
            ``"none"`` (no masking).
        em_components: mixture components of the EM ROI.
        em_opening_mm: opening radius of the EM ROI, in mm.
        seed: seed of the EM ROI's subsampling and initialisation.
    """

    median_size_px: int | None = None
    roi: RoiSource = "none"
    em_components: int = 4
    em_opening_mm: float = 7.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.roi not in ROI_SOURCES:
            raise InvalidOptionError(f"--roi '{self.roi}' is not one of {', '.join(ROI_SOURCES)}")
        if self.median_size_px is not None:
            check_median_size(self.median_size_px)

    @property
    def is_identity(self) -> bool:
        """True when the chain changes nothing (no denoising, no ROI)."""
        return self.median_size_px is None and self.roi == "none"

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> SliceChain:
        """The chain a :meth:`record` describes (None: the identity chain), e.g. the one a
        checkpoint was trained on (:func:`spec_chain`), to apply to new data.

        Raises:
            InvalidOptionError: a record this version cannot read.
        """
        if not record:
            return cls()
        em = record.get("em") or {}
        try:
            return cls(
                median_size_px=parse_denoise(str(record.get("denoise", "none"))),
                roi=record.get("roi", "none"),
                em_components=int(em.get("components", 4)),
                em_opening_mm=float(em.get("opening_mm", 7.0)),
                seed=int(em.get("seed", 0)),
            )
        except (TypeError, ValueError):
            raise InvalidOptionError(f"cannot read the chain record {record}") from None

    def record(self) -> dict[str, Any] | None:
        """The chain as plain values (None for the identity chain); EM settings only with em."""
        if self.is_identity:
            return None
        record: dict[str, Any] = {
            "denoise": "none" if self.median_size_px is None else f"median:{self.median_size_px}",
            "roi": self.roi,
            "outside_roi": "window low end",
        }
        if self.roi == "em":
            record["em"] = {
                "components": self.em_components,
                "opening_mm": self.em_opening_mm,
                "seed": self.seed,
            }
        return record


@dataclass(frozen=True)
class ChainOutput:
    """What :func:`apply_chain` made of one slice.

    Attributes:
        hu: ``(H, W)`` float32 HU, denoised and masked.
        roi: ``(H, W)`` bool liver region, or None with ``roi="none"``.
    """

    hu: npt.NDArray[np.float32]
    roi: npt.NDArray[np.bool_] | None

    @property
    def roi_empty(self) -> bool:
        """True when the chain has an ROI step and it found nothing (the slice is unmasked)."""
        return self.roi is not None and not bool(self.roi.any())


def parse_denoise(text: str) -> int | None:
    """``--denoise``: ``none`` -> None, ``median`` -> 3, ``median:SIZE`` -> SIZE (odd pixels).

    Raises:
        InvalidOptionError: anything else, or an even or non-positive size.
    """
    key = text.strip().lower()
    if key == "none":
        return None
    name, _, size = key.partition(":")
    if name != "median" or (size and not size.isdigit()):
        raise InvalidOptionError(f"--denoise '{text}' is not none, median or median:SIZE")
    size_px = int(size) if size else 3
    if size_px < 1 or size_px % 2 == 0:
        raise InvalidOptionError(f"--denoise median size must be odd and >= 1, got {size_px}")
    return size_px


def fill_hu(windows: tuple[HUWindow, ...]) -> float:
    """HU that every window maps to 0 (black): the lowest of their low ends."""
    return min(w.low_hu for w in windows)


def apply_chain(
    hu_slice: npt.NDArray[np.floating],
    chain: SliceChain,
    liver_mask: npt.NDArray[np.bool_] | None = None,
    *,
    pixel_mm: tuple[float, float] = (1.0, 1.0),
    fill_hu: float,
) -> ChainOutput:
    """Apply the chain to one slice (see the module docstring); the input is left unchanged.

    Args:
        hu_slice: ``(H, W)`` slice in HU, radiological layout.
        chain: the chain.
        liver_mask: ``(H, W)`` liver (labels 1-2 of a segmentation); needed with ``roi="mask"``.
        pixel_mm: ``(row, col)`` pixel size in mm (the EM ROI's morphology is in mm).
        fill_hu: HU given to everything outside the ROI (the window's low end, :func:`fill_hu`).

    Returns:
        The :class:`ChainOutput`; an empty ROI leaves the denoised slice unmasked.

    Raises:
        InvalidOptionError: ``roi="mask"`` without a liver mask, or a mask of another shape.
    """
    from oncoscope.ct.liver_roi import liver_roi_em  # scikit-learn: only when a chain runs

    image = np.asarray(hu_slice, dtype=np.float32)
    if chain.median_size_px is not None:
        image = median_denoise(image, chain.median_size_px)
    roi: npt.NDArray[np.bool_] | None = None
    if chain.roi == "em":
        roi = liver_roi_em(
            image,
            pixel_mm,
            n_components=chain.em_components,
            opening_mm=chain.em_opening_mm,
            seed=chain.seed,
        )
    elif chain.roi == "mask":
        if liver_mask is None:
            raise InvalidOptionError("--roi mask needs the segmentation's liver label")
        roi = np.asarray(liver_mask, dtype=bool)
        if roi.shape != image.shape:
            raise InvalidOptionError(f"liver mask {roi.shape} is not the slice's {image.shape}")
    if roi is not None and roi.any():
        image = np.where(roi, image, np.float32(fill_hu)).astype(np.float32)
    return ChainOutput(image, roi)


def chain_text(record: dict[str, Any] | None) -> str:
    """The manifest cell of a chain record (sorted JSON; empty for no chain)."""
    return "" if record is None else json.dumps(record, sort_keys=True, separators=(",", ":"))


def describe(record: dict[str, Any] | None) -> str:
    """A short description for messages: ``denoise median:3, roi em`` or ``none``."""
    if not record:
        return "none (no --denoise, no --roi)"
    return f"denoise {record.get('denoise')}, roi {record.get('roi')}"


def manifest_chain(frame: pd.DataFrame, manifest: str | Path) -> dict[str, Any] | None:
    """The chain every image of a manifest was made with (its ``chain`` column), or None.

    Raises:
        ManifestError: images made with different chains (or some with one and some without),
            or a cell that is not the JSON ``ct prepare`` writes.
    """
    if CHAIN_COLUMN not in frame.columns:
        return None
    values = {"" if pd.isna(v) else str(v).strip() for v in frame[CHAIN_COLUMN]}
    if len(values) > 1:
        raise ManifestError(
            "slices were prepared with different chains (or some with none); prepare every "
            "patient with the same --denoise and --roi",
            manifest,
        )
    text = values.pop() if values else ""
    if not text:
        return None
    not_json = "the chain column is not the JSON ct prepare writes"
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise ManifestError(not_json, manifest) from None
    if not isinstance(record, dict):
        raise ManifestError(not_json, manifest)
    return record


def spec_chain(spec: ModelSpec) -> dict[str, Any] | None:
    """The chain a checkpoint's training images were made with (None: no chain)."""
    return dict(spec.ct_chain) if spec.ct_chain else None


def check_manifest_chain(spec: ModelSpec, manifest: str | Path) -> None:
    """Refuse a manifest whose chain differs from the checkpoint's.

    Raises:
        ManifestError: the chains differ (both named), or the manifest mixes chains.
    """
    from oncoscope.dataset.manifest import read_manifest

    frame = read_manifest(manifest, required=("path",))
    made_with, trained_on = manifest_chain(frame, manifest), spec_chain(spec)
    if made_with != trained_on:
        raise ManifestError(
            f"slices were prepared with chain {describe(made_with)}, but the checkpoint was "
            f"trained on chain {describe(trained_on)}; prepare them with the checkpoint's chain",
            manifest,
        )
