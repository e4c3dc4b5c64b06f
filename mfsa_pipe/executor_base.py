"""What both executors (`executors.py`: local processes; `ray_executor.py`: Ray) share, below
them both: the configuration, the errors, the shape of a task's result, the check that Ray is
installed, and what runs inside a worker process (it dies with its parent or driver, takes its
share of the cores, and can check the paths a job needs)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from extractors.errors import UserError

EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = 'pip install "mfsa-pipe[ray]"'
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_PERIOD_S = 0.5
PROBE_TIMEOUT_S = 120.0

TaskResult = tuple[int, Any, Exception | None]


class ExecutorError(UserError):
    """The executor cannot be used as asked (Ray missing, no node fits, a path not shared);
    the message is meant for the user, as is."""


class TaskLostError(RuntimeError):
    """A task's worker process or node died (after the allowed retries)."""


@dataclass
class ExecutorConfig:
    kind: str = "local"  # "local" | "ray"
    workers: int = 1  # local: processes; ray on a local instance started here: its CPUs (x cpus_per_task)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a local instance; "auto": a running cluster
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0  # fractional: tasks share a GPU
    max_retries: int = 2  # a task whose worker died is run again this many times

    def validate(self) -> None:
        if self.kind not in EXECUTORS:
            raise ExecutorError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_task <= 0 or self.gpus_per_task < 0:
            raise ExecutorError("--cpus-per-task must be > 0 and --gpus-per-task >= 0")
        if self.kind == "local" and self.ray_address:
            raise ExecutorError("--ray-address needs --executor ray")
        if self.kind == "ray":
            import_ray()  # installed? (before anything is made)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


# --------------------------------------------------------------------------------------------
# in a worker process


def guard_worker(parent_pid: int) -> None:
    """Make this worker process die with its parent: the kernel's parent-death signal (Linux)
    and a watchdog thread that exits when the parent pid changes (any platform; covers a parent
    that died before the signal was armed)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
    _watch(lambda: os.getppid() == parent_pid)


def _watch(alive: Callable[[], bool]) -> None:
    def watch() -> None:
        while alive():
            time.sleep(WATCHDOG_PERIOD_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def watch_driver(host: str, pid: int) -> None:
    """In a Ray worker on the driver's own machine: exit when the driver process is gone (a
    killed driver's local instance would otherwise let its workers finish their video)."""
    import socket

    if socket.gethostname() != host:
        return  # another node: Ray ends the tasks of a job whose driver has gone

    def driver_alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    _watch(driver_alive)


def set_threads(threads: int) -> None:
    """N processes on a few cores: give each its share instead of N x all cores."""
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except ImportError:
        pass
    try:
        import cv2

        cv2.setNumThreads(max(1, threads))
    except ImportError:
        pass


def probe_paths(shared: list[str], readable: list[str], token: str) -> str | None:
    """On one node: None when every `readable` folder exists and every `shared` folder can be
    written and holds the file `token` that the driver wrote there (so it is the same folder,
    not a local one of the same name); else what is wrong, in one line."""
    for folder in readable:
        if not os.path.isdir(folder):
            return f"{folder}: not found on this node"
    for folder in shared:
        if not os.path.exists(os.path.join(folder, token)):
            return f"{folder}: not the driver's folder here (it is not on a shared filesystem)"
        probe = os.path.join(folder, f".write-test.{uuid.uuid4().hex}")
        try:
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as e:
            return f"{folder}: cannot be written on this node ({e.strerror or e})"
    return None
