"""Whole-slide inference: a patch classifier over the tissue of slides, into probability maps.

For each slide (seed 003, Fig. 3): tiles at the model's input size and the chosen resolution
over the tissue, stepped by ``stride`` of a tile; each tile's class probabilities averaged into
every output cell it covers (:mod:`oncoscope.inference.accumulate`); the argmax per cell is the
coarse segmentation. Outputs in ``OUT/<slide stem>/``:

- ``probabilities.npy`` float32 ``(rows, cols, classes)`` over the cell grid, NaN = not computed;
- ``probabilities.tif`` pyramidal float32 TIFF whose resolution overlays it on level 0;
- ``heatmap.png`` (a class's probability, or the max, over the thumbnail), ``segmentation.png``;
- ``regions.geojson`` class regions in level-0 pixels (QuPath annotations);
- ``summary.json`` (see :func:`infer_slide`) and, last, ``status.json`` (resume: a slide is
  skipped only when its status records the same settings, see :func:`slide_settings`).

A slide that fails leaves none of its outputs and no temporary files behind. A full disk stops
a batch: the slide being written is reported with the file, the slides after it as not done.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from oncoscope.batch import writing
from oncoscope.errors import InvalidOptionError, NoTissueError
from oncoscope.hardware import resolve_precision
from oncoscope.inference import heatmaps, outputs
from oncoscope.inference.patches import TileGrid, tile_grid
from oncoscope.inference.predict_tiles import (
    prepare_model,
)
from oncoscope.inference.scale_search import (
    DEFAULT_SCALES,
    read_resolutions,
    search_scale,
    write_scale_outputs,
)
from oncoscope.inference.status import (
    STATUS_NAME,
    check_on_mismatch,
    file_sha256,
)
from oncoscope.inference.tile_runs import (
    SlideRun,
    TileRunOptions,
    check_run_options,
    run_device,
)
from oncoscope.io.slides import ResolutionRequest, Slide
from oncoscope.models.batchnorm_folding import fold_batch_norms
from oncoscope.models.spec import ModelSpec
from oncoscope.pathology.tissue import (
    GLASS_MARGIN_UM,
    MIN_TISSUE_UM2,
    TISSUE_MPP,
    TissueMask,
    slide_tissue,
)
from oncoscope.train.checkpoint import load_model

if TYPE_CHECKING:
    from oncoscope.inference.slide_batch import SlideRunReport

#: The tissue recipe (:mod:`oncoscope.pathology.tissue`) as a slide's settings record it.
TISSUE_RECIPE = {
    "mpp": TISSUE_MPP,
    "min_object_um2": MIN_TISSUE_UM2,
    "glass_margin_um": GLASS_MARGIN_UM,
}
#: Most pixels (longer side) of the slide in the PNG figures.
FIGURE_PX = 1024
#: Tiles accumulated into the map at once.
ACCUMULATE_CHUNK = 8192
#: Files a slide's run writes into its folder (with ``.work/`` while it runs).
OUTPUT_NAMES = (
    "probabilities.npy",
    "probabilities.tif",
    "heatmap.png",
    "segmentation.png",
    "regions.geojson",
    "summary.json",
    "scale.json",
    "scale_histogram.png",
    "scale_curves.png",
    STATUS_NAME,
)


@dataclass(frozen=True)
class SlideOptions(TileRunOptions):
    """How slides are classified (see ``oncoscope slide --help``): the options
    :class:`~oncoscope.inference.tile_runs.TileRunOptions` describes, and:

    Attributes:
        heatmap_class: class shown in ``heatmap.png`` (default: a tumour-like name, else max).
        auto_scale: find the resolution first with the scale search of seed 003
            (:func:`oncoscope.inference.scale_search.search_scale`) over ``scales`` (those above
            the scan's magnification dropped unless ``allow_upsampling``) at ``scale_points``
            random tissue points, with the same scan overrides and the same reads as the
            classification, and classify at its winner.
    """

    heatmap_class: str | None = None
    auto_scale: bool = False
    scales: tuple[float, ...] = DEFAULT_SCALES
    scale_points: int = 100


@dataclass(frozen=True)
class LoadedClassifier:
    """A checked checkpoint: the model (eval, channels-last, on ``device``, BatchNorms folded
    where exact), its spec, the SHA-256 of the checkpoint file (its identity in a slide's
    settings), and the network as trained (``unfolded``: the same weights, unfolded, with the
    ``forward_features`` / ``forward_head`` the scale search needs; None: ``model`` itself)."""

    model: nn.Module
    spec: ModelSpec
    path: Path
    device: torch.device
    sha256: str = ""
    unfolded: nn.Module | None = None

    @property
    def network(self) -> nn.Module:
        """The network as trained (unfolded), on ``device``, in eval mode."""
        return self.unfolded if self.unfolded is not None else self.model

    @property
    def class_names(self) -> list[str]:
        """Class names in the model's output order."""
        return list(self.spec.classes)


class SlideOutcome(SlideRun):
    """What became of one slide (see :class:`~oncoscope.inference.tile_runs.SlideRun`): its
    ``output`` is its folder."""

    @property
    def folder(self) -> Path:
        """The slide's output folder."""
        return self.output


def load_classifier(checkpoint: str | Path, device: torch.device | None = None) -> LoadedClassifier:
    """Load a checkpoint and check it can classify RGB slide tiles.

    The model is prepared for inference: eval mode, channels-last on ``device``, and each
    BatchNorm that follows a convolution folded into it where that gives the same logits
    (:func:`oncoscope.models.batchnorm_folding.fold_batch_norms`).

    Raises:
        OncoscopeError: see :func:`oncoscope.train.checkpoint.load_model`; a model that does
            not take 3-channel input, has fewer than two classes, or no square input size.
    """
    path = Path(checkpoint)
    model, spec = load_model(path)
    spec.check_for_slides(path)
    size = spec.image_size
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    example = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(0))
    example = example.to(device, memory_format=torch.channels_last)
    model = prepare_model(model, device)
    folded = prepare_model(fold_batch_norms(model, example), device)
    return LoadedClassifier(folded, spec, path, device, file_sha256(path), unfolded=model)


def resolution_request(options: TileRunOptions, spec: ModelSpec) -> ResolutionRequest:
    """The resolution to read at: the options', else the magnification the model saw in
    training (:attr:`oncoscope.models.spec.ModelSpec.input_magnification`), else
    :data:`oncoscope.io.slides.DEFAULT_MAGNIFICATION` (x20).

    Raises:
        InvalidOptionError: both ``mpp`` and ``magnification``, or one not above 0.
    """
    request = ResolutionRequest(mpp=options.mpp, magnification=options.magnification)
    return request.or_default(spec.input_magnification)


def infer_slide(
    classifier: LoadedClassifier,
    slide_path: str | Path,
    out: str | Path,
    options: SlideOptions,
    *,
    annotations: str | Path | None = None,
    on_tiles: Callable[[int, int], None] | None = None,
) -> SlideOutcome:
    """Classify one slide into ``out/<slide stem>/`` (see the module docstring): a run of
    :func:`infer_slides` over this one slide.

    ``summary.json`` holds ``slide``, ``checkpoint``, ``class_names``, ``colors``,
    ``classes: {name: {area_mm2, fraction}}`` (fraction of the whole slide's area), ``tiles``,
    ``seconds`` (the slide's own time, opening it to outputs written: in a run over many
    slides, time spent on the others' tiles meanwhile is not counted), ``tiles_per_second``,
    ``phase_seconds`` (``tissue_and_grid``: opening, tissue mask, tile grid, the first two in
    ``scale_search`` with ``auto_scale``; ``tiles``: reading
    and classifying the tiles; ``precision_agreement``: the fp32 re-run of a sample of tiles,
    under a reduced precision; ``map``: averaging into the cell map; ``outputs``: the files;
    ``scale_search`` first with ``auto_scale``),
    ``magnification``, ``mpp``, ``tile_size_px``, ``stride``, ``precision``, ``grid``
    (``origin_level0_xy``, ``cell_size_level0_px``, ``shape_rows_cols``),
    ``slide_dimensions_level0``, ``slide_mpp``, ``heatmap_class``; ``precision_agreement``
    under a reduced precision (see :func:`oncoscope.inference.predict_tiles.compare_precisions`;
    absent with ``agreement_tiles=0``); ``annotations`` scores when annotations are given.

    A slide whose ``status.json`` records the same :func:`slide_settings` is skipped (the
    outcome's summary is None); one done with other settings is redone with a note naming what
    differs (``on_mismatch="redo"``) or refused. Its ``status.json`` is removed before anything
    is rewritten, and if the slide fails, its outputs and temporary files are removed.

    Args:
        on_tiles: called with ``(tiles done, tiles in the slide)`` as batches finish.

    Raises:
        OncoscopeError: an unreadable slide, no tissue, a resolution the slide cannot give,
            bad annotations or options, a slide done before with other settings under
            ``on_mismatch="error"``.
        OSError: a file cannot be written (``filename`` names it), e.g. a full disk.
    """
    from oncoscope.inference.slide_batch import classify_slides
    from oncoscope.io.slide_files import SlideJob

    slide_path = Path(slide_path)
    check_run_options(options, lightning_runs_model=True)
    check_on_mismatch(options.on_mismatch)
    notes = Path(annotations) if annotations is not None else None
    job = SlideJob(slide_path.stem, slide_path, notes)
    report = classify_slides(classifier, [job], out, options, on_tiles=on_tiles, full_disk="raise")
    if report.errors:
        raise report.errors[0][1]
    return report.outcomes[0]


def slide_settings(
    classifier: LoadedClassifier,
    slide_path: str | Path,
    options: SlideOptions,
    annotations: str | Path | None = None,
) -> dict[str, Any]:
    """What determines a slide's outputs; recorded in its ``status.json``, compared on re-runs.

    ``checkpoint_sha256``; the slide file's ``slide_name`` and ``slide_bytes``; the resolution
    asked for (``mpp``, ``magnification``, or ``auto_scale`` with its ``scales``,
    ``scale_points`` and ``allow_upsampling``); the scan overrides ``scan_mpp`` and
    ``scan_magnification``; ``stride``; ``min_tissue``; ``tissue_recipe`` (the mask's mpp,
    smallest piece and glass margin: a slide done with another recipe is redone);
    ``precision`` (``auto`` resolved on this machine); ``heatmap_class``;
    ``annotations_sha256`` (None without annotations). Batch size,
    workers and devices change how fast a slide is done, not its outputs, and are left out.

    Raises:
        InvalidOptionError: an unknown precision.
    """
    slide_path = Path(slide_path)
    return {
        "checkpoint_sha256": classifier.sha256 or file_sha256(classifier.path),
        "slide_name": slide_path.name,
        "slide_bytes": _size_or_none(slide_path),
        "mpp": options.mpp,
        "magnification": options.magnification,
        "auto_scale": (
            {
                "scales": sorted(options.scales),
                "scale_points": options.scale_points,
                "allow_upsampling": options.allow_upsampling,
            }
            if options.auto_scale
            else None
        ),
        "scan_mpp": options.scan_mpp,
        "scan_magnification": options.scan_magnification,
        "stride": options.stride,
        "min_tissue": options.min_tissue,
        "tissue_recipe": TISSUE_RECIPE,
        "precision": resolve_precision(options.precision, run_device(classifier.device, options)),
        "heatmap_class": options.heatmap_class,
        "annotations_sha256": _sha256_or_none(annotations),
        "stain": stain_target(classifier.spec, options),
    }


def stain_target(spec: ModelSpec, options: TileRunOptions) -> dict[str, Any] | None:
    """The stain target the model's training tiles were normalised to (``wsi tile
    --stain-normalize``, recorded in the checkpoint), unless ``options.stain_normalize`` is off;
    None when there is none."""
    return dict(spec.stain) if options.stain_normalize and spec.stain is not None else None


def _stain_record(spec: ModelSpec, options: SlideOptions) -> str | None:
    """``summary.json``'s ``stain_normalized``: the method applied, ``"off
    (--no-stain-normalize)"`` when the checkpoint has a target that was not applied, None when
    it has none."""
    if spec.stain is None:
        return None
    return (
        str(spec.stain.get("method")) if options.stain_normalize else "off (--no-stain-normalize)"
    )


def discard_outputs(folder: str | Path) -> None:
    """Remove what a slide's run writes into ``folder`` (:data:`OUTPUT_NAMES`, ``.work/`` and
    ``.partial-*`` temporaries), and ``folder`` itself when that leaves it empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name in OUTPUT_NAMES or path.name == ".work" or path.name.startswith(".partial-"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    with suppress(OSError):  # not empty: it holds files of the user's
        folder.rmdir()


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _sha256_or_none(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        return file_sha256(path)
    except OSError:
        return None  # reading the annotations will say what is wrong


def _auto_scale(
    classifier: LoadedClassifier,
    slide: Slide,
    tissue: TissueMask,
    folder: Path,
    options: SlideOptions,
    notes: list[str],
) -> tuple[SlideOptions, dict[str, Any]]:
    """Options at the scale search's winning magnification, and what the search found.

    The search runs on the open slide (with the options' scan overrides) and its tissue mask,
    the ones the classification then uses, and reads each scale as :func:`plan_tiles` reads a
    magnification; scales finer than the scan are left out (with a note) unless
    ``allow_upsampling``. Its ``scale.json`` and figures go into ``folder``.

    Raises:
        InvalidOptionError: fewer than two scales the slide can deliver.
    """
    slide_path = slide.path
    scales = sorted(options.scales)
    if not options.allow_upsampling:
        scan = slide.magnification
        _, above = read_resolutions(slide, scales)
        if above:
            dropped = ", ".join(f"x{s:g}" for s in above)
            notes.append(f"scale search: {dropped} above the scan's x{scan:g}, not tried")
        scales = [s for s in scales if s not in above]
    if len(scales) < 2:
        raise InvalidOptionError(
            "--auto-scale needs at least two scales the slide can deliver "
            "(add lower --scales or --allow-upsampling)",
            slide_path,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upsampling is already a note
        result = search_scale(
            classifier.path,
            slide_path,
            scales=scales,
            points=options.scale_points,
            batch_size=options.batch_size,
            allow_upsampling=options.allow_upsampling,
            scan_mpp=options.scan_mpp,
            scan_magnification=options.scan_magnification,
            stain_normalize=options.stain_normalize,
            slide=slide,
            tissue=tissue,
            model=(classifier.network, classifier.spec),
        )
    with writing(folder / "scale.json"):
        write_scale_outputs(result, folder)
    notes.append(f"scale search chose x{result.winner:g}")
    found = {"winner": result.winner, "scales": scales, "scale_json": "scale.json"}
    return replace(options, magnification=float(result.winner), mpp=None), found


def plan_tiles(
    spec: ModelSpec,
    slide: Slide,
    options: TileRunOptions,
    notes: list[str] | None = None,
    *,
    tissue: TissueMask | None = None,
) -> TileGrid:
    """The tile grid over the tissue for a checkpoint's ``spec`` (its ``image_size``, and its
    resolution when the options give none); a note is added to ``notes`` when upsampling.

    The tissue mask is the slide's one mask (:func:`oncoscope.pathology.tissue.slide_tissue`,
    at :data:`~oncoscope.pathology.tissue.TISSUE_MPP`; the scale search's and ``wsi tile``'s
    too), made here unless ``tissue`` is given; tiles are kept by its coverage rule.

    Raises:
        InvalidOptionError: a resolution the slide cannot give, a bad stride or min tissue.
        NoTissueError: no tissue, or no tile with enough of it.
    """
    notes = notes if notes is not None else []
    request = resolution_request(options, spec)
    try:
        target = slide.resolve(request, allow_upsampling=options.allow_upsampling)
    except InvalidOptionError as error:
        hint = "; or pass --allow-upsampling" if "finer than" in error.message else ""
        raise InvalidOptionError(error.message + hint, slide.path) from None
    if target.upsampled:
        notes.append(
            f"upsampling: x{target.magnification:.3g} ({target.mpp:.4g} um/px) is finer than the "
            f"scan (x{slide.magnification:g}, {slide.mpp:.4g} um/px); tiles are interpolated"
        )
    size = spec.image_size
    if tissue is None:
        tissue = slide_tissue(slide)
    grid = tile_grid(slide.dimensions, target, size, options.stride, tissue, options.min_tissue)
    if len(grid) == 0:
        raise NoTissueError(
            f"no tile has at least {options.min_tissue:.0%} tissue; lower --min-tissue", slide.path
        )
    return grid


def _write_outputs(
    classifier: LoadedClassifier,
    slide: Slide,
    grid: TileGrid,
    folder: Path,
    options: SlideOptions,
    annotations: str | Path | None,
) -> dict[str, Any]:
    names = classifier.class_names
    probabilities = np.load(folder / "probabilities.npy")
    classes_map = outputs.class_map(probabilities)
    cell0 = grid.cell_size_level0
    with writing(folder / "probabilities.tif"):
        outputs.write_probability_tiff(
            probabilities, folder / "probabilities.tif", cell0, slide.mpp
        )
    colors = heatmaps.class_colors(names)
    shown = heatmaps.heatmap_class(names, options.heatmap_class)
    if shown is not None and shown not in names:
        raise InvalidOptionError(f"--heatmap-class '{shown}' is not one of {', '.join(names)}")
    values = (
        probabilities[..., names.index(shown)]
        if shown
        else np.nanmax(np.where(np.isnan(probabilities), -np.inf, probabilities), axis=-1)
    )
    values = np.where(np.isinf(values), np.nan, values)
    thumbnail, thumb_downsample = slide.overview(FIGURE_PX)
    thumb_shape = thumbnail.shape[:2]
    with writing(folder / "heatmap.png"):
        heatmaps.write_heatmap(
            heatmaps.sample_cells(values, thumb_shape, thumb_downsample, cell0),
            thumbnail,
            folder / "heatmap.png",
            f"P({shown})" if shown else "max class probability",
        )
    with writing(folder / "segmentation.png"):
        heatmaps.write_segmentation(
            heatmaps.sample_cells(classes_map, thumb_shape, thumb_downsample, cell0),
            names,
            colors,
            folder / "segmentation.png",
        )
    regions = outputs.class_regions(classes_map, names, cell0, slide.dimensions)
    with writing(folder / "regions.geojson"):
        outputs.write_regions(regions, folder / "regions.geojson")
    areas = outputs.cell_areas_um2(grid.shape_rows_cols, cell0, slide.dimensions, slide.mpp)
    slide_area_um2 = slide.dimensions[0] * slide.dimensions[1] * slide.mpp**2
    summary: dict[str, Any] = {
        "slide": str(Path(slide.path).absolute()),
        "slide_relative": os.path.relpath(Path(slide.path).absolute(), folder.absolute()),
        "checkpoint": str(classifier.path),
        "class_names": names,
        "colors": colors,
        "classes": outputs.class_areas(classes_map, names, areas, slide_area_um2),
        "magnification": grid.target.magnification,
        "mpp": grid.target.mpp,
        "tile_size_px": grid.tile_px,
        "stride": 1 / grid.cells_per_tile,
        "min_tissue": options.min_tissue,
        "heatmap_class": shown,
        "grid": {
            "origin_level0_xy": [0, 0],
            "cell_size_level0_px": cell0,
            "shape_rows_cols": list(grid.shape_rows_cols),
        },
        "slide_dimensions_level0": list(slide.dimensions),
        "slide_mpp": slide.mpp,
    }
    if annotations is not None:
        truth, truth_names = outputs.truth_map(
            annotations, slide.dimensions, grid.shape_rows_cols, cell0
        )
        summary["annotations"] = {
            "file": str(annotations),
            **outputs.annotation_scores(classes_map, names, truth, truth_names),
        }
    return summary


def infer_slides(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: SlideOptions,
    *,
    annotations: str | Path | None = None,
    on_slide: Callable[[Path, int], None] | None = None,
    on_tiles: Callable[[int, int], None] | None = None,
) -> SlideRunReport:
    """Classify many slides; a bad slide is recorded in ``failures`` and the others go on.

    In one process the slides stream through one model and one DataLoader, the next slide
    planned while the current one runs (:mod:`oncoscope.inference.slide_batch`); each slide's
    outputs are those of a run over it alone. A full disk (or quota) stops the run: the slide
    being written is recorded in ``failures`` as ``(the file being written, message)``, with
    nothing of it left behind, and the slides not finished in ``not_done``.

    Args:
        inputs: slide files or folders of slides.
        annotations: one file (one slide) or a folder of ``<slide stem>.geojson`` / ``.png``.
        on_slide: called with ``(slide, slides in the run)`` as each slide starts.
        on_tiles: see :func:`infer_slide`.

    Raises:
        OncoscopeError: a bad checkpoint or options, or no slides (per-slide errors are
            reported, not raised).
        OSError: a file cannot be written for another reason than a full disk.
    """
    from oncoscope.inference.slide_batch import classify_slides
    from oncoscope.io.slide_files import find_slides

    check_run_options(options, lightning_runs_model=True)
    check_on_mismatch(options.on_mismatch)
    jobs = find_slides(inputs, annotations)
    classifier = load_classifier(checkpoint)
    return classify_slides(classifier, jobs, out, options, on_slide=on_slide, on_tiles=on_tiles)
