"""Figures of the scale search: the vote histogram (seed 003 Fig. 5) and distance curves (Fig. 4).

Drawn with matplotlib's object API (``Figure``, no pyplot state) and written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oncoscope.io.atomic import atomic_path

if TYPE_CHECKING:
    from oncoscope.inference.scale_search import ScalePoint, ScaleResult

#: Points drawn in the curves figure (one per class the model gives them first, as in Fig. 4).
CURVE_POINTS = 5


def plot_histogram(result: ScaleResult, path: str | Path) -> Path:
    """Bar chart of votes per scale, the winner highlighted (and the training scale, if known)."""
    from matplotlib.figure import Figure

    labels = [f"x{s:g}" for s in result.scales]
    counts = [result.histogram.get(s, 0) for s in result.scales]
    colours = ["tab:orange" if s == result.winner else "tab:blue" for s in result.scales]
    figure = Figure(figsize=(6.4, 3.6))
    axis = figure.add_subplot()
    axis.bar(labels, counts, color=colours)
    axis.set_xlabel("scale (magnification)")
    axis.set_ylabel("points voting for it")
    title = f"{len(result.points)} points: winner x{result.winner:g}"
    if result.trained_magnification is not None:
        title += f" (checkpoint trained at x{result.trained_magnification:g})"
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_curves(result: ScaleResult, path: str | Path, count: int = CURVE_POINTS) -> Path:
    """Distance to each class's hyperplane against scale, for a few points (one panel each)."""
    from matplotlib.figure import Figure

    chosen = pick_points(result.points, result.classes, count)
    figure = Figure(figsize=(3.2 * max(len(chosen), 1), 3.4))
    axes = figure.subplots(1, max(len(chosen), 1), squeeze=False)[0]
    for axis, point in zip(axes, chosen, strict=False):
        for c, name in enumerate(result.classes):
            axis.plot(result.scales, point.distances[:, c], marker="o", markersize=3, label=name)
        axis.axvline(point.scale, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xticks(result.scales, [f"{s:g}" for s in result.scales], fontsize=7)
        axis.minorticks_off()
        axis.set_xlabel("scale s")
        axis.set_title(f"({point.x}, {point.y}) {point.curve}", fontsize=8)
    axes[0].set_ylabel("distance" + (" (with bias)" if result.bias else ""))
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def pick_points(points: list[ScalePoint], classes: list[str], count: int) -> list[ScalePoint]:
    """Up to ``count`` points: first one per class of the largest distance, then in order."""
    chosen: list[ScalePoint] = []
    seen: set[int] = set()
    for point in points:
        top = int(np.argmax(point.distances.max(axis=0)))
        if top not in seen and len(chosen) < count:
            seen.add(top)
            chosen.append(point)
    for point in points:
        if len(chosen) >= count:
            break
        if all(point is not other for other in chosen):
            chosen.append(point)
    return chosen


def _save(figure: object, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")  # type: ignore[attr-defined]
    return path
