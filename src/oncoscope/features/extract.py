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
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import DataLoader

from oncoscope.errors import InvalidOptionError, OncoscopeError
from oncoscope.features.bags import bag_path, read_bag_attrs, write_bag
from oncoscope.features.encoders import Encoder
from oncoscope.hardware import resolve_precision
from oncoscope.inference.accumulate import preallocate
from oncoscope.inference.patches import TileDataset, TileGrid, cells_per_tile
from oncoscope.inference.predict_tiles import (
    agreement_sample,
    forward_probabilities,
    predict_tiles,
    to_model_input,
)
from oncoscope.inference.slide_inference import (
    DISK_FULL,
    ON_MISMATCH,
    SlideOptions,
    plan_tiles,
    resolution_request,
    stain_target,
    writing,
)
from oncoscope.inference.status import settings_differences
from oncoscope.io.slides import open_slide

#: Default tile step: non-overlapping tiles, as MIL pipelines (CLAM, slideflow) use.
DEFAULT_STRIDE = 1.0


@dataclass(frozen=True)
class FeatureOptions:
    """How bags are made (see ``oncoscope features --help``).

    Attributes:
        magnification, mpp: read resolution (at most one; neither: a checkpoint's training
            resolution, else x20).
        tile_px: tile side at the read resolution (None: the encoder's input size; another
            side is resized to it).
        stride: tile step as a fraction of the tile (1, 0.5, 0.25...).
        batch_size, workers: DataLoader batch size and reader processes.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        min_tissue: least tissue share of a tile for it to be encoded.
        allow_upsampling: allow a resolution finer than the scan's.
        devices, accelerator, num_nodes: Lightning's ``trainer.predict`` over devices (None:
            the one-process loop).
        agreement_tiles: tiles re-encoded at fp32 under a reduced precision (0: none; None:
            1% of the tiles, 16 to 256).
        scan_mpp, scan_magnification: overrides of the scan's mpp / objective power.
        overwrite: redo every slide, and replace ``<stem>.h5`` files not made by this command.
        on_mismatch: a bag made with other settings is ``redo``ne or refused (``error``).
        stain_normalize: apply a checkpoint's recorded stain target, as ``slide`` does.
    """

    magnification: float | None = None
    mpp: float | None = None
    tile_px: int | None = None
    stride: float = DEFAULT_STRIDE
    batch_size: int = 16
    workers: int = 0
    precision: str = "auto"
    min_tissue: float = 0.05
    allow_upsampling: bool = False
    devices: int | None = None
    accelerator: str = "auto"
    num_nodes: int = 1
    agreement_tiles: int | None = None
    scan_mpp: float | None = None
    scan_magnification: float | None = None
    overwrite: bool = False
    on_mismatch: str = "redo"
    stain_normalize: bool = True


@dataclass
class BagOutcome:
    """One slide: its bag, its summary (None when skipped, or off rank 0), warnings."""

    slide: Path
    bag: Path
    summary: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    rank_zero: bool = True


@dataclass
class FeatureReport:
    """All slides of a run: outcomes, ``(path, message)`` failures, slides not attempted."""

    outcomes: list[BagOutcome] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)


def as_features(output: torch.Tensor) -> torch.Tensor:
    """The runners' ``head`` for bags: the encoder's float32 output as it is."""
    return output


def slide_options(encoder: Encoder, options: FeatureOptions) -> SlideOptions:
    """``oncoscope slide``'s options for the same tiles: the resolution resolved (the options',
    else a checkpoint's training resolution, else x20).

    Raises:
        InvalidOptionError: both ``mpp`` and ``magnification``; an unknown ``on_mismatch``.
    """
    if options.on_mismatch not in ON_MISMATCH:
        raise InvalidOptionError(f"--on-mismatch must be one of {', '.join(ON_MISMATCH)}")
    asked = SlideOptions(mpp=options.mpp, magnification=options.magnification)
    request = resolution_request(
        asked, encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size)
    )
    return SlideOptions(
        mpp=request.mpp,
        magnification=request.magnification,
        stride=options.stride,
        batch_size=options.batch_size,
        workers=options.workers,
        precision=options.precision,
        min_tissue=options.min_tissue,
        allow_upsampling=options.allow_upsampling,
        devices=options.devices,
        accelerator=options.accelerator,
        num_nodes=options.num_nodes,
        scan_mpp=options.scan_mpp,
        scan_magnification=options.scan_magnification,
        stain_normalize=options.stain_normalize,
    )


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
        "precision": resolve_precision(options.precision, _device(encoder, options)),
        "stain": stain_target(
            encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size), chosen
        ),
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
        if options.on_mismatch == "error":
            raise InvalidOptionError(
                f"{bag.name} was made with other settings ({said}); pass --on-mismatch redo to "
                "redo it, or use another --out",
                slide_path,
            )
        notes.append(f"{bag.name} was made with other settings ({said}); redone")
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
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase_done(name: str) -> None:
        phases[name] = time.perf_counter() - started - sum(phases.values())

    chosen = slide_options(encoder, options)
    side = tile_side(encoder, options)
    with open_slide(
        slide_path, mpp=options.scan_mpp, magnification=options.scan_magnification
    ) as slide:
        grid = plan_tiles(encoder.tile_spec(side), slide, chosen, notes)
        phase_done("tissue_and_grid")
        dataset = TileDataset(
            slide.path,
            grid.positions_level0,
            grid.tile_px,
            grid.target,
            options.scan_mpp,
            options.scan_magnification,
            stain=stain_target(
                encoder.checkpoint_spec or encoder.tile_spec(encoder.image_size), chosen
            ),
        )
        precision = _encode(encoder, dataset, len(grid), work, options, on_tiles)
        phase_done("tiles")
        if precision is None:  # a non-zero rank of a distributed run: rank 0 writes
            return BagOutcome(slide_path, bag, None, notes, rank_zero=False)
        features = np.load(work / "features.npy", mmap_mode="r")
        agreement = None
        checked = agreement_sample(len(grid), options.agreement_tiles)
        if precision != "fp32" and checked > 0:
            agreement = feature_agreement(
                encoder, dataset, features, batch_size=options.batch_size, sample=checked
            )
            phase_done("precision_agreement")
        summary: dict[str, Any] = {
            "tiles": len(grid),
            "precision": precision,
            "notes": notes,
        }
        if agreement is not None:
            summary["precision_agreement"] = agreement
        attrs = bag_attrs(encoder, slide_path, grid, settings)
        seconds = time.perf_counter() - started
        summary.update(
            seconds=seconds,
            tiles_per_second=len(grid) / seconds if seconds > 0 else None,
            phase_seconds=phases,
        )
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


def _encode(
    encoder: Encoder,
    dataset: TileDataset,
    tiles: int,
    work: Path,
    options: FeatureOptions,
    on_tiles: Callable[[int, int], None] | None,
) -> str | None:
    """Features into ``work/features.npy``; the precision, None off rank 0."""
    device = _device(encoder, options)
    precision = resolve_precision(options.precision, device)
    path = work / "features.npy"
    shape = (tiles, encoder.feature_dim)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        if on_tiles is not None:
            on_tiles(min(done[0], tiles), tiles)

    run: dict[str, Any] = {
        "batch_size": options.batch_size,
        "workers": options.workers,
        "precision": precision,
        "on_batch": advance,
        "head": as_features,
    }
    if options.devices is None:
        shutil.rmtree(work, ignore_errors=True)
        with writing(path):
            work.mkdir(parents=True)
            features = open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            preallocate(path)
        predict_tiles(
            encoder.model,
            encoder.tile_spec(dataset.tile_px),
            dataset,
            features,
            device=device,
            **run,
        )
        features.flush()
        del features
        return precision
    from oncoscope.inference.predict_distributed import predict_tiles_distributed

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*infer the batch indices.*")
        rank_zero = predict_tiles_distributed(
            encoder.model, encoder.tile_spec(dataset.tile_px), dataset, path, shape,
            devices=options.devices, accelerator=options.accelerator,
            num_nodes=options.num_nodes, **run,
        )  # fmt: skip
    return precision if rank_zero else None


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


def _device(encoder: Encoder, options: FeatureOptions) -> torch.device:
    """Where the tiles are encoded (for ``devices``: Lightning's accelerator's)."""
    if options.devices is None:
        return encoder.device
    if options.accelerator in ("gpu", "cuda", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


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
    from oncoscope.io.slide_files import find_slides

    if options.num_nodes > 1 and options.devices is None:
        raise InvalidOptionError("--num-nodes needs --devices (devices per node)")
    jobs = find_slides(inputs)
    slide_options(encoder, options)  # refuses bad options before any work
    cells_per_tile(options.stride, tile_side(encoder, options))
    report = FeatureReport()
    for number, job in enumerate(jobs):
        if on_slide is not None:
            on_slide(job.path, len(jobs))
        try:
            report.outcomes.append(
                extract_slide(encoder, job.path, out, options, on_tiles=on_tiles)
            )
        except OncoscopeError as error:
            report.failures.append((str(job.path), error.message))
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            report.failures.append(
                (
                    str(error.filename or job.path),
                    f"{error.strerror or 'the disk is full'} while writing it; nothing of "
                    f"{job.path.name} was kept: free space and run again",
                )
            )
            report.not_done = [str(later.path) for later in jobs[number + 1 :]]
            break
    return report
