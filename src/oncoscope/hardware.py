"""The machine at hand and the precision chosen for it, with one ``--precision`` vocabulary.

Below training, inference and the CLI (it imports nothing of oncoscope but its errors, and torch
only to resolve ``auto``), so that ``oncoscope train``, ``oncoscope slide`` and
``oncoscope doctor`` decide the same way.
``--precision`` is ``auto``, ``fp32``, ``bf16`` or ``fp16``; ``auto`` is bf16 (else fp16) on
a CUDA GPU, bf16 on a CPU with native bf16 (AMX or AVX-512-BF16), fp32 elsewhere (emulated
bf16 is slower than fp32). ``train``'s earlier spellings (``32``, ``16`` and Lightning's
``32-true``, ``bf16-mixed``, ``16-mixed``) are still read, with a deprecation note.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from oncoscope.errors import InvalidOptionError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
#: What ``--precision`` accepts.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Earlier spellings, read as the precision they name.
OLD_SPELLINGS: dict[str, Precision] = {
    "32": "fp32",
    "16": "fp16",
    "32-true": "fp32",
    "bf16-mixed": "bf16",
    "16-mixed": "fp16",
}
#: Lightning's name of each precision (``Trainer(precision=...)``).
LIGHTNING_PRECISION: dict[str, str] = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


#: What :func:`cpu_model` says when ``/proc/cpuinfo`` names no model.
UNKNOWN_CPU = "unknown CPU"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or :data:`UNKNOWN_CPU`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return UNKNOWN_CPU


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AMX-BF16 or AVX-512-BF16 (Linux ``/proc/cpuinfo``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def normalize_precision(precision: str) -> str:
    """``auto|fp32|bf16|fp16`` for a ``--precision`` value, earlier spellings included.

    Example:
        >>> normalize_precision("bf16")
        'bf16'

    Raises:
        InvalidOptionError: a value that is none of these.
    """
    if precision in PRECISIONS:
        return precision
    if precision in OLD_SPELLINGS:
        new = OLD_SPELLINGS[precision]
        warnings.warn(
            f"--precision {precision} is an earlier spelling; use {new}",
            FutureWarning,
            stacklevel=2,
        )
        return new
    raise InvalidOptionError(
        f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
    )


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> Precision:
    """The precision to compute in on ``device`` (``"cpu"``, ``"cuda"`` or a torch device).

    Raises:
        InvalidOptionError: an unknown precision.
    """
    chosen = normalize_precision(precision)
    if chosen != "auto":
        return chosen  # type: ignore[return-value]
    import torch

    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"
