"""Forward throughput of a model in fp32 and bf16 autocast on the CPU (channels-last).

Run by hand: ``.venv/bin/python benchmarks/model_precision.py [--model resnet18] [--batch 16]``.
``precision=auto`` picks bf16 only where the CPU has native bf16 (AMX or AVX-512-BF16); this
script shows what that choice is worth on the machine at hand.
"""

from __future__ import annotations

import argparse
import time

import torch

from oncoscope.doctor import cpu_has_native_bf16
from oncoscope.models import create_model


def _rate(model: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = create_model(args.model, num_classes=2).eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    fp32 = _rate(model, x, False, args.repeats)
    bf16 = _rate(model, x, True, args.repeats)
    print(
        f"{args.model} batch {args.batch} {args.size}px, {torch.get_num_threads()} threads, "
        f"native bf16: {cpu_has_native_bf16()}: fp32 {fp32:.1f} img/s, bf16 {bf16:.1f} img/s "
        f"({bf16 / fp32:.2f}x)"
    )


if __name__ == "__main__":
    main()
