"""Keep the memory of freed large tensors mapped between training steps (glibc, Linux).

PyTorch's CPU tensors come from malloc. glibc serves every block of 32 MiB or more with a
fresh mmap and returns it with munmap when it is freed, so each new block pays its page faults
again (about 10 ms per 128 MiB here). An MFSA training step allocates and frees dozens of
(B, K, T, T) attention maps of that size: at MOSI shapes, batch 16, 2 cores, its step takes
8.2 s with glibc's default and 2.9 s with the setting below (MulT: 3.9 and 2.4 s;
benchmarks/bench_models.py [--glibc-malloc]).

`keep_freed_memory()` serves large blocks from the heap (M_MMAP_MAX = 0) and never trims its
free top (M_TRIM_THRESHOLD), so the pages stay mapped from one step to the next. The price: the process holds on to memory it has freed, i.e. stays at its high-water mark
(MFSA's process peak RSS 6.5 -> 8.1 GiB in the same benchmark). It is a process-wide choice, made by the commands that train or
evaluate (`train`, `evaluate`, the benchmarks), not by library calls. MFSA_PIPE_MALLOC=default
turns it off; other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc stores the threshold as a size_t: -1 converts to SIZE_MAX, i.e. never trim (a large int
# such as 2**31 - 1 is not enough: a step that frees more than 2 GiB at the top gave it back)
_NEVER = -1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the glibc settings above once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get("MFSA_PIPE_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has a mallopt that ignores these
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER) == 1
