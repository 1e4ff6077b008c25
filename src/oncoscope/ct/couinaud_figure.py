"""The Couinaud figure: the liver coloured by segment, lesions outlined and labelled, a legend.

Axial panels (radiological view: anterior up, the patient's right on the left) through the
largest lesions, with the hepatic-vein planes drawn from the IVC axis, and one coronal panel
(superior up, the patient's right on the left) with the portal-bifurcation plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from oncoscope.ct.couinaud import SEGMENT_CODES, CouinaudResult
from oncoscope.ct.window import PRESETS, apply_window
from oncoscope.io.atomic import atomic_path

#: Colour of each segment (matplotlib names).
SEGMENT_COLOURS = {
    "I": "tab:brown",
    "II": "tab:blue",
    "III": "tab:cyan",
    "IVa": "tab:olive",
    "IVb": "gold",
    "V": "tab:orange",
    "VI": "tab:red",
    "VII": "tab:purple",
    "VIII": "tab:green",
}
_VEINS = ("right_hepatic_vein_end", "middle_hepatic_vein_end", "left_hepatic_vein_end")


def save_couinaud_figure(result: CouinaudResult, path: str | Path, *, panels: int = 3) -> Path:
    """Write the figure as PNG.

    Args:
        result: the segments, landmarks and lesions.
        path: the PNG to write.
        panels: axial panels (through the largest lesions, then evenly through the liver).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, to_rgba
    from matplotlib.patches import Patch

    path = Path(path)
    volume = result.volume
    segments = result.segments
    tumour = result.tumour
    slice_mm, row_mm, col_mm = volume.spacing_mm
    inverse = np.linalg.inv(volume.affine)
    colours = np.zeros((max(SEGMENT_CODES.values()) + 1, 4))
    for name, code in SEGMENT_CODES.items():
        colours[code] = to_rgba(SEGMENT_COLOURS[name], alpha=0.5)
    cmap = ListedColormap(colours)
    points = result.landmarks.points_mm

    def index_of(point: Any) -> npt.NDArray[np.float64]:
        return np.asarray(inverse @ np.array([*point, 1.0]))[:3]

    figure, axes = plt.subplots(1, panels + 1, figsize=(4.2 * (panels + 1) + 1.6, 4.8))
    for axis, k in zip(axes[:panels], _axial_slices(result, panels), strict=False):
        extent = (0.0, segments.shape[2] * col_mm, segments.shape[1] * row_mm, 0.0)
        axis.imshow(apply_window(volume.array[k], PRESETS["liver"]), cmap="gray", extent=extent)
        axis.imshow(segments[k], cmap=cmap, vmin=0, vmax=len(colours) - 1, extent=extent)
        # The hepatic-vein planes on this slice: rays from the IVC axis through each vein.
        z = float((volume.affine @ np.array([k, 0.0, 0.0, 1.0]))[2])
        axis_hw = index_of((*points["ivc_dome"][:2], z))[1:]
        for vein in _VEINS:
            end_hw = index_of((*points[vein][:2], z))[1:]
            axis.plot(
                [axis_hw[1] * col_mm, end_hw[1] * col_mm],
                [axis_hw[0] * row_mm, end_hw[0] * row_mm],
                color="white",
                linestyle="--",
                linewidth=0.8,
            )
        _outline(axis, tumour[k], (row_mm, col_mm))
        _label_lesions(axis, result, cut=(0, k), up=1)
        axis.set_title(f"axial slice {k} (z = {z:.0f} mm)", fontsize=9)
        axis.set_axis_off()

    coronal = axes[panels]
    row = _coronal_row(result)
    extent = (0.0, segments.shape[2] * col_mm, 0.0, segments.shape[0] * slice_mm)
    shown = apply_window(volume.array[:, row, :], PRESETS["liver"])
    coronal.imshow(shown, cmap="gray", origin="lower", extent=extent, aspect="equal")
    coronal.imshow(
        segments[:, row, :],
        cmap=cmap,
        vmin=0,
        vmax=len(colours) - 1,
        origin="lower",
        extent=extent,
        aspect="equal",
    )
    _outline(coronal, tumour[:, row, :], (slice_mm, col_mm))
    portal_d = index_of(points["portal_bifurcation"])[0]
    coronal.axhline((portal_d + 0.5) * slice_mm, color="white", linestyle="--", linewidth=0.8)
    _label_lesions(coronal, result, cut=(1, row), up=0)
    coronal.set_title(f"coronal row {row}; dashes: portal plane", fontsize=9)
    coronal.set_axis_off()

    handles = [Patch(color=SEGMENT_COLOURS[name], label=name) for name in SEGMENT_COLOURS]
    figure.legend(handles=handles, loc="center right", title="segment", fontsize=8)
    method = result.landmarks.method
    title = f"Couinaud segments ({method}) of {volume.source.name}"
    if method == "approximate":
        title += ": APPROXIMATE, no landmarks or vessels"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0 - 1.2 / figure.get_figwidth(), 1.0))
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return path


def _axial_slices(result: CouinaudResult, count: int) -> list[int]:
    """Slices through the largest lesions' centroids, then evenly through the liver."""
    inverse = np.linalg.inv(result.volume.affine)
    chosen: list[int] = []
    for lesion in sorted(result.lesions, key=lambda les: -les.volume_ml):
        k = round(float((inverse @ np.array([*lesion.centroid_mm, 1.0]))[0]))
        if k not in chosen:
            chosen.append(k)
    occupied = np.flatnonzero(result.segments.any(axis=(1, 2)))
    for fraction in (0.5, 0.25, 0.75, 0.1, 0.9):
        k = int(occupied[int(fraction * (len(occupied) - 1))])
        if k not in chosen:
            chosen.append(k)
    return sorted(chosen[:count])


def _coronal_row(result: CouinaudResult) -> int:
    """The row through the largest lesion's centroid, else the liver's middle row."""
    if result.lesions:
        largest = max(result.lesions, key=lambda les: les.volume_ml)
        inverse = np.linalg.inv(result.volume.affine)
        return round(float((inverse @ np.array([*largest.centroid_mm, 1.0]))[1]))
    rows = np.flatnonzero(result.segments.any(axis=(0, 2)))
    return int(rows[len(rows) // 2])


def _outline(axis: Any, mask: npt.NDArray[np.bool_], pixel_mm: tuple[float, float]) -> None:
    """Outline a 2-D mask on an axis whose coordinates are mm from the array's corner."""
    if not mask.any():
        return
    rows, cols = mask.shape
    y = (np.arange(rows) + 0.5) * pixel_mm[0]
    x = (np.arange(cols) + 0.5) * pixel_mm[1]
    axis.contour(x, y, mask.astype(float), levels=[0.5], colors="black", linewidths=1.2)


def _label_lesions(axis: Any, result: CouinaudResult, *, cut: tuple[int, int], up: int) -> None:
    """Label the lesions cut by a panel: voxel axis ``cut[0]`` (0 D, 1 H) at index ``cut[1]``.

    A lesion is labelled when its centroid lies within half its largest diameter of the cut,
    at (its W position, its position along voxel axis ``up``) in mm from the array's corner.
    """
    inverse = np.linalg.inv(result.volume.affine)
    spacing_mm = result.volume.spacing_mm
    along, at = cut
    for lesion in result.lesions:
        centre = (inverse @ np.array([*lesion.centroid_mm, 1.0]))[:3]
        if abs(centre[along] - at) * spacing_mm[along] <= lesion.max_diameter_mm / 2:
            x_mm, y_mm = centre[2] * spacing_mm[2], centre[up] * spacing_mm[up]
            _label(axis, lesion.lesion_id, lesion.segment, x_mm, y_mm)


def _label(axis: Any, lesion_id: int, segment: str, x_mm: float, y_mm: float) -> None:
    axis.annotate(
        f"L{lesion_id}: {segment}",
        (x_mm, y_mm),
        xytext=(6, 6),
        textcoords="offset points",
        color="white",
        fontsize=8,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "black", "alpha": 0.6, "linewidth": 0},
    )
