"""PNG figures of a probability map: a heatmap over the slide thumbnail and the class map.

The map is drawn cell by cell (nearest-neighbour sampling at each thumbnail pixel), never
smoothed, so what is shown is what was computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex, to_rgb
from matplotlib.patches import Patch

from oncoscope.io.atomic import atomic_path

#: Class names (lower case, any part) taken as the class a heatmap shows by default.
TUMOUR_WORDS = ("tumour", "tumor", "cancer", "carcinoma", "malignan", "tum")


def class_colors(class_names: Sequence[str]) -> dict[str, str]:
    """``{class: "#rrggbb"}`` from matplotlib's ``tab10`` (``tab20`` beyond ten classes).

    Example:
        >>> class_colors(["a", "b"])
        {'a': '#1f77b4', 'b': '#ff7f0e'}
    """
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    return {name: to_hex(cmap(i % cmap.N)) for i, name in enumerate(class_names)}


def heatmap_class(class_names: Sequence[str], chosen: str | None = None) -> str | None:
    """The class a heatmap shows: ``chosen``, else the first tumour-like name, else None (max).

    Example:
        >>> heatmap_class(["background", "stroma", "tumour"])
        'tumour'
    """
    if chosen is not None:
        return chosen
    for name in class_names:
        if any(word in name.lower() for word in TUMOUR_WORDS):
            return name
    return None


def sample_cells(
    grid_map: np.ndarray[Any, Any],
    thumbnail_shape: tuple[int, int],
    thumb_downsample: float,
    cell_size_level0: float,
) -> np.ndarray[Any, Any]:
    """The map value at each thumbnail pixel's centre (nearest cell)."""
    rows = ((np.arange(thumbnail_shape[0]) + 0.5) * thumb_downsample / cell_size_level0).astype(int)
    cols = ((np.arange(thumbnail_shape[1]) + 0.5) * thumb_downsample / cell_size_level0).astype(int)
    rows = np.minimum(rows, grid_map.shape[0] - 1)
    cols = np.minimum(cols, grid_map.shape[1] - 1)
    return grid_map[np.ix_(rows, cols)]


def write_heatmap(
    values: np.ndarray[Any, Any],
    thumbnail: np.ndarray[Any, Any],
    path: str | Path,
    title: str,
) -> Path:
    """Probabilities (0..1, NaN = not computed) at thumbnail size over the thumbnail."""
    figure, axes = _figure(thumbnail.shape)
    axes.imshow(thumbnail, interpolation="nearest")
    image = axes.imshow(
        np.ma.masked_invalid(values),
        cmap="inferno",
        vmin=0,
        vmax=1,
        alpha=0.55,
        interpolation="nearest",
    )
    figure.colorbar(image, ax=axes, fraction=0.035, pad=0.01, label=title)
    axes.set_title(title)
    return _save(figure, path)


def write_segmentation(
    classes_map: np.ndarray[Any, Any],
    class_names: Sequence[str],
    colors: dict[str, str],
    path: str | Path,
) -> Path:
    """The class map at thumbnail size, coloured by class (white: not classified), with legend."""
    palette = np.array([to_rgb(colors[n]) for n in class_names] + [(1.0, 1.0, 1.0)])
    rgb = palette[np.where(classes_map >= 0, classes_map, len(class_names))]
    figure, axes = _figure(classes_map.shape)
    axes.imshow(rgb, interpolation="nearest")
    axes.legend(
        handles=[Patch(color=colors[n], label=n) for n in class_names],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    axes.set_title("segmentation (argmax per cell)")
    return _save(figure, path)


def _figure(shape: tuple[int, ...]) -> tuple[Any, Any]:
    rows, cols = shape[:2]
    width = 10.0
    figure, axes = plt.subplots(figsize=(width, max(2.0, width * rows / cols * 0.8)), dpi=100)
    axes.set_axis_off()
    return figure, axes


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return path
