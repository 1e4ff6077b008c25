"""The seed-001 preprocessing chain on one slice, each step saved, plus one panel figure.

Steps, in HU throughout: input -> resized -> noised (optional) -> denoised (median filter) ->
liver ROI (EM, :mod:`oncoscope.ct.liver_roi`) -> masked (outside the ROI set to the window's low
end) -> segmented (EM lesion candidates inside the ROI, :mod:`oncoscope.ct.em_lesions`, the
mixture fitted on this slice). Every step is kept so that a reader can see what each one did.
Several slices of a volume give one panel, a row per slice and a column per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from skimage.transform import resize

from oncoscope.ct.denoise import NoiseKind, add_noise, median_denoise
from oncoscope.ct.em_lesions import EMLesionOptions, Phase, liver_roi_volume, segment_lesions_em
from oncoscope.ct.liver_roi import dice, liver_roi_em
from oncoscope.ct.window import HUWindow, apply_window, from_uint8, to_uint8
from oncoscope.dataset.images import IMAGE_SUFFIXES
from oncoscope.errors import (
    CorruptFileError,
    InvalidOptionError,
    InvalidVolumeError,
    UnsupportedFormatError,
)
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.io.volumes import Volume, check_same_grid, read_label_mask, read_volume

STEP_TITLES = {
    "input": "input",
    "resized": "resized",
    "noised": "noised",
    "denoised": "noise removed (median)",
    "roi": "liver ROI (EM)",
    "masked": "masked",
    "segmented": "EM lesion segmentation",
}


@dataclass(frozen=True)
class ChainOptions:
    """Parameters of the chain.

    Attributes:
        size_px: output side in pixels (square); None keeps the input size.
        noise: ``"none"``, ``"gaussian"`` or ``"salt-pepper"``.
        noise_amount: HU standard deviation (gaussian) or pixel fraction (salt-pepper).
        median_size_px: median window side in pixels (odd).
        seed: seed of the noise and of EM.
        lesion_phase: lesions darker (``"hypodense"``) or brighter (``"hyperdense"``) than the
            parenchyma, for the EM lesion segmentation step.
    """

    size_px: int | None = 256
    noise: NoiseKind = "none"
    noise_amount: float = 0.0
    median_size_px: int = 3
    seed: int = 0
    lesion_phase: Phase = "hypodense"


@dataclass
class ChainResult:
    """Every step of the chain.

    Attributes:
        steps: step name -> ``(H, W)`` float32 HU image (``roi`` and ``segmented`` are 0/1).
        pixel_mm: ``(row, col)`` pixel size in mm after resizing.
        window: the display window.
        source: what was read, and which slice.
        roi_dice: Dice of the ROI against a reference liver mask, when one was given.
    """

    steps: dict[str, npt.NDArray[np.float32]]
    pixel_mm: tuple[float, float]
    window: HUWindow
    source: str
    roi_dice: float | None = None
    options: dict[str, object] = field(default_factory=dict)
    slice_index: int | None = None

    @property
    def roi_empty(self) -> bool:
        """True when the EM liver ROI found nothing on this slice."""
        return not bool(self.steps["roi"].any())


def run_chain(
    hu: npt.NDArray[np.floating],
    pixel_mm: tuple[float, float],
    window: HUWindow,
    options: ChainOptions = ChainOptions(),
    *,
    reference_liver: npt.NDArray[np.bool_] | None = None,
    source: str = "",
    slice_index: int | None = None,
) -> ChainResult:
    """Run the chain on one ``(H, W)`` HU slice.

    Args:
        hu: the slice in HU (radiological layout).
        pixel_mm: ``(row, col)`` pixel size in mm.
        window: display window; its low end fills the masked-out area and bounds the noise.
        options: see :class:`ChainOptions`.
        reference_liver: optional ``(H, W)`` true liver mask (input size) to score the ROI.
        source: a description of the input for the record.
        slice_index: the slice of the volume it came from, for the record and the panel.

    Raises:
        InvalidOptionError: a bad size, noise or median option.
    """
    image = np.asarray(hu, dtype=np.float32)
    steps: dict[str, npt.NDArray[np.float32]] = {"input": image}
    if options.size_px is not None:
        if options.size_px < 16:
            raise InvalidOptionError(f"resize size must be at least 16 px, got {options.size_px}")
        out_shape = (options.size_px, options.size_px)
        image = resize(image, out_shape, order=1, preserve_range=True, anti_aliasing=True)
        image = image.astype(np.float32)
        pixel_mm = (
            pixel_mm[0] * hu.shape[0] / out_shape[0],
            pixel_mm[1] * hu.shape[1] / out_shape[1],
        )
    steps["resized"] = image
    noised = add_noise(
        image,
        options.noise,
        options.noise_amount,
        low_hu=window.low_hu,
        high_hu=window.high_hu,
        seed=options.seed,
    )
    steps["noised"] = noised
    denoised = median_denoise(noised, options.median_size_px)
    steps["denoised"] = denoised
    roi = liver_roi_em(denoised, pixel_mm, seed=options.seed)
    steps["roi"] = roi.astype(np.float32)
    steps["masked"] = np.where(roi, denoised, np.float32(window.low_hu)).astype(np.float32)
    lesions = segment_lesions_em(
        denoised,
        roi,
        (1.0, *pixel_mm),
        EMLesionOptions(phase=options.lesion_phase, median_size_px=1, seed=options.seed),
    )
    steps["segmented"] = (lesions.labels[0] > 0).astype(np.float32)
    score = None
    if reference_liver is not None:
        reference = resize(
            np.asarray(reference_liver, dtype=np.float32), roi.shape, order=0, anti_aliasing=False
        )
        score = dice(roi, reference > 0.5)
    return ChainResult(steps, pixel_mm, window, source, score, asdict(options), slice_index)


def load_slice(
    path: str | Path,
    slice_index: int | None,
    window: HUWindow,
    *,
    spacing_mm: tuple[float, float, float] | None = None,
) -> tuple[npt.NDArray[np.float32], tuple[float, float], int | None, str]:
    """Load one HU slice from a volume (NIfTI, DICOM) or from an 8-bit windowed image.

    An 8-bit image (such as ``ct prepare`` writes) is mapped back to HU through ``window``;
    its pixel size is unknown and taken as 1 mm.

    Args:
        path: a volume or an 8-bit image.
        slice_index: the slice of a volume (None: the middle one); ignored for an image.
        window: the HU window an 8-bit image was made with.
        spacing_mm: voxel size ``(D, H, W)`` in mm for a volume whose own is zero, negative or
            NaN.

    Returns:
        ``(hu, pixel_mm, slice_index, description)``; ``slice_index`` is None for an image.

    Raises:
        InvalidOptionError: ``slice_index`` outside the volume.
        CorruptFileError: an image file that cannot be decoded.
        OncoscopeError: every error of :func:`oncoscope.io.volumes.read_volume`.
    """
    hu, pixel_mm, index, description, _ = _load(path, slice_index, window, spacing_mm)
    return hu, pixel_mm, index, description


def load_slice_with_reference(
    path: str | Path,
    slice_index: int | None,
    window: HUWindow,
    mask_path: str | Path | None,
    *,
    spacing_mm: tuple[float, float, float] | None = None,
) -> tuple[
    npt.NDArray[np.float32], tuple[float, float], int | None, str, npt.NDArray[np.bool_] | None
]:
    """:func:`load_slice` plus the reference liver of the same slice from a segmentation.

    The segmentation must lie on the volume's voxel grid (same shape and affine, as in
    ``ct prepare``), so that its slice is the same anatomy.

    Returns:
        ``(hu, pixel_mm, slice_index, description, reference)``; ``reference`` is the
        ``(H, W)`` liver (label >= 1) of the slice, None without ``mask_path``.

    Raises:
        InvalidVolumeError: the segmentation's shape or affine differs from the volume's.
        UnsupportedFormatError: a segmentation given with an image input.
        OncoscopeError: every error of :func:`load_slice` and
            :func:`oncoscope.io.volumes.read_label_mask`.
    """
    hu, pixel_mm, index, description, volume = _load(path, slice_index, window, spacing_mm)
    if mask_path is None:
        return hu, pixel_mm, index, description, None
    reference = load_reference_liver(mask_path, index, volume=volume, spacing_mm=spacing_mm)
    return hu, pixel_mm, index, description, reference


#: ``(hu, pixel_mm, slice_index, description, reference)`` as the loaders return them.
LoadedSlice = tuple[
    npt.NDArray[np.float32], tuple[float, float], int | None, str, npt.NDArray[np.bool_] | None
]


def load_slices_with_reference(
    path: str | Path,
    slice_indices: list[int | None],
    window: HUWindow,
    mask_path: str | Path | None,
    *,
    spacing_mm: tuple[float, float, float] | None = None,
) -> list[LoadedSlice]:
    """:func:`load_slice_with_reference` for several slices of one volume, read once.

    A slice index None is the middle slice.

    Raises:
        UnsupportedFormatError: several slices asked of an image.
        InvalidOptionError: a slice outside the volume.
        OncoscopeError: every error of :func:`load_slice_with_reference`.
    """
    if len(slice_indices) == 1:
        return [
            load_slice_with_reference(
                path, slice_indices[0], window, mask_path, spacing_mm=spacing_mm
            )
        ]
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise UnsupportedFormatError("several slices need a volume, not a single image", path)
    volume = read_volume(path, spacing_mm=spacing_mm)
    mask = None
    if mask_path is not None:
        mask = read_label_mask(mask_path, max_label=2, spacing_mm=spacing_mm)
        check_same_grid(volume, mask)
    depth = volume.shape[0]
    _, row_mm, col_mm = volume.spacing_mm
    loaded: list[LoadedSlice] = []
    for wanted in slice_indices:
        index = depth // 2 if wanted is None else wanted
        if not 0 <= index < depth:
            raise InvalidOptionError(f"--slice {index} is outside 0..{depth - 1}", path)
        hu = np.asarray(volume.array[index], dtype=np.float32)
        reference = None if mask is None else np.asarray(mask.array[index] >= 1, dtype=bool)
        loaded.append((hu, (row_mm, col_mm), index, f"{path} slice {index}", reference))
    return loaded


def load_reference_liver(
    path: str | Path,
    slice_index: int | None,
    *,
    volume: Volume | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> npt.NDArray[np.bool_]:
    """The liver (label >= 1) of one slice of a LiTS segmentation, for scoring the ROI.

    Args:
        path: the segmentation.
        slice_index: the slice (None: the input was an image, which has no segmentation).
        volume: the volume the slice was taken from; the segmentation must be on its grid.
        spacing_mm: voxel size ``(D, H, W)`` in mm for a file whose own is invalid.

    Raises:
        InvalidVolumeError: the segmentation is not on ``volume``'s grid.
        UnsupportedFormatError: ``slice_index`` is None.
        InvalidOptionError: the slice is outside the segmentation.
    """
    if slice_index is None:
        raise UnsupportedFormatError("a reference mask needs a volume input, not an image", path)
    mask = read_label_mask(path, max_label=2, spacing_mm=spacing_mm)
    if volume is not None:
        check_same_grid(volume, mask)
    if not 0 <= slice_index < mask.shape[0]:
        raise InvalidOptionError(f"slice {slice_index} is outside the mask", path)
    return np.asarray(mask.array[slice_index] >= 1, dtype=bool)


def _load(
    path: str | Path,
    slice_index: int | None,
    window: HUWindow,
    spacing_mm: tuple[float, float, float] | None,
) -> tuple[npt.NDArray[np.float32], tuple[float, float], int | None, str, Volume | None]:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as handle:
                pixels = np.asarray(handle.convert("L"))
        except OSError as error:
            raise CorruptFileError(f"cannot read image ({error})", path) from None
        hu = from_uint8(pixels, window)
        return hu, (1.0, 1.0), None, f"{path} (8-bit, {window.name})", None
    volume = read_volume(path, spacing_mm=spacing_mm)
    depth = volume.shape[0]
    index = depth // 2 if slice_index is None else slice_index
    if not 0 <= index < depth:
        raise InvalidOptionError(f"--slice {index} is outside 0..{depth - 1}", path)
    _, row_mm, col_mm = volume.spacing_mm
    hu = np.asarray(volume.array[index], dtype=np.float32)
    return hu, (row_mm, col_mm), index, f"{path} slice {index}", volume


def save_chain(result: ChainResult, out_dir: str | Path) -> Path:
    """Write each step as PNG, all steps as ``steps.npz`` (HU), ``steps.json`` and ``panel.png``.

    Returns:
        The path of the panel figure.
    """
    out_dir = Path(out_dir)
    _save_steps(result, out_dir)
    return save_panel([result], out_dir / "panel.png")


def save_chains(results: list[ChainResult], out_dir: str | Path) -> Path:
    """Several slices: each slice's steps in ``slice-KKKK/`` (as :func:`save_chain` writes
    them, without a panel), one ``panel.png`` with a row per slice, and ``panel.json``.

    Returns:
        The path of the panel figure.
    """
    out_dir = Path(out_dir)
    for result in results:
        _save_steps(result, out_dir / f"slice-{result.slice_index:04d}")
    record = {
        "steps": list(results[0].steps),
        "slices": [
            {
                "slice": r.slice_index,
                "folder": f"slice-{r.slice_index:04d}",
                "roi_empty": r.roi_empty,
                "roi_dice_vs_reference": r.roi_dice,
                "lesion_area_mm2": float(r.steps["segmented"].sum())
                * r.pixel_mm[0]
                * r.pixel_mm[1],
            }
            for r in results
        ],
    }
    write_json(out_dir / "panel.json", record, indent=2)
    return save_panel(results, out_dir / "panel.png")


def _save_steps(result: ChainResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for number, (name, image) in enumerate(result.steps.items(), start=1):
        pixels = to_uint8(image) if name in _MASKS else to_uint8(apply_window(image, result.window))
        with atomic_path(out_dir / f"{number:02d}_{name}.png") as temporary:
            Image.fromarray(pixels).save(temporary)
    with atomic_path(out_dir / "steps.npz") as temporary:
        np.savez_compressed(temporary, **result.steps)  # type: ignore[arg-type]  # numpy stub
    record = {
        "source": result.source,
        "slice": result.slice_index,
        "window": {
            "name": result.window.name,
            "low_hu": result.window.low_hu,
            "high_hu": result.window.high_hu,
        },
        "pixel_mm": list(result.pixel_mm),
        "options": result.options,
        "roi_area_mm2": _area_mm2(result, "roi"),
        "roi_empty": result.roi_empty,
        "roi_dice_vs_reference": result.roi_dice,
        "lesion_area_mm2": _area_mm2(result, "segmented"),
        "steps": [f"{i:02d}_{n}.png" for i, n in enumerate(result.steps, start=1)],
    }
    write_json(out_dir / "steps.json", record, indent=2)


def _area_mm2(result: ChainResult, step: str) -> float:
    return float(result.steps[step].sum()) * result.pixel_mm[0] * result.pixel_mm[1]


#: Steps that are 0/1 masks rather than HU images.
_MASKS = ("roi", "segmented")


def save_panel(results: list[ChainResult], path: Path) -> Path:
    """One figure: a row per slice, a column per step, each column titled.

    The ROI column outlines the ROI; the segmentation column shows the masked slice with the
    lesion candidates filled in red. A row whose ROI is empty says so.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = list(results[0].steps)
    rows = len(results)
    figure, axes = plt.subplots(
        rows, len(names), figsize=(2.6 * len(names), 2.6 * rows + 0.8), squeeze=False
    )
    red = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.75)])
    for row, result in zip(axes, results, strict=True):
        for axis, name in zip(row, names, strict=True):
            image = result.steps[name]
            if name == "roi":
                axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
                if image.any():
                    axis.contour(image, levels=[0.5], colors="tab:orange", linewidths=0.8)
            elif name == "segmented":
                masked = apply_window(result.steps["masked"], result.window)
                axis.imshow(masked, cmap="gray", vmin=0.0, vmax=1.0)
                axis.imshow(image, cmap=red, vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                axis.imshow(apply_window(image, result.window), cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if result is results[0]:
                axis.set_title(STEP_TITLES[name], fontsize=10)
        label = "" if result.slice_index is None else f"slice {result.slice_index}"
        if result.roi_dice is not None:
            label += f"\nROI Dice {result.roi_dice:.3f}"
        if result.roi_empty:
            label += "\nliver ROI EMPTY"
        row[0].set_ylabel(label.strip(), fontsize=9, color="red" if result.roi_empty else "black")
    caption = f"{results[0].source.rsplit(' slice ', 1)[0]} · window {results[0].window.name}"
    if rows == 1 and results[0].roi_dice is not None:
        caption += f" · ROI Dice vs reference {results[0].roi_dice:.3f}"
    figure.suptitle(caption, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)
    return path


def choose_slices(
    path: str | Path,
    count: int,
    *,
    mask_path: str | Path | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    seed: int = 0,
) -> list[int]:
    """``count`` slices spread evenly over the slices where a volume's liver is.

    The liver is the segmentation's labels 1 and 2 when ``mask_path`` is given, else the EM
    liver ROI of every slice (:func:`oncoscope.ct.em_lesions.liver_roi_volume`). Slice ``i``
    of ``count`` is the liver slice at the ``(i + 0.5) / count`` quantile.

    Returns:
        Ascending distinct slice indices (fewer than ``count`` when the liver has fewer slices).

    Raises:
        InvalidOptionError: ``count`` below 1.
        UnsupportedFormatError: an image input (a single slice).
        InvalidVolumeError: no liver on any slice; a mask off the volume's grid.
    """
    if count < 1:
        raise InvalidOptionError(f"--slices must be at least 1, got {count}")
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise UnsupportedFormatError("--slices needs a volume, not a single image", path)
    volume = read_volume(path, spacing_mm=spacing_mm)
    if mask_path is not None:
        mask = read_label_mask(mask_path, max_label=2, spacing_mm=spacing_mm)
        check_same_grid(volume, mask)
        liver = np.asarray(mask.array >= 1)
    else:
        liver = liver_roi_volume(volume.array, volume.spacing_mm[1:], seed=seed)
    present = np.flatnonzero(liver.any(axis=(1, 2)))
    if present.size == 0:
        where = mask_path if mask_path is not None else path
        raise InvalidVolumeError("no slice holds liver; cannot spread --slices over it", where)
    picks = [present[int((i + 0.5) * present.size / count)] for i in range(count)]
    return sorted({int(p) for p in picks})
