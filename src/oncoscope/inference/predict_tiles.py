"""Run a classifier over the tiles of a slide, streamed and batched, into probabilities on disk.

DataLoader workers read and decode tiles (uint8) while the model runs; batches are pinned and
prefetched, normalised on the model's device into channels-last float tensors, and run under
autocast at the chosen precision. Probabilities go to a ``(tiles, classes)`` float32 memory map
by tile index, so the order batches finish in does not matter, and a tile written twice (the
padding of a distributed sampler) is written with the same values.

Two runners fill it: :func:`predict_tiles` (one process, one device; no Lightning import) and
:func:`oncoscope.inference.predict_distributed.predict_tiles_distributed` (Lightning
``trainer.predict`` over ``devices`` with Lightning's distributed sampler over tiles, for
several GPUs or nodes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from oncoscope.errors import InvalidOptionError
from oncoscope.inference.patches import TileDataset
from oncoscope.models.spec import ModelSpec

#: Share of a slide's tiles re-run at fp32 to measure how often a reduced precision changes
#: the argmax, at least :data:`AGREEMENT_MIN_TILES` and at most :data:`AGREEMENT_MAX_TILES`.
AGREEMENT_FRACTION = 0.01
AGREEMENT_MIN_TILES = 16
AGREEMENT_MAX_TILES = 256
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

OnBatch = Callable[[int], None]
#: What a runner stores per tile of the model's float32 output ``(B, ...)``.
Head = Callable[[torch.Tensor], torch.Tensor]


def softmax_head(output: torch.Tensor) -> torch.Tensor:
    """Class probabilities of logits ``(B, K)``: what ``oncoscope slide`` stores."""
    return output.softmax(dim=1)


def agreement_quota(tiles: int, slides: int = 1, requested: int | None = None) -> int:
    """Tiles of one slide of a run over ``slides`` slides to check at fp32: the run's check
    spread over its slides, without a fixed count per slide.

    Default: :data:`AGREEMENT_FRACTION` of the slide's tiles, and at least its share of
    :data:`AGREEMENT_MIN_TILES` over the run (so a run of small slides still checks at least
    that many tiles in all), at most :data:`AGREEMENT_MAX_TILES`. ``requested`` tiles (0 = none)
    are shared out the same way. Never more than ``tiles``. An fp32 forward costs about twice a
    bf16 one on a CPU, so the default check costs about 2% of a large slide's model time.

    Raises:
        InvalidOptionError: a negative ``requested``, or ``slides`` below 1.

    Example:
        >>> agreement_quota(65), agreement_quota(65, slides=100), agreement_quota(65, slides=4)
        (16, 1, 4)
        >>> agreement_quota(5000, slides=100), agreement_quota(65, 100, requested=300)
        (50, 3)
        >>> agreement_quota(526), agreement_quota(10), agreement_quota(50_000)
        (16, 10, 256)
        >>> agreement_quota(5000, requested=0), agreement_quota(5000, requested=1000)
        (0, 1000)
    """
    if slides < 1:
        raise InvalidOptionError(f"a run needs at least one slide, got {slides}")
    if requested is not None:
        if requested < 0:
            raise InvalidOptionError(f"--agreement-tiles must be 0 or more, got {requested}")
        return min(tiles, math.ceil(requested / slides))
    share = math.ceil(AGREEMENT_FRACTION * tiles)
    floor = math.ceil(AGREEMENT_MIN_TILES / slides)
    return min(tiles, max(floor, min(AGREEMENT_MAX_TILES, share)))


def spread(tiles: int, sample: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``sample`` tile indices of ``tiles`` spread evenly from the first to the last.

    Example:
        >>> spread(10, 3).tolist(), spread(5, 0).tolist()
        ([0, 4, 9], [])
    """
    if sample <= 0 or tiles <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen: np.ndarray[Any, np.dtype[np.int64]] = np.unique(
        np.linspace(0, tiles - 1, min(sample, tiles)).round().astype(np.int64)
    )
    return chosen


def compare_precisions(
    reduced: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]
) -> dict[str, float | int]:
    """Probabilities of the same tiles at a reduced precision and at fp32, compared:
    ``tiles``, ``argmax_agreement`` (0..1), ``max_abs_difference``, ``mean_abs_difference``."""
    reduced = np.asarray(reduced, dtype=np.float32)
    difference = np.abs(reduced - reference)
    return {
        "tiles": len(reduced),
        "argmax_agreement": float((reduced.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
    }


def to_model_input(tiles: torch.Tensor, spec: ModelSpec, device: torch.device) -> torch.Tensor:
    """``(B, H, W, C) uint8`` tiles -> the model's normalised ``(B, C, H, W)`` float32 input,
    channels-last, on ``device`` (:meth:`oncoscope.models.spec.ModelSpec.prepare`)."""
    return spec.prepare(tiles.to(device, non_blocking=True).permute(0, 3, 1, 2))


def tile_loader(
    dataset: Dataset[Any], batch_size: int, workers: int, device: torch.device
) -> DataLoader[Any]:
    """Batches of tiles in index order, read and decoded by ``workers`` processes.

    A :class:`~oncoscope.inference.patches.TileDataset` is read a whole batch per item
    (:class:`~oncoscope.inference.patches.TileBatches`: no per-tile collate); any other
    dataset of ``(tile, index)`` is batched by the DataLoader. Each worker keeps 4 batches in
    flight.
    """
    batched = dataset.batches(batch_size) if isinstance(dataset, TileDataset) else None
    return DataLoader(
        batched if batched is not None else dataset,
        batch_size=None if batched is not None else batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


def forward_probabilities(
    model: nn.Module, x: torch.Tensor, precision: str, head: Head = softmax_head
) -> torch.Tensor:
    """Softmax probabilities (float32) of a normalised batch under autocast at ``precision``
    (or another ``head`` of the model's float32 output)."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits: torch.Tensor = model(x)
    return head(logits.float())


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` of ``model`` (inductor) for batches of one shape: the runners pad a
    run's last, smaller batches to the batch size (:func:`pad_batch`), so one graph serves the
    whole run. Compiling takes seconds to minutes on the first batch (cached on disk by
    inductor for later processes), so it pays off over long runs only."""
    return torch.compile(model, dynamic=False)  # type: ignore[return-value]


def pad_batch(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``x`` with zero tiles appended up to ``batch_size`` (their outputs are dropped)."""
    missing = batch_size - len(x)
    if missing <= 0:
        return x
    padding = x.new_zeros((missing, *x.shape[1:])).contiguous(memory_format=torch.channels_last)
    return torch.cat([x, padding]).contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in eval mode on ``device``, channels-last."""
    return model.eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def predict_tiles(
    model: nn.Module,
    spec: ModelSpec,
    dataset: Dataset[Any],
    probabilities: np.ndarray[Any, np.dtype[np.float32]],
    *,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | None = None,
    precision: str = "fp32",
    on_batch: OnBatch | None = None,
    head: Head = softmax_head,
) -> None:
    """Fill ``probabilities[index]`` for every tile of ``dataset`` (one process, one device).

    Args:
        model: the classifier (see :func:`prepare_model`).
        spec: the checkpoint's spec (its :meth:`~oncoscope.models.spec.ModelSpec.prepare`).
        dataset: yields ``(uint8 (H, W, 3) tensor, index)``.
        probabilities: ``(tiles, classes)`` float32, e.g. a memory map.
        batch_size, workers: DataLoader batch size and worker processes.
        device: where the model runs (default CPU).
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved, see :func:`resolve_precision`).
        on_batch: called with the number of tiles after each batch.
        head: what is stored of the model's float32 output (default: softmax probabilities;
            ``oncoscope features`` stores the encoder's features as they are).
    """
    device = device or torch.device("cpu")
    with torch.inference_mode():
        for tiles, index in tile_loader(dataset, batch_size, workers, device):
            probs = forward_probabilities(
                model, to_model_input(tiles, spec, device), precision, head
            )
            probabilities[index.numpy()] = probs.cpu().numpy()
            if on_batch is not None:
                on_batch(len(index))


def precision_agreement(
    model: nn.Module,
    spec: ModelSpec,
    dataset: Dataset[Any],
    probabilities: np.ndarray[Any, Any],
    *,
    batch_size: int = 16,
    device: torch.device | None = None,
    sample: int = AGREEMENT_MAX_TILES,
    head: Head = softmax_head,
    compare: Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any]], dict[str, Any]] = (
        compare_precisions
    ),
) -> dict[str, Any]:
    """How a reduced-precision run compares with fp32 on a sample of its tiles.

    ``sample`` tiles spread evenly over the slide are run again at fp32 (stored through
    ``head``) and compared with their stored values (``probabilities``) by ``compare``.

    Returns:
        By default (:func:`compare_precisions`): ``tiles`` compared, ``argmax_agreement``
        (0..1), ``max_abs_difference`` and ``mean_abs_difference`` of the probabilities.
    """
    device = device or torch.device("cpu")
    chosen = spread(len(probabilities), sample)
    subset = (
        DataLoader(dataset.batches(batch_size, chosen), batch_size=None)
        if isinstance(dataset, TileDataset)
        else DataLoader(torch.utils.data.Subset(dataset, chosen.tolist()), batch_size=batch_size)
    )
    reference = np.zeros((len(chosen), probabilities.shape[1]), dtype=np.float32)
    with torch.inference_mode():
        start = 0
        for tiles, _ in subset:
            x = to_model_input(tiles, spec, device)
            exact = forward_probabilities(model, x, "fp32", head)
            reference[start : start + len(x)] = exact.cpu().numpy()
            start += len(x)
    return compare(probabilities[chosen], reference)
