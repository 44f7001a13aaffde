"""The C allocator behind CPU tensors.

PyTorch takes CPU tensor memory from malloc. glibc serves big blocks (one (128, 32, 28, 28)
float activation of the default GAN is 12.8 MB) with fresh mmap()s or trims them off its heap
when they are freed, so each training step faults many of its activations in again, page by
page: about 10,000 page faults a step for the default GAN on MNIST, 5 to 20% of its time on the
2-core machine of docs/benchmarks/README.md. Raising glibc's mmap and trim thresholds keeps freed
blocks in the heap for the next step to reuse, as jemalloc or tcmalloc would. The cost: the
process keeps its peak memory until it exits instead of handing it back between steps.

Settings the user made (MALLOC_*_ variables, GLIBC_TUNABLES, an LD_PRELOADed allocator) win,
and AIGC_MALLOC=system turns this off.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # (an int) never shrink the heap on free
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_state: str | None = None


def tune_cpu_allocator() -> str:
    """Make glibc reuse freed tensor memory (once per process); returns what was done, for
    ``aigc info``."""
    global _state
    if _state is None:
        _state = _tune()
    return _state


def is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _tune() -> str:
    if not is_glibc():
        return "system default (not glibc)"
    if os.environ.get("AIGC_MALLOC", "").strip().lower() == "system":
        return "system default (AIGC_MALLOC=system)"
    own = [name for name in USER_SETTINGS if os.environ.get(name)]
    if own:
        return f"system default ({own[0]} is set)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        ok = False
    return "glibc, freed blocks kept for reuse" if ok else "system default (mallopt refused)"
