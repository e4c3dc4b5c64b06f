"""mfsa_pipe.cpu_memory: large blocks come from the heap once it is applied (glibc only)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _glibc() -> bool:
    import ctypes
    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="a glibc setting")

# a 64 MiB tensor, then glibc's count of mmapped blocks (mallinfo2.hblks) while it is alive
PROBE = textwrap.dedent("""
    import ctypes, sys, torch
    from mfsa_pipe.cpu_memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory()
    before = libc.mallinfo2().hblks
    x = torch.ones(16 * 2**20)
    print(applied, libc.mallinfo2().hblks - before, float(x.sum()))
""")


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MFSA_PIPE_MALLOC"}
    return {**env, **extra}


def _probe(**env) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env=_env(**env)).stdout
    return out.split()


def test_large_tensors_come_from_the_heap_and_the_setting_can_be_turned_off():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("not glibc >= 2.33")
    assert _probe() == ["True", "0", str(float(16 * 2**20))]  # applied: no new mmapped block
    assert _probe(MFSA_PIPE_MALLOC="default")[:2] == ["False", "1"]  # glibc's default: the tensor is an mmap


def test_applied_only_when_the_peak_leaves_room_and_decided_once():
    code = textwrap.dedent("""
        from mfsa_pipe import cpu_memory
        first = cpu_memory.keep_freed_memory_if_room(factor={factor})
        again = cpu_memory.keep_freed_memory_if_room(factor=1.0)  # already decided
        print(first, again, cpu_memory._memory_room() > 0)
    """)
    for factor, expected in ((1.5, "True True True"), (1e6, "False False True")):  # 1e6 x the peak: no room
        out = subprocess.run([sys.executable, "-c", code.format(factor=factor)], capture_output=True, text=True,
                             check=True, env=_env()).stdout.strip()
        assert out == expected
