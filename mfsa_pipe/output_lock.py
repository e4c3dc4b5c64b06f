"""One writer per output: `batch` and `build-dataset` hold an exclusive lock on their output.

    with output_lock(out / BATCH_LOCK_NAME, what="batch", option="--out"):
        ...  # a second run on the same output raises OutputBusyError at once

The lock is `fcntl.flock` on a small file: the kernel drops it when the holding process dies,
even by kill -9, so a lock left by a killed run never blocks a rerun. The file itself stays (it
holds the pid of the last holder, for the message). Worker processes take a shared lock on a
second file (`workers_lock`); a new run waits briefly for that one too, so that it never races
a worker left over from a killed run. Where `fcntl` is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from extractors.errors import UserError

BATCH_LOCK_NAME = ".mfsa-pipe.lock"
WORKERS_SUFFIX = ".workers"
LEFTOVER_WAIT_S = 10.0  # leftover workers die within ~1 s of their parent (executors.guard_worker)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class OutputBusyError(UserError):
    """Another run is writing the same output; the message is meant for the user, as is."""


def dataset_lock_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, what: str, option: str) -> Iterator[None]:
    """Hold the exclusive lock `path` (created if needed) while the block runs; raise
    OutputBusyError when another process holds it or its workers are still running."""
    if fcntl is None:
        yield
        return
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            raise OutputBusyError(
                f"{path.parent}: another `mfsa-pipe {what}`{_holder(path)} is writing to this output; "
                f"wait for it to finish, or choose another {option}"
            )
        _wait_for_leftover_workers(path, what=what)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _wait_for_leftover_workers(path: Path, *, what: str) -> None:
    workers = Path(str(path) + WORKERS_SUFFIX)
    if not workers.exists():
        return
    fd = os.open(workers, os.O_RDWR)
    try:
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while not _try_lock(fd, fcntl.LOCK_EX):
            if time.monotonic() > deadline:
                raise OutputBusyError(
                    f"{path.parent}: worker processes of an earlier `mfsa-pipe {what}` are still running; "
                    "end them (they hold this output open), then run again"
                )
            time.sleep(0.1)
    finally:
        os.close(fd)


def hold_shared(path: str | os.PathLike | None) -> int | None:
    """In a worker process: hold a shared lock on the workers' lock file for the process's
    lifetime (returns the fd; the kernel drops the lock when the process ends)."""
    if fcntl is None or path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def workers_lock_path(lock: str | os.PathLike) -> Path:
    return Path(str(lock) + WORKERS_SUFFIX)


__all__ = ["BATCH_LOCK_NAME", "OutputBusyError", "dataset_lock_path", "hold_shared", "output_lock", "workers_lock_path"]
