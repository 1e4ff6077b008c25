"""``wsi tile``: whole-slide images -> tissue tiles (PNG, HDF5 or zarr) + a slide-split manifest.

For each slide: open it (per-process pool, :mod:`oncoscope.io.slides`), resolve the target
resolution to a downsample and the pyramid level to read
(:meth:`oncoscope.io.slides.Slide.resolve`), make the slide's tissue mask at 8 um/px
(:func:`oncoscope.pathology.tissue.read_tissue`, the mask ``slide`` and ``scale`` use), lay the
overlapping grid (:mod:`oncoscope.pathology.tiling`) plus ``random`` extra positions in tissue, and
keep a tile when its coverage is at least ``min_coverage`` (and above 0): the coverage of its
majority annotation label when the slide has annotations (:mod:`oncoscope.pathology.annotations`),
otherwise its tissue fraction by the coverage rule of :mod:`oncoscope.pathology.tissue` (label
``tissue``). Kept tiles are read one at a time, their PNGs encoded on two writer threads with at
most 8 waiting (memory does not grow with the slide), and written to ``OUT/<slide>/`` under a
temporary name, renamed when complete, with ``tissue.png`` (the mask), ``overlay.png`` (the slide,
mask and kept tiles) and ``slide.json`` (mpp actually used, level, tissue threshold and mask mpp,
options). Slides are then split train/val/test by slide
(:func:`oncoscope.dataset.split.split_groups`, stratified by majority label) and
``OUT/manifest.csv`` and ``OUT/tile.json`` (run record with failures) are written. A bad slide is
reported and the others still tiled, unless ``strict``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from PIL import Image, ImageDraw

from oncoscope.dataset.build import (
    DatasetExtras,
    DatasetPlan,
    DatasetReport,
    GroupResult,
    build_dataset,
)
from oncoscope.dataset.split import SPLITS, split_counts
from oncoscope.errors import InvalidOptionError
from oncoscope.io.atomic import atomic_path, write_json
from oncoscope.io.background_writes import BackgroundWrites
from oncoscope.io.slide_files import SlideJob, find_slides
from oncoscope.io.slides import Resolution, ResolutionRequest, Slide, pooled_slide
from oncoscope.pathology.annotations import Labels, best_label, load_labels, nothing_labelled
from oncoscope.pathology.tiling import EDGE_POLICIES, EdgePolicy, grid_positions, random_positions
from oncoscope.pathology.tissue import (
    MIN_TISSUE_UM2,
    TissueMask,
    kept,
    read_tissue,
    tile_fractions,
)

if TYPE_CHECKING:
    from oncoscope.pathology.stain import StainNormalizer

#: Columns of a tile manifest, in order (``wsi tile``).
WSI_COLUMNS = (
    "path",
    "slide",
    "x",
    "y",
    "size",
    "magnification",
    "mpp",
    "label",
    "coverage",
    "split",
    "group",
    "kind",
    "level",
    "source",
    "stain",
)
TISSUE = "tissue"
DEFAULT_RATIO = (0.6, 0.2, 0.2)
STAIN_METHODS = ("macenko", "reinhard")  # oncoscope.pathology.stain.METHODS, without torch
TileFormat = Literal["png", "hdf5", "zarr"]
FORMATS: tuple[TileFormat, ...] = ("png", "hdf5", "zarr")


@dataclass(frozen=True)
class TileOptions:
    """Options of ``wsi tile``.

    Attributes:
        size_px: tile width and height in pixels at the target resolution.
        magnification: target magnification (downsample = scan magnification / it); or
        mpp: target microns per pixel (at most one of the two; neither:
            :data:`oncoscope.io.slides.DEFAULT_MAGNIFICATION`, x20).
        overlap: fraction of a tile shared by consecutive grid tiles, in [0, 1).
        min_coverage: keep a tile when its tissue fraction (or majority label's coverage) is
            at least this.
        random: extra tiles per slide at random positions in tissue.
        edge: ``"drop"`` tiles that would cross the slide's edge, or also ``"shift"`` one inward.
        tile_format: ``png`` files, or one ``hdf5``/``zarr`` store per slide.
        ratio: train/val/test shares of slides; None: :data:`DEFAULT_RATIO` (3:1:1) when
            there are at least 3 slides, else all slides in train (with a warning).
        seed: seed of the split and of the random tiles.
        scan_mpp: override of the slides' mpp (for files that lack it).
        scan_magnification: override of the slides' objective power.
        thumbnail_px: longer side of the thumbnail ``overlay.png`` is drawn on (the tissue
            mask is made at 8 um/px, :data:`oncoscope.pathology.tissue.TISSUE_MPP`, whatever
            the slide's size).
        min_tissue_um2: tissue pieces and holes smaller than this are removed (um^2).
        stain_reference: a reference tile (PNG) to stain-normalise every tile to.
        stain_method: ``macenko`` or ``reinhard``.
    """

    size_px: int = 256
    magnification: float | None = None
    mpp: float | None = None
    overlap: float = 0.3
    min_coverage: float = 0.5
    random: int = 0
    edge: EdgePolicy = "drop"
    tile_format: TileFormat = "png"
    ratio: tuple[float, float, float] | None = None
    seed: int = 0
    scan_mpp: float | None = None
    scan_magnification: float | None = None
    thumbnail_px: int = 1024
    min_tissue_um2: float = MIN_TISSUE_UM2
    stain_reference: str | None = None
    stain_method: str = "macenko"


@dataclass
class SlideResult(GroupResult):
    """What one slide contributed (:class:`~oncoscope.dataset.build.GroupResult`: the slide
    id as ``group``, manifest rows, stratum, warnings) and its ``slide.json`` record."""

    record: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The slide's tiles, mpp and pyramid level, for ``tile.json``."""
        tile = self.record["tile"]
        return {"tiles": len(self.rows), "mpp": tile["mpp"], "level": tile["level"]}


@dataclass
class TileReport(DatasetReport):
    """The outcome of a ``wsi tile`` run (:class:`~oncoscope.dataset.build.DatasetReport`)."""

    GROUPS: ClassVar[str] = "slides"
    ROWS: ClassVar[str] = "tiles"

    def row_counts(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Tiles per label of one split, as ``"label count, ..."``."""
        labels: dict[str, int] = {}
        for row in rows:
            labels[row["label"]] = labels.get(row["label"], 0) + 1
        return {"labels": ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))}


def tile_slide(job: SlideJob, out_dir: Path, options: TileOptions) -> SlideResult:
    """Tile one slide into ``out_dir/<slide id>/`` (see the module docstring).

    Raises:
        OncoscopeError: an unreadable slide, missing metadata, a resolution above the scan's,
            a tile larger than the slide, or bad annotations.
    """
    slide = pooled_slide(job.path, mpp=options.scan_mpp, magnification=options.scan_magnification)
    request = ResolutionRequest(mpp=options.mpp, magnification=options.magnification)
    target = slide.resolve(request.or_default())
    extent = options.size_px * target.downsample
    extent_wh = (extent, extent)
    try:
        grid = grid_positions(slide.dimensions, extent_wh, options.overlap, options.edge)
    except InvalidOptionError as error:
        raise InvalidOptionError(error.message, job.path) from None
    tissue, _ = read_tissue(slide, min_object_um2=options.min_tissue_um2)
    labels = load_labels(job.annotations, slide.dimensions) if job.annotations else None
    warnings = []
    if not tissue.mask.any():
        warnings.append("no tissue found; no tiles")
    if labels is not None and job.annotations is not None:
        why = nothing_labelled(job.annotations, labels, slide.dimensions)
        if why is not None:
            warnings.append(f"annotations {job.annotations} {why}; no tile is labelled")
    rng = np.random.default_rng([options.seed, zlib.crc32(job.slide_id.encode())])
    extra = random_positions(
        tissue.mask, tissue.downsample, slide.dimensions, extent_wh, 20 * options.random, rng
    )
    chosen: list[tuple[int, int, str, float, str]] = []
    seen: set[tuple[int, int]] = set()
    for kind, positions, limit in (("grid", grid, len(grid)), ("random", extra, options.random)):
        taken = 0
        for x, y, label, coverage in _candidates(
            labels, tissue, positions, extent_wh, options.min_coverage
        ):
            if taken >= limit:
                break
            if (x, y) in seen:
                continue
            if label is not None and coverage >= options.min_coverage and coverage > 0:
                chosen.append((x, y, label, coverage, kind))
                seen.add((x, y))
                taken += 1
    normalise = _stain_normaliser(options)
    rows = _write_tiles(slide, job, target, chosen, out_dir, options, tissue, normalise)
    stain = normalise.state() if normalise is not None else None
    for row in rows:  # the fitted target, so that training and inference can apply it again
        row["stain"] = json.dumps(stain, separators=(",", ":")) if stain is not None else ""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    stratum = max(sorted(counts), key=lambda k: counts[k]) if counts else "none"
    record = {
        "slide": job.slide_id,
        "source": str(job.path),
        "annotations": str(job.annotations) if job.annotations else None,
        **slide.info(),
        "tile": {
            "size_px": options.size_px,
            "mpp": target.mpp,
            "magnification": target.magnification,
            "downsample": target.downsample,
            "level": target.level,
            "extent_level0_px": extent,
        },
        "tissue": {
            "threshold_saturation": tissue.threshold,
            "fraction": tissue.fraction,
            "mask_downsample": tissue.downsample,
            "mask_mpp": tissue.mpp,
        },
        "tiles": {"grid_positions": len(grid), "kept": len(rows), "by_label": counts},
        "stain": stain,
        "warnings": warnings,
        "options": asdict(options),
    }
    write_json(out_dir / job.slide_id / "slide.json", record, indent=2)
    return SlideResult(job.slide_id, rows, stratum, warnings, record=record)


def tile_slides(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: TileOptions,
    *,
    annotations: str | Path | None = None,
    workers: int = 1,
    strict: bool = False,
    on_slide_done: Callable[[str, str | None, int], None] | None = None,
) -> TileReport:
    """Run ``wsi tile`` over slides (files or folders).

    Args:
        inputs: slide files or folders of slides.
        out_dir: output folder (``manifest.csv``, ``tile.json``, ``<slide>/``).
        options: see :class:`TileOptions`.
        annotations: a GeoJSON/label-mask file (one slide) or a folder of ``<slide>.geojson``.
        workers: processes tiling slides in parallel (1 = in this process).
        strict: stop at the first bad slide instead of reporting it at the end.
        on_slide_done: called after each slide with ``(slide id, error or None, slides)``.

    Returns:
        The :class:`TileReport`; ``manifest`` is None when no slide succeeded.

    Raises:
        OncoscopeError: no slide found, bad options, too few slides for an explicit split,
            or (with ``strict``) the first bad slide.
    """
    out = Path(out_dir)
    _check_options(options)
    jobs = find_slides(inputs, annotations)
    report = TileReport(out_dir=out)
    ratio = options.ratio
    if ratio is None:
        ratio = DEFAULT_RATIO if len(jobs) >= len(SPLITS) else (1.0, 0.0, 0.0)
        if len(jobs) < len(SPLITS):
            report.warnings.append(
                (str(out), f"{len(jobs)} slide(s) cannot fill a 3:1:1 split; all go to train "
                 "(pass --split to choose)")
            )  # fmt: skip
    split_counts(len(jobs), ratio)  # too few slides for the split: fail before work
    plan = DatasetPlan[SlideJob, SlideResult](
        identify=lambda job: (job.slide_id, job.path),
        ratio=ratio,
        seed=options.seed,
        columns=WSI_COLUMNS,
        record_name="tile.json",
        record={
            "inputs": [str(Path(p).resolve()) for p in inputs],
            "options": {**asdict(options), "ratio": ratio},
        },
        fallback_split="train",  # failures left too few slides: keep the good ones in train
        extras=lambda _results: DatasetExtras(
            record={"warnings": [{"path": p, "warning": m} for p, m in report.warnings]}
        ),
    )
    work = partial(tile_slide, out_dir=out, options=options)
    build_dataset(jobs, work, plan, report, workers=workers, strict=strict, on_done=on_slide_done)
    return report


def _check_options(options: TileOptions) -> None:
    ResolutionRequest(mpp=options.mpp, magnification=options.magnification)  # not both, > 0
    if options.size_px < 8:
        raise InvalidOptionError(f"--size must be at least 8 pixels, got {options.size_px}")
    if not 0 <= options.overlap < 1:
        raise InvalidOptionError(f"--overlap must be in [0, 1), got {options.overlap}")
    if not 0 <= options.min_coverage <= 1:
        raise InvalidOptionError(f"--min-coverage must be in [0, 1], got {options.min_coverage}")
    if options.tile_format not in FORMATS:
        raise InvalidOptionError(
            f"--format '{options.tile_format}' is not one of {', '.join(FORMATS)}"
        )
    if options.edge not in EDGE_POLICIES:
        raise InvalidOptionError(
            f"--edge '{options.edge}' is not one of {', '.join(EDGE_POLICIES)}"
        )
    if options.stain_reference is not None and options.stain_method not in STAIN_METHODS:
        raise InvalidOptionError(
            f"--stain-method '{options.stain_method}' is not one of {', '.join(STAIN_METHODS)}"
        )
    if options.random < 0:
        raise InvalidOptionError(f"--random must be at least 0, got {options.random}")


def _candidates(
    labels: Labels | None,
    tissue: TissueMask,
    positions: np.ndarray[Any, Any],
    extent_wh: tuple[float, float],
    min_coverage: float,
) -> Iterator[tuple[int, int, str | None, float]]:
    """``(x, y, label, coverage)`` of the tiles, in order: with annotations, each tile's
    majority label and its coverage (lazily: only the tiles looked at); without, the tiles the
    coverage rule keeps (:func:`oncoscope.pathology.tissue.kept`) as ``tissue`` with their
    tissue fraction (all at once)."""
    if labels is not None:
        for x, y in positions.tolist():
            label, coverage = best_label(labels.coverage((x, y), extent_wh))
            yield x, y, label, coverage
        return
    fractions = tile_fractions(tissue, positions, extent_wh)
    chosen = kept(fractions, min_coverage)
    for (x, y), fraction in zip(
        positions[chosen].tolist(), fractions[chosen].tolist(), strict=True
    ):
        yield x, y, TISSUE, fraction


def _stain_normaliser(options: TileOptions) -> StainNormalizer | None:
    if options.stain_reference is None:
        return None
    from oncoscope.pathology.stain import StainNormalizer, read_rgb

    reference = read_rgb(options.stain_reference)
    return StainNormalizer(options.stain_method).fit(reference)


def _write_tiles(
    slide: Slide,
    job: SlideJob,
    target: Resolution,
    chosen: list[tuple[int, int, str, float, str]],
    out_dir: Path,
    options: TileOptions,
    tissue: TissueMask,
    normalise: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None,
) -> list[dict[str, Any]]:
    size = options.size_px
    rows: list[dict[str, Any]] = []
    with (
        atomic_path(out_dir / job.slide_id) as temporary,
        BackgroundWrites(threads=2, pending=8) as writes,  # PNGs encode while tiles are read
    ):
        temporary.mkdir(parents=True)
        # quality-control figures: fast zlib (level 1), a slide's fixed cost in a tray of biopsies
        mask = Image.fromarray(tissue.mask.astype(np.uint8) * 255)
        writes.submit(partial(mask.save, temporary / "tissue.png", compress_level=1))
        thumbnail = slide.thumbnail(options.thumbnail_px)
        overlay = _overlay(thumbnail, tissue, chosen, size * target.downsample)
        writes.submit(partial(overlay.save, temporary / "overlay.png", compress_level=1))
        fmt = options.tile_format
        with _TileSink(temporary, job.slide_id, fmt, size, len(chosen), writes) as sink:
            for x, y, label, coverage, kind in chosen:
                rgb = slide.read_at((x, y), (size, size), target)
                if normalise is not None:
                    rgb = normalise(rgb)
                path = sink.add(rgb, x, y)
                rows.append(
                    {
                        "path": f"{job.slide_id}/{path}",
                        "slide": job.slide_id,
                        "x": x,
                        "y": y,
                        "size": size,
                        "magnification": round(target.magnification, 6),
                        "mpp": target.mpp,
                        "label": label,
                        "coverage": round(coverage, 6),
                        "split": "",
                        "group": job.slide_id,
                        "kind": kind,
                        "level": target.level,
                        "source": str(job.path),
                    }
                )
    return rows


class _TileSink:
    """Writes tiles as PNG files (through ``writes``), or into one HDF5/zarr store (in the
    calling thread), returning each tile's path."""

    def __init__(
        self,
        folder: Path,
        slide_id: str,
        fmt: TileFormat,
        size: int,
        count: int,
        writes: BackgroundWrites,
    ):
        self.folder, self.fmt, self.index, self.writes = folder, fmt, 0, writes
        self.store: Any = None
        shape = (count, size, size, 3)
        if fmt == "png":
            (folder / "tiles").mkdir()
        elif fmt == "hdf5":
            import h5py

            self.name = "tiles.h5"
            self.store = h5py.File(folder / self.name, "w")
            chunks = (1, size, size, 3) if count else None
            self.tiles = self.store.create_dataset("tiles", shape, "uint8", chunks=chunks)
            self.xy = self.store.create_dataset("xy", (count, 2), "int64")
        else:
            import zarr

            self.name = "tiles.zarr"
            self.store = zarr.open_group(str(folder / self.name), mode="w")
            chunks = (1, size, size, 3)
            self.tiles = self.store.create_array("tiles", shape=shape, dtype="uint8", chunks=chunks)
            self.xy = self.store.create_array("xy", shape=(count, 2), dtype="int64")
        if self.store is not None:
            self.store.attrs["slide"] = slide_id
            self.store.attrs["coordinates"] = "level-0 (x, y) of each tile's top-left corner"

    def __enter__(self) -> _TileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fmt == "hdf5":
            self.store.close()

    def add(self, rgb: np.ndarray[Any, Any], x: int, y: int) -> str:
        if self.fmt == "png":
            name = f"tiles/x{x}_y{y}.png"
            tile = Image.fromarray(rgb)  # rgb is the reader's own array, never reused
            self.writes.submit(partial(tile.save, self.folder / name, compress_level=3))
        else:
            self.tiles[self.index] = rgb
            self.xy[self.index] = (x, y)
            name = f"{self.name}#{self.index}"
        self.index += 1
        return name


def _overlay(
    thumbnail: tuple[np.ndarray[Any, Any], float],
    tissue: TissueMask,
    chosen: list[tuple[int, int, str, float, str]],
    extent: float,
) -> Image.Image:
    """The thumbnail (image, level-0 px per pixel) with the tissue mask (8 um/px, resized to
    it) tinted green (0.8 of the pixel, 0.2 of ``(0, 200, 0)``) and the kept tiles outlined.
    Tinted by PIL's blend and composite, in C (a float copy of the thumbnail took a third of
    ``wsi tile``'s per-slide time on a tray of biopsies)."""
    pixels, downsample = thumbnail
    base = Image.fromarray(np.ascontiguousarray(pixels[..., :3]).astype(np.uint8, copy=False))
    width, height = base.size
    mask = Image.fromarray(tissue.mask.astype(np.uint8) * 255)
    scale = tissue.downsample / downsample  # thumbnail px per mask px
    mask = mask.crop((0, 0, round(width / scale), round(height / scale)))
    inside = mask.resize((width, height), Image.Resampling.NEAREST)
    tinted = Image.blend(base, Image.new("RGB", base.size, (0, 200, 0)), 0.2)
    image = Image.composite(tinted, base, inside)
    draw = ImageDraw.Draw(image)
    side = extent / downsample
    for x, y, _label, _coverage, kind in chosen:
        left, top = x / downsample, y / downsample
        colour = (0, 0, 255) if kind == "grid" else (255, 128, 0)
        draw.rectangle((left, top, left + side, top + side), outline=colour)
    return image
