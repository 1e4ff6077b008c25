"""The seed-001 preprocessing chain on one slice, each step saved, plus one panel figure.

Steps, in HU throughout: input -> resized -> noised (optional) -> denoised (median filter) ->
liver ROI (EM, :mod:`oncoscope.ct.liver_roi`) -> masked (outside the ROI set to the window's low
end). Every step is kept so that a reader can see what each one did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from skimage.transform import resize

from oncoscope.ct.denoise import NoiseKind, add_noise, median_denoise
from oncoscope.ct.liver_roi import dice, liver_roi_em
from oncoscope.ct.window import HUWindow, apply_window, from_uint8, to_uint8
from oncoscope.dataset.images import IMAGE_SUFFIXES
from oncoscope.errors import CorruptFileError, InvalidOptionError, UnsupportedFormatError
from oncoscope.io.atomic import atomic_path
from oncoscope.io.volumes import Volume, check_same_grid, read_label_mask, read_volume

STEP_TITLES = {
    "input": "input",
    "resized": "resized",
    "noised": "noised",
    "denoised": "noise removed (median)",
    "roi": "liver ROI (EM)",
    "masked": "masked",
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
    """

    size_px: int | None = 256
    noise: NoiseKind = "none"
    noise_amount: float = 0.0
    median_size_px: int = 3
    seed: int = 0


@dataclass
class ChainResult:
    """Every step of the chain.

    Attributes:
        steps: step name -> ``(H, W)`` float32 HU image (``roi`` is 0/1).
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


def run_chain(
    hu: npt.NDArray[np.floating],
    pixel_mm: tuple[float, float],
    window: HUWindow,
    options: ChainOptions = ChainOptions(),
    *,
    reference_liver: npt.NDArray[np.bool_] | None = None,
    source: str = "",
) -> ChainResult:
    """Run the chain on one ``(H, W)`` HU slice.

    Args:
        hu: the slice in HU (radiological layout).
        pixel_mm: ``(row, col)`` pixel size in mm.
        window: display window; its low end fills the masked-out area and bounds the noise.
        options: see :class:`ChainOptions`.
        reference_liver: optional ``(H, W)`` true liver mask (input size) to score the ROI.
        source: a description of the input for the record.

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
    score = None
    if reference_liver is not None:
        reference = resize(
            np.asarray(reference_liver, dtype=np.float32), roi.shape, order=0, anti_aliasing=False
        )
        score = dice(roi, reference > 0.5)
    return ChainResult(steps, pixel_mm, window, source, score, asdict(options))


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
    out_dir.mkdir(parents=True, exist_ok=True)
    for number, (name, image) in enumerate(result.steps.items(), start=1):
        pixels = to_uint8(image) if name == "roi" else to_uint8(apply_window(image, result.window))
        with atomic_path(out_dir / f"{number:02d}_{name}.png") as temporary:
            Image.fromarray(pixels).save(temporary)
    with atomic_path(out_dir / "steps.npz") as temporary:
        np.savez_compressed(temporary, **result.steps)  # type: ignore[arg-type]  # numpy stub
    record = {
        "source": result.source,
        "window": {
            "name": result.window.name,
            "low_hu": result.window.low_hu,
            "high_hu": result.window.high_hu,
        },
        "pixel_mm": list(result.pixel_mm),
        "options": result.options,
        "roi_area_mm2": float(result.steps["roi"].sum()) * result.pixel_mm[0] * result.pixel_mm[1],
        "roi_dice_vs_reference": result.roi_dice,
        "steps": [f"{i:02d}_{n}.png" for i, n in enumerate(result.steps, start=1)],
    }
    with atomic_path(out_dir / "steps.json") as temporary:
        temporary.write_text(json.dumps(record, indent=2))
    return _save_panel(result, out_dir / "panel.png")


def _save_panel(result: ChainResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.steps)
    figure, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.4))
    for axis, name in zip(axes, names, strict=True):
        image = result.steps[name]
        shown = image if name == "roi" else apply_window(image, result.window)
        axis.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0)
        if name == "roi":
            axis.contour(result.steps["roi"], levels=[0.5], colors="tab:orange", linewidths=0.8)
        axis.set_title(STEP_TITLES[name], fontsize=10)
        axis.set_axis_off()
    caption = f"{result.source} · window {result.window.name}"
    if result.roi_dice is not None:
        caption += f" · ROI Dice vs reference {result.roi_dice:.3f}"
    figure.suptitle(caption, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)
    return path
