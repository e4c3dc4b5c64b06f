"""Keep the memory of freed large tensors mapped between training steps (glibc, Linux).

PyTorch's CPU tensors come from malloc. glibc serves every block of 32 MiB or more with a
fresh mmap and returns it with munmap when it is freed, so each new block pays its page faults
again (about 10 ms per 128 MiB here). An MFSA training step allocates and frees dozens of
(B, K, T, T) attention maps of that size: at MOSI shapes, batch 16, 2 cores, its step takes
8.2 s with glibc's default and 2.9 s with the setting below (MulT: 3.9 and 2.4 s;
benchmarks/bench_models.py [--glibc-malloc]).

`keep_freed_memory()` serves large blocks from the heap (M_MMAP_MAX = 0) and never trims its
free top (M_TRIM_THRESHOLD), so the pages stay mapped from one step to the next. The price: the
process stays at its high-water mark plus the heap's fragmentation (MFSA's process peak RSS
6.5 -> 8.1 GiB in the same benchmark). At the paper's MOSI batch of 64 (21.2 GiB peak with
glibc's default) that was more than a 24 GB machine has, so training applies it only when there
is room: `keep_freed_memory_if_room()` runs after the first step, which ran with glibc's default,
and applies it when that peak times 1.5 fits in memory. `train` (the training loop) and
`run_model` (validation, `evaluate`) call it on CPU. MFSA_PIPE_MALLOC=default turns it off;
other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc stores the threshold as a size_t: -1 converts to SIZE_MAX, i.e. never trim (a large int
# such as 2**31 - 1 is not enough: a step that frees more than 2 GiB at the top gave it back)
_NEVER = -1

# heap fragmentation on top of the live peak: MFSA at batch 16 peaked at 6.5 GiB with glibc's
# default and 8.1 GiB with the setting (1.25x); at batch 64 (21.2 GiB with the default) the
# setting ran out of a 24 GB machine
ROOM_FACTOR = 1.5

_applied: bool | None = None
_checked = False


def keep_freed_memory() -> bool:
    """Apply the glibc settings above once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def keep_freed_memory_if_room(*, factor: float = ROOM_FACTOR) -> bool:
    """Call after a first training step (or batch) has run with glibc's default: applies
    keep_freed_memory() when the process's peak RSS so far, times `factor`, fits in what the
    machine offers (this process's RSS + MemAvailable). Decides once per process; a later, much
    larger batch is not foreseen (MFSA_PIPE_MALLOC=default then)."""
    global _checked
    if _checked:
        return bool(_applied)
    _checked = True
    room = _memory_room()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    if room is None or peak * factor > room:
        return False
    return keep_freed_memory()


def _memory_room() -> int | None:
    """Bytes this process could hold: its resident set plus the machine's MemAvailable."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return available + resident


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
