"""glibc's allocator told to keep large blocks in the heap, for training and inference on CPUs.

glibc hands every block over its mmap threshold (grown at run time up to 32 MiB) straight to
the kernel and unmaps it on free, so each training step's large activations are mapped again,
zero-filled page by page and unmapped: on a 2-core CPU about half of a training run's time went
to the kernel (benchmarks/README.md, "Large tensors and the C allocator"). Raising the mmap
threshold to :data:`MMAP_THRESHOLD_BYTES` keeps blocks under it in the heap for the next step;
raising the trim threshold to :data:`TRIM_THRESHOLD_BYTES` keeps the heap's free top instead of
giving it back after every step. The process keeps its high-water mark of memory instead.

These are the settings ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` give, made
through ``mallopt`` (glibc's own call) because the environment is read only when a process
starts. The numbers computed are unchanged: the allocator only decides where blocks live.
Hand-written because neither torch nor any library of the field sets them.
"""

from __future__ import annotations

import ctypes
import os

#: Blocks under this size stay in the heap (1 GiB; a larger block is still mapped on its own).
MMAP_THRESHOLD_BYTES = 1 << 30
#: Free memory at the heap's top is given back only beyond this (2 GiB - 1, mallopt's int).
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
#: ``mallopt``'s parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Set to ``default`` to leave glibc's allocator as it is.
OPT_OUT_VARIABLE = "ONCOSCOPE_GLIBC_MALLOC"
#: Variables through which a user already chose glibc's malloc settings (left alone then), and
#: the prefix of the malloc tunables in ``GLIBC_TUNABLES``.
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
USER_TUNABLES = "glibc.malloc."

_kept = False


def keep_large_blocks() -> bool:
    """Have glibc keep blocks under 1 GiB in the heap and its free top unreturned, from now on
    in this process (and in processes it forks).

    Returns:
        True when the settings were made. False, and nothing changed, when the C library is
        not glibc (macOS, Windows, musl), when ``ONCOSCOPE_GLIBC_MALLOC=default``, or when the
        user set ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc``
        entry of ``GLIBC_TUNABLES`` (their choice stands). Never raises.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return False
    if any(name in os.environ for name in USER_VARIABLES):
        return False
    if USER_TUNABLES in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not _glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    global _kept
    made: bool = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    _kept = made and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    return _kept


def _glibc() -> bool:
    """True when this process runs on glibc (read from the C library, not the executable)."""
    try:
        version: str = os.confstr("CS_GNU_LIBC_VERSION") or ""
        return version.startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or not GNU (musl)
        return False


def large_blocks_kept() -> bool:
    """Whether :func:`keep_large_blocks` made its settings in this process."""
    return _kept
