"""Parameters, FLOPs, latency and throughput of models: the seed-000 Table II for any models.

FLOPs come from PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
the matrix products and convolutions of one forward pass (not element-wise operations, pooling
or normalisation) and counts one multiply-add as **two** FLOPs, so ``gflops = 2 x gmacs``.
Latency is the median wall time of one forward pass of a batch after warm-up, in inference mode
with random weights (nothing is downloaded); throughput is images per second at that median.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from oncoscope.errors import InvalidOptionError
from oncoscope.hardware import UNKNOWN_CPU, cpu_model
from oncoscope.models.registry import check_model_name, create_model, training_kwargs

#: The models of seed 000's Table II.
SEED000_MODELS = ("resnet50", "seresnet50", "efficientnet_b4", "sa_efficientnet")
#: Parameters, millions, that seed 000's Table II gives for the models it names: "ResNet",
#: "Original EfficientNet-B4" and "Our model" (the SA-EfficientNet). Its "SENet" (147.0M)
#: names no variant that any of ours matches, so it is left out.
PAPER_PARAMETERS_M = {"resnet50": 28.6, "efficientnet_b4": 19.2, "sa_efficientnet": 74.6}
FLOPS_NOTE = (
    "FLOPs by torch.utils.flop_counter.FlopCounterMode: convolutions and matrix products of one "
    "forward pass, one multiply-add counted as 2 FLOPs (GFLOPs = 2 x GMACs)"
)


@dataclass(frozen=True)
class ModelBenchmark:
    """One model's row of the table.

    Attributes:
        model: its registry name.
        parameters: number of parameters (sum of ``numel``).
        gflops_per_image: forward FLOPs per image, 1e9 (multiply-add = 2 FLOPs).
        gmacs_per_image: forward multiply-adds per image, 1e9 (``gflops / 2``).
        latency_ms: median time of one forward pass of a batch, ms.
        latency_ms_min: fastest forward pass of a batch, ms.
        throughput_images_per_s: ``batch_size / median latency``.
    """

    model: str
    parameters: int
    gflops_per_image: float
    gmacs_per_image: float
    latency_ms: float
    latency_ms_min: float
    throughput_images_per_s: float


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of a built model (sum of ``numel`` over ``parameters()``)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``example`` (multiply-add = 2 FLOPs; convs and matmuls only).

    Example:
        >>> count_flops(nn.Linear(4, 3, bias=False), torch.zeros(1, 4))  # 4 x 3 MACs
        24
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(example)
    return int(counter.get_total_flops())


def time_forward_ms(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    iterations: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Wall time in ms of each of ``iterations`` forward passes, after ``warmup`` untimed ones.

    On CUDA the device is synchronised before each clock reading.
    """
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(batch)
        _synchronize(batch.device)
        for _ in range(iterations):
            start = clock()
            model(batch)
            _synchronize(batch.device)
            times.append((clock() - start) * 1000.0)
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; or ``cpu``, ``cuda``, ``cuda:1``...

    Raises:
        InvalidOptionError: a CUDA device on a machine without CUDA, or a malformed name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidOptionError(f"--device '{name}' is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError("--device cuda: CUDA is not available on this machine")
    return device


def random_batch(batch_size: int, in_chans: int, image_size: int) -> torch.Tensor:
    """The benchmark's input: ``(batch_size, in_chans, image_size, image_size)`` float32 from
    a normal distribution, the same for every call (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size, in_chans, image_size, image_size), generator=generator)


def benchmark_model(
    name: str,
    batch: torch.Tensor,
    *,
    iterations: int = 10,
    warmup: int = 2,
    num_classes: int = 2,
    model: nn.Module | None = None,
) -> ModelBenchmark:
    """Measure one model with random weights on ``batch`` (:func:`random_batch`; on the device
    to run on).

    Args:
        name: a model name of the registry (or timm).
        batch: ``(B, C, H, W)`` input; the model is built for its channels and side.
        iterations: timed forward passes; the median is reported.
        warmup: untimed forward passes first.
        num_classes: classifier outputs (2: tumour vs healthy).
        model: a model already built (``name`` then only labels the row).

    Returns:
        The :class:`ModelBenchmark`.

    Raises:
        UnknownModelError: a name neither oncoscope nor timm knows.
    """
    if model is None:
        sized = training_kwargs(name, {}, image_size=batch.shape[-1], dropout=None)
        model = create_model(name, num_classes=num_classes, in_chans=batch.shape[1], **sized)
    model = model.eval().to(batch.device)
    flops = count_flops(model, batch[:1])
    times = time_forward_ms(model, batch, iterations=iterations, warmup=warmup)
    median = statistics.median(times)
    return ModelBenchmark(
        model=name,
        parameters=parameter_count(model),
        gflops_per_image=round(flops / 1e9, 6),
        gmacs_per_image=round(flops / 2e9, 6),
        latency_ms=round(median, 3),
        latency_ms_min=round(min(times), 3),
        throughput_images_per_s=round(batch.shape[0] / (median / 1000.0), 3),
    )


def benchmark_models(
    names: Sequence[str] = SEED000_MODELS,
    *,
    batch_size: int = 8,
    image_size: int = 224,
    iterations: int = 10,
    warmup: int = 2,
    num_classes: int = 2,
    in_chans: int = 3,
    device: str = "auto",
    on_model_done: Callable[[ModelBenchmark], None] | None = None,
) -> dict[str, Any]:
    """Benchmark several models; every name is checked before any model is built.

    Args:
        names: model names.
        batch_size, image_size, in_chans: the input (:func:`random_batch`).
        iterations, warmup, num_classes: as for :func:`benchmark_model`.
        device: ``auto``, ``cpu``, ``cuda``... (see :func:`resolve_device`).
        on_model_done: called with each row as it is measured.

    Returns:
        The JSON record: settings, machine (device, CPU or GPU name, threads, torch version),
        :data:`FLOPS_NOTE`, ``models`` (one dict per model, the fields of
        :class:`ModelBenchmark`) and ``paper_parameters_m`` (seed 000's Table II count, in
        millions, for each model measured that the paper names: :data:`PAPER_PARAMETERS_M`).

    Raises:
        UnknownModelError: a name neither oncoscope nor timm knows (before any work).
        InvalidOptionError: no names, or a batch size, image size or iteration count below 1.
    """
    if not names:
        raise InvalidOptionError("no model names given")
    if min(batch_size, image_size, iterations) < 1 or warmup < 0:
        raise InvalidOptionError(
            "batch size, image size and iterations must be at least 1, warm-up at least 0"
        )
    for name in names:
        check_model_name(name)
    torch_device = resolve_device(device)
    batch = random_batch(batch_size, in_chans, image_size).to(torch_device)
    rows = []
    for name in names:
        row = benchmark_model(
            name, batch=batch, iterations=iterations, warmup=warmup, num_classes=num_classes
        )
        rows.append(asdict(row))
        if on_model_done is not None:
            on_model_done(row)
    return {
        "batch_size": batch_size,
        "image_size": image_size,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "iterations": iterations,
        "warmup": warmup,
        "device": str(torch_device),
        "device_name": _device_name(torch_device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "weights": "random (no download)",
        "flops_note": FLOPS_NOTE,
        "latency_note": "median wall time of one forward pass of a batch, inference mode, ms",
        "models": rows,
        "paper_parameters_m": {n: PAPER_PARAMETERS_M[n] for n in names if n in PAPER_PARAMETERS_M},
        "paper_note": "paper: seed 000 Table II, parameters in millions (head not stated)",
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    name = cpu_model()
    return name if name != UNKNOWN_CPU else platform.processor() or platform.machine()
