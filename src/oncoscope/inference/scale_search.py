"""Automatic search for the magnification a trained patch classifier works best at (seed 003).

Algorithm 1 of the seed, on a whole-slide image and an oncoscope checkpoint:

1. ``P`` points drawn at random (seeded) in the slide's tissue (the one mask of ``wsi tile``
   and slide inference, :func:`oncoscope.pathology.tissue.slide_tissue`), placed so that even
   the largest crop lies inside the slide where the slide is big enough;
2. at every point and every scale ``s_i`` of the set (a magnification), an ``eps x eps`` crop
   centred on the point, read at ``s_i`` exactly as ``oncoscope slide --magnification s_i``
   reads its tiles (:meth:`oncoscope.io.slides.Slide.resolve`: downsample = the
   scan's objective power / ``s_i``, so a slide of 0.2527 um/px at x40 is read at x20 with
   downsample 2, not 0.5 / 0.2527), where ``eps`` is the model's input size (checkpoint
   ``image_size``), normalised exactly as in training
   (:meth:`oncoscope.models.spec.ModelSpec.prepare`: the checkpoint's mean and std);
3. the crop's features ``Phi``: the model's penultimate (pre-logits) features
   (``forward_head(forward_features(x), pre_logits=True)``, as timm models and oncoscope's own
   models provide); all crops of one scale go through the model together, in batches;
4. the distance matrix ``D = X . W / ||W||`` (``N x C``; each column divided by the norm of its
   own class weight vector), the point's scale ``argmax_i max_c D[i, c]``, and the slide's scale
   by majority vote (:mod:`oncoscope.inference.scale_curves`, which also names the tie rule).

**Bias.** By default the classifier's bias is left out, as in the seed's formula: the default
then reproduces Algorithm 1 exactly. ``bias=True`` adds it, ``(x . w + b) / ||w||``, the true
signed distance to each hyperplane. The bias is constant across scales, so it shifts each
class's curve by ``b_c / ||w_c||`` without changing its shape; it can only change which class's
curve is the highest, and so, sometimes, a point's vote.

**Scan overrides.** ``scan_mpp`` and ``scan_magnification`` replace the slide's own mpp and
objective power (``--mpp-of-scan``, ``--magnification-of-scan``), as in ``wsi tile`` and
``slide``: for slides without that metadata, or with wrong metadata.

**Upsampling.** A scale above the slide's scan magnification would be read by enlarging level
0. It is refused (:class:`oncoscope.errors.InvalidOptionError`) unless ``allow_upsampling``,
which warns and upsamples level 0 bilinearly.

With annotations (GeoJSON or label mask), each point takes the label of the annotation it lies
in, and the seed's Table 1 is added: per-class accuracy of the patch-wise classification
(argmax of the full classifier, bias included) at every scale of the set, beside the votes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.inference.scale_curves import (
    CURVE_KINDS,
    CurveKind,
    classify_curve,
    hyperplane_distances,
    majority_vote,
    point_scale_index,
    vote_histogram,
    widen_advice,
)
from oncoscope.io.atomic import output_files, write_json
from oncoscope.io.slides import Resolution, ResolutionRequest, Slide, open_slide
from oncoscope.models.spec import ModelSpec
from oncoscope.pathology.annotations import Labels, best_label, load_labels
from oncoscope.pathology.stain import StainNormalizer
from oncoscope.pathology.tiling import random_positions
from oncoscope.pathology.tissue import TissueMask, slide_tissue
from oncoscope.train.checkpoint import LoadedModel, load_model

#: The seed's scale set: x10 to x43, neighbours about 1.2 apart.
DEFAULT_SCALES: tuple[float, ...] = (10, 12, 14, 17, 20, 25, 30, 35, 43)


@dataclass(frozen=True)
class ScalePoint:
    """One point of the search.

    Attributes:
        x, y: level-0 pixel coordinates of the point (the centre of its crops).
        scale: the scale (magnification) of its largest distance (Algorithm 1, line 10).
        curve: the shape of its distance curves (:func:`classify_curve`).
        distances: ``(N scales, C classes)`` distance matrix ``D``.
        predicted: the class the model gives its crop at each scale.
        label: the annotation the point lies in (None without annotations or outside them).
    """

    x: int
    y: int
    scale: float
    curve: CurveKind
    distances: np.ndarray[Any, np.dtype[np.float64]]
    predicted: tuple[str, ...]
    label: str | None = None


@dataclass
class ScaleResult:
    """The outcome of :func:`search_scale`; :meth:`to_json` is the ``scale.json`` record.

    Attributes:
        winner: the slide's scale (majority vote).
        histogram: votes per scale of the set.
        points: every point with its distance matrix.
        scales: the scale set, increasing.
        classes: the model's classes (columns of each distance matrix).
        bias: whether the classifier's bias was added to the distances.
        widen: :func:`oncoscope.inference.scale_curves.widen_advice`.
        table: the seed's Table 1 (per-class accuracy at each scale) with annotations, else None.
        slide, checkpoint: the inputs.
        slide_magnification, slide_mpp: the slide's scan magnification and microns per pixel.
        trained_magnification: the magnification the checkpoint says its tiles were made at.
        crop_px: side of each crop (the model's input size).
        seed: seed of the point sampling.
        upsampled: scales read by enlarging level 0 (``allow_upsampling``).
        warnings: things the user should know (upsampling, few points).
    """

    winner: float
    histogram: dict[float, int]
    points: list[ScalePoint]
    scales: list[float]
    classes: list[str]
    bias: bool
    widen: dict[str, Any]
    table: dict[str, Any] | None
    slide: Path
    checkpoint: Path
    slide_magnification: float
    slide_mpp: float
    trained_magnification: float | None
    crop_px: int
    seed: int
    upsampled: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def curve_counts(self) -> dict[str, int]:
        """Points per curve kind."""
        return {kind: sum(p.curve == kind for p in self.points) for kind in CURVE_KINDS}

    def within(self, scale: float, steps: int = 1) -> float:
        """Share of points whose scale is within ``steps`` neighbours of ``scale`` in the set."""
        centre = self.scales.index(scale)
        near = set(self.scales[max(0, centre - steps) : centre + steps + 1])
        return sum(p.scale in near for p in self.points) / max(len(self.points), 1)

    def to_json(self) -> dict[str, Any]:
        """The ``scale.json`` record (scales as numbers, histogram keyed by scale text)."""
        points = []
        for p in self.points:
            entry: dict[str, Any] = {
                "x": p.x,
                "y": p.y,
                "scale": _number(p.scale),
                "curve": p.curve,
                "distances": [[round(float(v), 6) for v in row] for row in p.distances],
                "predicted": list(p.predicted),
            }
            if self.table is not None:
                entry["label"] = p.label
            points.append(entry)
        return {
            "slide": str(self.slide),
            "checkpoint": str(self.checkpoint),
            "scales": [_number(s) for s in self.scales],
            "classes": self.classes,
            "bias": self.bias,
            "winner": _number(self.winner),
            "histogram": {f"{s:g}": n for s, n in self.histogram.items()},
            "curves": self.curve_counts(),
            "widen": self.widen,
            "table": self.table,
            "points": points,
            "slide_magnification": self.slide_magnification,
            "slide_mpp": self.slide_mpp,
            "trained_magnification": self.trained_magnification,
            "crop_px": self.crop_px,
            "seed": self.seed,
            "upsampled_scales": [_number(s) for s in self.upsampled],
            "warnings": self.warnings,
        }


def search_scale(
    checkpoint: str | Path,
    slide_path: str | Path,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    points: int = 100,
    seed: int = 0,
    bias: bool = False,
    batch_size: int = 16,
    allow_upsampling: bool = False,
    annotations: str | Path | None = None,
    scan_mpp: float | None = None,
    scan_magnification: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    stain_normalize: bool = True,
    slide: Slide | None = None,
    tissue: TissueMask | None = None,
    model: LoadedModel | None = None,
) -> ScaleResult:
    """Run Algorithm 1 of seed 003 on one slide (see the module docstring).

    The steps: the scales' reads planned and checked (:func:`_plan_reads`), points drawn in
    the tissue (:func:`_sample_points`), the crops' features at every scale
    (:func:`_crop_features`), each point's distances, scale and curve (:func:`_score_points`),
    and the vote.

    Args:
        checkpoint: an oncoscope training checkpoint of an RGB patch classifier.
        slide_path: a slide OpenSlide reads, with mpp or magnification metadata (or given
            by ``scan_mpp`` / ``scan_magnification``).
        scales: magnifications to try (at least two, distinct; sorted here).
        points: number of random points in tissue (``P``).
        seed: seed of the points.
        bias: add the classifier's bias (true signed distance; default: the seed's formula).
        batch_size: crops per forward pass.
        allow_upsampling: accept scales above the scan's magnification (warns).
        annotations: GeoJSON or label mask of the slide; adds the per-class accuracy table.
        scan_mpp: microns per level-0 pixel of the scan, replacing the slide's own.
        scan_magnification: objective power of the scan, replacing the slide's own.
        progress: called with ``(scales done, scales)`` after each scale.
        stain_normalize: normalise every crop to the stain target the checkpoint records
            (``wsi tile --stain-normalize``), as ``oncoscope slide`` does; off: the slide's own.
        slide: ``slide_path`` already open (with the scan overrides), e.g. by ``oncoscope
            slide --auto-scale``, which classifies it next; used and left open. None: opened
            here with ``scan_mpp`` / ``scan_magnification``.
        tissue: the slide's tissue mask when already made
            (:func:`oncoscope.pathology.tissue.slide_tissue`); None: made here.
        model: ``checkpoint``'s network (with its ``forward_features`` / ``forward_head``, in
            eval mode, on any device) and spec, already loaded
            (:func:`oncoscope.train.checkpoint.load_model`), e.g. by ``oncoscope slide
            --auto-scale``; None: loaded from ``checkpoint`` here. A command reads its
            checkpoint once.

    Returns:
        The :class:`ScaleResult`.

    Raises:
        InvalidOptionError: bad scales, points or batch size; a scale above the scan's
            magnification without ``allow_upsampling``; crops larger than the slide.
        OncoscopeError: an unreadable checkpoint or slide, a slide with neither mpp nor
            magnification (in the file or given), a checkpoint whose input does not fit
            (not 3-channel, classifier not one linear layer, classes not matching it), a slide
            without tissue (:class:`oncoscope.errors.NoTissueError`), annotations that label no
            point with one of the model's classes.
    """
    ordered = _check_options(scales, points, batch_size)
    checkpoint, slide_path = Path(checkpoint), Path(slide_path)
    network, spec = model if model is not None else load_model(checkpoint)
    head = _linear_head(network, spec, checkpoint)
    classes = list(spec.classes)
    opened = (
        nullcontext(slide)
        if slide is not None
        else open_slide(slide_path, mpp=scan_mpp, magnification=scan_magnification)
    )
    with opened as slide:
        reads = _plan_reads(slide, ordered, spec.image_size, allow_upsampling)
        mask = tissue if tissue is not None else slide_tissue(slide)
        centres = _sample_points(slide, mask, points, seed, reads.extent_px)
        labels = load_labels(annotations, slide.dimensions) if annotations else None
        stain = spec.stain if stain_normalize else None
        features = _crop_features(
            network, spec, slide, centres, reads.targets, stain, batch_size, progress
        )
        slide_magnification, slide_mpp = slide.magnification, slide.mpp
    point_labels = [_label_at(labels, xy) for xy in centres] if labels else None
    result_points = _score_points(features, centres, head, bias, ordered, classes, point_labels)
    votes = [p.scale for p in result_points]
    winner = majority_vote(votes, ordered)
    histogram = vote_histogram(votes, ordered)
    table = None
    if annotations is not None:
        table = accuracy_table(result_points, ordered, classes, histogram, winner, annotations)
    return ScaleResult(
        winner=winner,
        histogram=histogram,
        points=result_points,
        scales=ordered,
        classes=classes,
        bias=bias,
        widen=widen_advice([p.curve for p in result_points], ordered),
        table=table,
        slide=slide_path,
        checkpoint=checkpoint,
        slide_magnification=slide_magnification,
        slide_mpp=slide_mpp,
        trained_magnification=spec.input_magnification,
        crop_px=spec.image_size,
        seed=seed,
        upsampled=reads.upsampled,
        warnings=reads.notes,
    )


@dataclass(frozen=True)
class _Reads:
    """How the crops of each scale are read (:func:`_plan_reads`).

    Attributes:
        targets: one resolution per scale, in the scales' order.
        upsampled: the scales read by enlarging level 0.
        notes: warnings for the result.
        extent_px: level-0 side of the largest crop (the lowest scale's).
    """

    targets: list[Resolution]
    upsampled: list[float]
    notes: list[str]
    extent_px: float


def _plan_reads(slide: Slide, scales: list[float], crop_px: int, allow_upsampling: bool) -> _Reads:
    """The reads of ``crop_px`` crops at each of the increasing ``scales``, checked.

    Raises:
        InvalidOptionError: a scale above the scan's magnification without
            ``allow_upsampling`` (with it: warned); the lowest scale's crop larger than the
            slide.
    """
    targets, upsampled = read_resolutions(slide, scales)
    above = f"x{', x'.join(f'{s:g}' for s in upsampled)}"
    if upsampled and not allow_upsampling:
        raise InvalidOptionError(
            f"{above} is above the slide's scan magnification x{slide.magnification:g} and "
            "would need upsampling; drop it from --scales or pass --allow-upsampling",
            slide.path,
        )
    notes = []
    if upsampled:
        message = f"{above} above the scan's x{slide.magnification:g}: crops upsampled from level 0"
        warnings.warn(message, stacklevel=3)
        notes.append(message)
    largest = crop_px * targets[0].downsample
    if largest > max(slide.dimensions):
        raise InvalidOptionError(
            f"a {crop_px}-px crop at x{scales[0]:g} spans {largest:.0f} level-0 px, more "
            f"than the slide ({slide.dimensions[0]} x {slide.dimensions[1]}); drop the "
            "lowest scales",
            slide.path,
        )
    return _Reads(targets, upsampled, notes, largest)


def _crop_features(
    network: nn.Module,
    spec: ModelSpec,
    slide: Slide,
    centres: list[tuple[int, int]],
    targets: list[Resolution],
    stain: Mapping[str, Any] | None,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``(P points, N scales, M)`` pre-logits features of the crops centred on the points, read
    at each target and normalised to ``stain`` (a recorded stain target) when given."""
    normalise = StainNormalizer.from_state(dict(stain)) if stain is not None else None
    by_scale = []
    for index, target in enumerate(targets):
        crops = np.stack([_read_centred(slide, xy, spec.image_size, target) for xy in centres])
        if normalise is not None:
            crops = np.stack([normalise(crop) for crop in crops])
        by_scale.append(_features(network, crops, spec.prepare, batch_size))
        if progress is not None:
            progress(index + 1, len(targets))
    return np.stack(by_scale, axis=1)


def _score_points(
    features: np.ndarray[Any, np.dtype[np.float64]],
    centres: list[tuple[int, int]],
    head: tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]],
    bias: bool,
    scales: list[float],
    classes: list[str],
    labels: list[str | None] | None,
) -> list[ScalePoint]:
    """Each point's distance matrix ``D = X . W / ||W||`` (with the bias when ``bias``), its
    scale (Algorithm 1, line 10), curve, and the class the full classifier gives each crop."""
    weight, head_bias = head
    w = weight.T  # (M, C), the seed's W
    scored = []
    for k, (x, y) in enumerate(centres):
        distances = hyperplane_distances(features[k], w, head_bias if bias else None)
        logits = features[k] @ w + head_bias
        scored.append(
            ScalePoint(
                x=int(x),
                y=int(y),
                scale=scales[point_scale_index(distances)],
                curve=classify_curve(distances),
                distances=distances,
                predicted=tuple(classes[i] for i in logits.argmax(axis=1)),
                label=labels[k] if labels else None,
            )
        )
    return scored


def accuracy_table(
    points: Sequence[ScalePoint],
    scales: Sequence[float],
    classes: Sequence[str],
    histogram: dict[float, int],
    winner: float,
    source: str | Path = "annotations",
) -> dict[str, Any]:
    """The seed's Table 1: per-class accuracy of the points' crops at each scale.

    A class's accuracy at a scale is the share of the points labelled with it whose crop at
    that scale the model assigns to it (its recall); ``mean`` averages the classes present.

    Returns:
        ``{"classes", "points", "unmatched_points", "rows": [{"scale", "votes", "accuracy":
        {class: share}, "mean"}], "best_scale", "winner"}``; ``best_scale`` has the highest
        mean (the lower magnification on a tie).

    Raises:
        OncoscopeError: no point carries a label among ``classes``.
    """
    labelled = [p for p in points if p.label in classes]
    if not labelled:
        found = sorted({p.label for p in points if p.label is not None})
        raise OncoscopeError(
            f"no point lies in an annotation of the model's classes {list(classes)} "
            f"(labels at the points: {found or 'none'})",
            source,
        )
    present = [c for c in classes if any(p.label == c for p in labelled)]
    rows = []
    for i, scale in enumerate(scales):
        accuracy = {
            c: float(np.mean([p.predicted[i] == c for p in labelled if p.label == c]))
            for c in present
        }
        rows.append(
            {
                "scale": _number(scale),
                "votes": histogram.get(scale, 0),
                "accuracy": accuracy,
                "mean": float(np.mean(list(accuracy.values()))),
            }
        )
    best_index = max(range(len(rows)), key=lambda i: (rows[i]["mean"], -scales[i]))
    return {
        "classes": present,
        "points": {c: sum(p.label == c for p in labelled) for c in present},
        "unmatched_points": len(points) - len(labelled),
        "rows": rows,
        "best_scale": _number(scales[best_index]),
        "winner": _number(winner),
    }


def write_scale_outputs(result: ScaleResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``scale.json``, ``scale_histogram.png`` and ``scale_curves.png`` (atomically).

    Returns:
        ``{"json": ..., "histogram": ..., "curves": ...}`` paths.
    """
    from oncoscope.inference.scale_figures import plot_curves, plot_histogram

    paths = output_files(
        out_dir, json="scale.json", histogram="scale_histogram.png", curves="scale_curves.png"
    )
    write_json(paths["json"], result.to_json(), indent=1)
    plot_histogram(result, paths["histogram"])
    plot_curves(result, paths["curves"])
    return paths


def parse_scales(text: str) -> list[float]:
    """Scales from ``"10,12,14"`` (magnifications, comma-separated; an ``x`` prefix is allowed).

    Raises:
        InvalidOptionError: a value that is not a number.

    Example:
        >>> parse_scales("10, x12.5,20")
        [10.0, 12.5, 20.0]
    """
    values = []
    for part in text.split(","):
        item = part.strip().lower().removeprefix("x")
        try:
            values.append(float(item))
        except ValueError:
            raise InvalidOptionError(
                f"--scales: '{part.strip()}' is not a magnification (give e.g. 10,12,14,17,20)"
            ) from None
    return values


def _check_options(scales: Sequence[float], points: int, batch_size: int) -> list[float]:
    ordered = sorted(float(s) for s in scales)
    if len(ordered) < 2:
        raise InvalidOptionError(f"--scales needs at least two magnifications, got {ordered}")
    if any(not math.isfinite(s) or s <= 0 for s in ordered):
        raise InvalidOptionError(f"--scales must be positive magnifications, got {ordered}")
    if len(set(ordered)) != len(ordered):
        raise InvalidOptionError(f"--scales repeats a magnification: {ordered}")
    if points < 1:
        raise InvalidOptionError(f"--points must be at least 1, got {points}")
    if batch_size < 1:
        raise InvalidOptionError(f"--batch-size must be at least 1, got {batch_size}")
    return ordered


def _linear_head(
    model: nn.Module, spec: ModelSpec, path: Path
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """``(C, M)`` weight and ``(C,)`` bias of the model's last linear layer, checked."""
    if spec.in_chans != 3:
        raise OncoscopeError(
            f"the model takes {spec.in_chans}-channel images (a CT model?); slides are "
            "RGB: use a checkpoint trained on slide tiles",
            path,
        )
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not isinstance(head, nn.Linear) or not hasattr(model, "forward_head"):
        raise OncoscopeError(
            "the model's classifier is not one linear layer after pre-logits features; the "
            "scale search needs its separating hyperplanes",
            path,
        )
    classes = list(spec.classes)
    if head.out_features != len(classes) or len(classes) < 2:
        raise OncoscopeError(
            f"the classifier has {head.out_features} outputs but the checkpoint names "
            f"{len(classes)} classes {classes}",
            path,
        )
    weight = head.weight.detach().double().numpy()
    bias = (
        head.bias.detach().double().numpy()
        if head.bias is not None
        else np.zeros(head.out_features, dtype=np.float64)
    )
    return weight, bias


def read_resolutions(slide: Slide, scales: Sequence[float]) -> tuple[list[Resolution], list[float]]:
    """How each scale is read, exactly as ``oncoscope slide --magnification`` reads it.

    Each scale goes through :meth:`oncoscope.io.slides.Slide.resolve` as a magnification
    (downsample = the scan's objective power / scale, snapped to a pyramid level within 2 %),
    so the scale search and the classification at its winner read the same pixels even where
    the slide's mpp and objective power disagree.

    Args:
        slide: the open slide (with any scan overrides applied).
        scales: magnifications.

    Returns:
        ``(resolutions, upsampled)``: one :class:`~oncoscope.io.slides.Resolution` per scale, in
        order, and the scales finer than the scan (read by enlarging level 0).
    """
    resolved = [
        slide.resolve(ResolutionRequest(magnification=s), allow_upsampling=True) for s in scales
    ]
    upsampled = [s for s, target in zip(scales, resolved, strict=True) if target.upsampled]
    return resolved, upsampled


def _sample_points(
    slide: Slide, tissue: TissueMask, count: int, seed: int, extent_px: float
) -> list[tuple[int, int]]:
    """``count`` level-0 points drawn uniformly in the tissue mask, boxes of ``extent_px`` kept
    inside the slide."""
    extent = min(extent_px, *slide.dimensions)
    corners = random_positions(
        tissue.mask,
        tissue.downsample,
        slide.dimensions,
        (extent, extent),
        count,
        np.random.default_rng(seed),
    )
    return [(round(x + extent / 2), round(y + extent / 2)) for x, y in corners.tolist()]


def _read_centred(
    slide: Slide, centre_xy: tuple[int, int], crop_px: int, target: Resolution
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """``(crop_px, crop_px, 3) uint8`` crop centred on a level-0 point, at a resolution."""
    half = crop_px * target.downsample / 2
    return slide.read_at((centre_xy[0] - half, centre_xy[1] - half), (crop_px, crop_px), target)


def _features(
    model: nn.Module,
    crops: np.ndarray[Any, np.dtype[np.uint8]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``(P, M)`` pre-logits features of ``(P, H, W, 3) uint8`` crops (run on the model's
    device)."""
    device = next(model.parameters()).device
    out = []
    forward_features: Any = getattr(model, "forward_features")  # noqa: B009 - checked earlier
    forward_head: Any = getattr(model, "forward_head")  # noqa: B009
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(crops[start : start + batch_size]).to(device)
            images = transform(batch.permute(0, 3, 1, 2)).contiguous(
                memory_format=torch.channels_last
            )
            pre_logits = forward_head(forward_features(images), pre_logits=True)
            out.append(pre_logits.double().flatten(1).cpu().numpy())
    return np.concatenate(out)


def _label_at(labels: Labels, centre_xy: tuple[int, int]) -> str | None:
    """The annotation label at a level-0 point (of the pixel it lies in)."""
    x, y = centre_xy
    label, _ = best_label(labels.coverage((x - 0.5, y - 0.5), (1.0, 1.0)))
    return label


def _number(value: float) -> float | int:
    """``20.0 -> 20`` for JSON; other values unchanged."""
    return int(value) if float(value).is_integer() else float(value)
