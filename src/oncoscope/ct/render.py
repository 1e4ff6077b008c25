"""A transverse HU slice as the 8-bit image a model sees: window(s), resize, quantise.

``ct prepare`` writes its training PNGs with :func:`render_slice`; a command that reads new CT
data feeds a trained model through :func:`slice_to_model_input`, which applies the window(s)
and slice size the model's checkpoint records, so the model gets the pixels training gave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from skimage.transform import resize

from oncoscope.ct.window import HUWindow, apply_window, to_uint8, window_stack
from oncoscope.errors import InvalidOptionError, OncoscopeError

if TYPE_CHECKING:
    from oncoscope.models.spec import ModelSpec


def render_slice(
    hu_slice: npt.ArrayLike, windows: tuple[HUWindow, ...], size_px: int | None = None
) -> npt.NDArray[np.uint8]:
    """Window one ``(H, W)`` HU slice to 8-bit grey (one window) or RGB (three windows).

    Args:
        hu_slice: ``(H, W)`` in HU.
        windows: one window (grey) or three (one per RGB channel).
        size_px: resize to ``size_px`` x ``size_px`` (bilinear, antialiased, on the windowed
            0..1 values); None keeps ``(H, W)``.

    Returns:
        ``(H, W)`` uint8 for one window, ``(H, W, 3)`` for three (``size_px`` square when
        given).

    Example:
        >>> from oncoscope.ct.window import PRESETS
        >>> render_slice(np.array([[-100.0, 50.0, 200.0]]), (PRESETS["liver"],)).tolist()
        [[0, 128, 255]]
    """
    if len(windows) == 1:
        unit = apply_window(hu_slice, windows[0])
    else:
        unit = window_stack(hu_slice, windows)
    if size_px is not None:
        size = (size_px, size_px)
        unit = resize(unit, size, order=1, anti_aliasing=True, preserve_range=True)
    return to_uint8(unit)


@dataclass(frozen=True)
class ModelSlice:
    """A CT slice rendered for a model.

    Attributes:
        pixels: ``(H, W)`` uint8 (one window) or ``(H, W, 3)`` uint8 (three), the image
            ``ct prepare`` would have written for this slice; the model's normalised input is
            ``spec.prepare(torch.from_numpy(pixels)...)`` in ``(N, C, H, W)`` layout.
        pixel_mm: ``(row_mm, col_mm)``, the size of one of those pixels in mm.
    """

    pixels: npt.NDArray[np.uint8]
    pixel_mm: tuple[float, float]


def slice_to_model_input(
    hu_slice_2d: npt.ArrayLike, spacing_mm: tuple[float, float], spec: ModelSpec
) -> ModelSlice:
    """Window and resize a raw HU slice exactly as ``ct prepare`` did for the model's
    training PNGs (:func:`render_slice` with the checkpoint's ``ct_windows`` and
    ``ct_size_px``).

    Args:
        hu_slice_2d: ``(H, W)`` transverse slice in HU, rows and columns as
            :func:`oncoscope.io.volumes.read_volume` gives them (canonical layout).
        spacing_mm: ``(row_mm, col_mm)`` pixel size of the slice in mm.
        spec: the model's spec (:func:`oncoscope.train.checkpoint.load_model`).

    Returns:
        The :class:`ModelSlice`: the 8-bit pixels and their size in mm after resizing.

    Raises:
        OncoscopeError: a spec without a CT window (not trained on ``ct prepare`` slices), or
            windows that do not give the model's input channels.
        InvalidOptionError: a slice that is not 2-D, or a spacing that is not two positive
            numbers.
    """
    hu: npt.NDArray[Any] = np.asarray(hu_slice_2d)
    if hu.ndim != 2:
        raise InvalidOptionError(f"a CT slice is (H, W) in HU, got shape {hu.shape}")
    row_mm, col_mm = (float(v) for v in spacing_mm)
    if not (row_mm > 0 and col_mm > 0):
        raise InvalidOptionError(f"pixel spacing must be positive mm, got {tuple(spacing_mm)}")
    if not spec.ct_windows:
        raise OncoscopeError(
            f"model {spec.model} records no CT window: it was not trained on ct prepare slices"
        )
    if len(spec.ct_windows) != spec.in_chans:
        raise OncoscopeError(
            f"the checkpoint records {len(spec.ct_windows)} CT window(s) but the model takes "
            f"{spec.in_chans}-channel input"
        )
    pixels = render_slice(hu, spec.ct_windows, spec.ct_size_px)
    if spec.ct_size_px is not None:
        row_mm *= hu.shape[0] / spec.ct_size_px
        col_mm *= hu.shape[1] / spec.ct_size_px
    return ModelSlice(pixels, (row_mm, col_mm))
