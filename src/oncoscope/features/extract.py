"""``oncoscope features``: tile features of whole slides into one feature bag per slide.

The tiles are those ``oncoscope slide`` plans
(:func:`oncoscope.inference.slide_inference.plan_tiles`: the same tissue mask, resolution,
stride and tissue share), read by the same streamed ``TileDataset`` and batched by the same
runners (:func:`oncoscope.inference.predict_tiles.predict_tiles`, or Lightning's
``trainer.predict`` over ``devices`` through
:func:`~oncoscope.inference.predict_distributed.predict_tiles_distributed`), which store the
encoder's features instead of class probabilities. Features go to a memory-mapped work file by
tile index and are copied into the bag in chunks, so memory stays flat in the slide's size.

Under a reduced precision (bf16/fp16) a sample of tiles is encoded again at fp32 and the cosine
similarity of the two feature vectors reported (min and mean) in the bag's ``summary``.

Per slide: the bag (:mod:`oncoscope.features.bags`), written atomically and carrying the
settings that made it; a re-run skips a slide whose bag has the same settings and redoes (or,
with ``on_mismatch="error"``, refuses) one made with other settings.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from oncoscope.batch import BatchReport, run_until_disk_full, writing
from oncoscope.errors import OncoscopeError
from oncoscope.features.bags import bag_path, read_bag_attrs, write_bag
from oncoscope.features.encoders import Encoder
from oncoscope.hardware import resolve_precision
from oncoscope.inference import tile_runs
from oncoscope.inference.patches import TileDataset, TileGrid, cells_per_tile
from oncoscope.inference.predict_tiles import (
    agreement_sample,
    forward_probabilities,
    to_model_input,
)
from oncoscope.inference.slide_inference import (
    SlideOptions,
    plan_tiles,
    resolution_request,
    stain_target,
)
from oncoscope.inference.status import (
    check_on_mismatch,
    redo_or_refuse,
    settings_differences,
)
from oncoscope.io.slides import open_slide

#: Default tile step: non-overlapping tiles, as MIL pipelines (CLAM, slideflow) use.
DEFAULT_STRIDE = 1.0


@dataclass(frozen=True)
class FeatureOptions(tile_runs.TileRunOptions):
    """How bags are made (see ``oncoscope features --help``): the options
    :class:`~oncoscope.inference.tile_runs.TileRunOptions` describes (``overwrite`` also
    replaces ``<stem>.h5`` files not made by this command; a bag made with other settings is
    redone or refused by ``on_mismatch``), with non-overlapping tiles by default, and:

    Attributes:
        tile_px: tile side at the read resolution (None: the encoder's input size; another
            side is resized to it).
    """

    stride: float = DEFAULT_STRIDE
    tile_px: int | None = None


class BagOutcome(tile_runs.SlideRun):
    """One slide (see :class:`~oncoscope.inference.tile_runs.SlideRun`): its ``output`` is
    its bag."""

    @property
    def bag(self) -> Path:
        """The slide's bag file."""
        return self.output


#: All slides of a run (:func:`extract_slides`): outcomes, failures, slides not done.
FeatureReport = BatchReport[BagOutcome]


def as_features(output: torch.Tensor) -> torch.Tensor:
    """The runners' ``head`` for bags: the encoder's float32 output as it is."""
    return output


def slide_options(encoder: Encoder, options: FeatureOptions) -> SlideOptions:
    """``oncoscope slide``'s options for the same tiles: the resolution resolved (the options',
    else a checkpoint's training resolution, else x20).

    Raises:
        InvalidOptionError: both ``mpp`` and ``magnification``; an unknown ``on_mismatch``.
    """
    check_on_mismatch(options.on_mismatch)
    request = resolution_request(
        options, encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size)
    )
    shared = {name.name: getattr(options, name.name) for name in fields(tile_runs.TileRunOptions)}
    return SlideOptions(**{**shared, "mpp": request.mpp, "magnification": request.magnification})


def tile_side(encoder: Encoder, options: FeatureOptions) -> int:
    """Tile side at the read resolution: ``options.tile_px`` or the encoder's input size."""
    return int(options.tile_px or encoder.image_size)


def feature_settings(
    encoder: Encoder, slide_path: str | Path, options: FeatureOptions
) -> dict[str, Any]:
    """What determines a slide's bag, recorded in it and compared on re-runs: the encoder's id
    and spec (less the weights file's path: its SHA-256 is in the id), the slide's name and
    size, the resolution (resolved), tile side, stride, tissue share, upsampling, scan
    overrides, precision (``auto`` resolved here), stain target. Batch size, workers and
    devices are left out."""
    chosen = slide_options(encoder, options)
    slide_path = Path(slide_path)
    try:
        size: int | None = slide_path.stat().st_size
    except OSError:
        size = None
    return {
        "encoder": encoder.id,
        "encoder_spec": {k: v for k, v in encoder.spec.items() if k != "weights"},
        "slide_name": slide_path.name,
        "slide_bytes": size,
        "mpp": chosen.mpp,
        "magnification": chosen.magnification,
        "tile_px": tile_side(encoder, options),
        "stride": options.stride,
        "min_tissue": options.min_tissue,
        "allow_upsampling": options.allow_upsampling,
        "scan_mpp": options.scan_mpp,
        "scan_magnification": options.scan_magnification,
        "precision": resolve_precision(
            options.precision, tile_runs.run_device(encoder.device, options)
        ),
        "stain": _stain(encoder, chosen),
    }


def extract_slide(
    encoder: Encoder,
    slide_path: str | Path,
    out: str | Path,
    options: FeatureOptions,
    *,
    on_tiles: Callable[[int, int], None] | None = None,
) -> BagOutcome:
    """Encode the tiles of one slide into ``out/<slide stem>.h5`` (see the module docstring).

    The bag's ``summary`` attribute holds ``tiles``, ``seconds`` (opening the slide to the
    features computed, before the bag is written), ``tiles_per_second``, ``phase_seconds``
    (``tissue_and_grid``, ``tiles``, ``precision_agreement``), ``precision``, ``notes`` and,
    under a reduced
    precision, ``precision_agreement`` (``tiles``, ``cosine_min``, ``cosine_mean``,
    ``max_abs_difference``; see :func:`feature_agreement`).

    Args:
        on_tiles: called with ``(tiles done, tiles in the slide)`` as batches finish.

    Raises:
        OncoscopeError: an unreadable slide, no tissue, a resolution the slide cannot give, a
            bad stride; a ``<stem>.h5`` there that this command did not make (unless
            ``overwrite``); a bag made with other settings under ``on_mismatch="error"``.
        OSError: the bag or work file cannot be written (``filename`` names it).
    """
    slide_path = Path(slide_path)
    bag = bag_path(out, slide_path)
    settings = feature_settings(encoder, slide_path, options)
    notes: list[str] = []
    if bag.exists() and not options.overwrite:
        said = _differences(bag, settings)
        if not said:
            return BagOutcome(slide_path, bag, None)
        notes.append(redo_or_refuse(f"{bag.name} was made", said, options.on_mismatch, slide_path))
    work = Path(out) / f".work-{slide_path.stem}"
    try:
        outcome = _extract(encoder, slide_path, bag, work, options, settings, notes, on_tiles)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if outcome.rank_zero:  # the other ranks of a distributed run leave it to rank 0
        shutil.rmtree(work, ignore_errors=True)
    return outcome


def _differences(bag: Path, settings: dict[str, Any]) -> str:
    """What differs between an existing bag's settings and these ('' when none).

    Raises:
        OncoscopeError: the file is not a bag made by ``oncoscope features``.
    """
    try:
        recorded = read_bag_attrs(bag).get("settings")
    except OncoscopeError as error:
        raise OncoscopeError(
            f"{bag.name}: {error.message}; it is not a bag of oncoscope features: move it, "
            "pass --overwrite, or use another --out",
            bag,
        ) from None
    if not isinstance(recorded, dict):
        raise OncoscopeError(
            f"{bag.name} exists and was not made by oncoscope features (no settings "
            "recorded): move it, pass --overwrite, or use another --out",
            bag,
        )
    return "; ".join(settings_differences(recorded, settings))


def _extract(
    encoder: Encoder,
    slide_path: Path,
    bag: Path,
    work: Path,
    options: FeatureOptions,
    settings: dict[str, Any],
    notes: list[str],
    on_tiles: Callable[[int, int], None] | None,
) -> BagOutcome:
    clock = tile_runs.PhaseClock()
    chosen = slide_options(encoder, options)
    side = tile_side(encoder, options)
    with open_slide(
        slide_path, mpp=options.scan_mpp, magnification=options.scan_magnification
    ) as slide:
        grid = plan_tiles(encoder.tile_spec(side), slide, chosen, notes)
        clock.done("tissue_and_grid")
        dataset = tile_runs.grid_dataset(slide, grid, options, _stain(encoder, chosen))
        precision = tile_runs.run_tiles(
            encoder.model, encoder.tile_spec(grid.tile_px), dataset, work / "features.npy",
            encoder.feature_dim, options, encoder.device, on_tiles=on_tiles, head=as_features,
        )  # fmt: skip
        clock.done("tiles")
        if precision is None:  # a non-zero rank of a distributed run: rank 0 writes
            return BagOutcome(slide_path, bag, None, notes, rank_zero=False)
        features = np.load(work / "features.npy", mmap_mode="r")
        agreement = None
        checked = agreement_sample(len(grid), options.agreement_tiles)
        if precision != "fp32" and checked > 0:
            agreement = feature_agreement(
                encoder, dataset, features, batch_size=options.batch_size, sample=checked
            )
            clock.done("precision_agreement")
        summary: dict[str, Any] = {
            "tiles": len(grid),
            "precision": precision,
            "notes": notes,
        }
        if agreement is not None:
            summary["precision_agreement"] = agreement
        attrs = bag_attrs(encoder, slide_path, grid, settings)
        summary.update(clock.record(len(grid)))
        attrs["summary"] = summary
        with writing(bag):
            write_bag(bag, features, tile_coords(grid), attrs)
        del features
    return BagOutcome(slide_path, bag, summary, notes)


def tile_coords(grid: TileGrid) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``(n, 2)`` int64 level-0 ``(x, y)`` of the tiles' top-left corners, rounded."""
    coords: np.ndarray[Any, np.dtype[np.int64]] = np.rint(grid.positions_level0).astype(np.int64)
    return coords


def bag_attrs(
    encoder: Encoder, slide_path: Path, grid: TileGrid, settings: dict[str, Any]
) -> dict[str, Any]:
    """The bag's attributes (see :mod:`oncoscope.features.bags`)."""
    from oncoscope import __version__

    downsample = grid.target.downsample
    return {
        "slide": str(slide_path),
        "slide_name": settings["slide_name"],
        "slide_bytes": settings["slide_bytes"] if settings["slide_bytes"] is not None else -1,
        "tile_px": int(grid.tile_px),
        "tile_px_level0": round(grid.tile_px * downsample),
        "stride_px": int(grid.tile_px // grid.cells_per_tile),
        "mpp": float(grid.target.mpp),
        "magnification": float(grid.target.magnification),
        "encoder": encoder.id,
        "encoder_spec": json.dumps(encoder.spec),
        "oncoscope_version": __version__,
        "settings": json.dumps(settings),
    }


def feature_agreement(
    encoder: Encoder,
    dataset: TileDataset,
    features: np.ndarray[Any, Any],
    *,
    batch_size: int = 16,
    sample: int = 256,
) -> dict[str, float | int]:
    """How reduced-precision features compare with fp32 ones on ``sample`` tiles spread evenly
    over the slide (encoded again at fp32).

    Returns:
        ``tiles`` compared, ``cosine_min`` and ``cosine_mean`` (cosine similarity of each
        tile's two feature vectors; two zero vectors count as 1), ``max_abs_difference``.
    """
    count = len(features)
    chosen = np.unique(np.linspace(0, count - 1, min(sample, count)).round().astype(np.int64))
    device = encoder.device
    spec = encoder.tile_spec(dataset.tile_px)
    model = encoder.model.to(device)
    reference = np.zeros((len(chosen), features.shape[1]), dtype=np.float32)
    start = 0
    with torch.inference_mode():
        for tiles, _ in DataLoader(dataset.batches(batch_size, chosen), batch_size=None):
            x = to_model_input(tiles, spec, device)
            out = forward_probabilities(model, x, "fp32", as_features)
            reference[start : start + len(x)] = out.cpu().numpy()
            start += len(x)
    reduced = np.asarray(features[chosen], dtype=np.float64)
    exact = reference.astype(np.float64)
    norms = np.linalg.norm(reduced, axis=1) * np.linalg.norm(exact, axis=1)
    dots = (reduced * exact).sum(axis=1)
    both_zero = (np.linalg.norm(reduced, axis=1) == 0) & (np.linalg.norm(exact, axis=1) == 0)
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    return {
        "tiles": len(chosen),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_difference": float(np.abs(reduced - exact).max()),
    }


def _stain(encoder: Encoder, chosen: SlideOptions) -> dict[str, Any] | None:
    """The stain target the tiles are normalised to (see :func:`stain_target`)."""
    return stain_target(encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size), chosen)


def extract_slides(
    encoder: Encoder,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: FeatureOptions,
    *,
    on_slide: Callable[[Path, int], None] | None = None,
    on_tiles: Callable[[int, int], None] | None = None,
) -> FeatureReport:
    """Bags for many slides; a bad slide is recorded in ``failures`` and the others go on.

    A full disk (or quota) stops the run: the slide being written is recorded with the file,
    nothing of its bag is left, and the slides after it are listed in ``not_done``.

    Raises:
        OncoscopeError: bad options or no slides (per-slide errors are reported, not raised).
        OSError: a file cannot be written for another reason than a full disk.
    """
    from oncoscope.io.slide_files import SlideJob, find_slides

    tile_runs.check_run_options(options)
    jobs = find_slides(inputs)
    slide_options(encoder, options)  # refuses bad options before any work
    cells_per_tile(options.stride, tile_side(encoder, options))

    def extract(job: SlideJob) -> BagOutcome:
        return extract_slide(encoder, job.path, out, options, on_tiles=on_tiles)

    return run_until_disk_full(extract, jobs, on_slide)
