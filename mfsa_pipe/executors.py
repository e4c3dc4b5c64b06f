"""Where the per-file work of `batch` and `build-dataset` runs: local processes or a Ray cluster.

    config = ExecutorConfig(kind="ray", ray_address="auto", cpus_per_task=2, gpus_per_task=0.25)
    with open_executor(config) as executor:
        executor.check_paths(shared=[out_dir], readable=[input_folder])  # every node, up front
        for index, result, error in executor.map(fn, tasks):
            ...  # as each task finishes; error: the task was lost (worker killed, retries spent)

`fn(*task)` never raises for a bad file (it returns a failure record); `error` is only for a lost
worker. Local worker processes die with their parent (`guard_worker`). A Ray task is retried
`max_retries` times when its worker or node dies, then reported as lost. Model and extractor
assets are cached per process (the extractors' own caches, `batch`'s checkpoint cache), and Ray
reuses its worker processes across tasks (`max_calls=0`, also for GPU tasks), so they load once
per worker process, not per file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from extractors.errors import UserError
from mfsa_pipe.output_lock import hold_shared

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
            from mfsa_pipe.ray_executor import import_ray

            import_ray()  # installed? (before anything is made)


# --------------------------------------------------------------------------------------------
# local processes


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


def _init_local_worker(threads: int, parent_pid: int, workers_lock: str | None) -> None:
    guard_worker(parent_pid)
    hold_shared(workers_lock)  # a rerun waits for this process before it writes anything
    set_threads(threads)


def run_in_processes(
    fn: Callable[..., Any], tasks: list[tuple[Any, ...]], *, workers: int, workers_lock: str | None = None
) -> Iterator[TaskResult]:
    """Run fn(*task) for each task in `workers` processes; yield (task index, result, None) as
    each finishes, or (index, None, error) when its worker failed (e.g. was killed), so that one
    task's failure never stops the rest. Workers are spawned (forking a process that already
    holds torch/OpenMP threads can deadlock), get their share of the cores and die with this
    process. On an interrupt, or when the caller stops early, tasks not yet started are
    cancelled and running ones finish."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_local_worker, initargs=(threads, os.getpid(), workers_lock)) as pool:
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - a crashed worker fails its task only
                    yield futures[fut], None, e
                else:
                    yield futures[fut], result, None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class LocalExecutor:
    """`workers` spawned processes on this machine (the paths are this machine's)."""

    def __init__(self, config: ExecutorConfig, *, workers_lock: str | None = None) -> None:
        self.config, self.workers_lock = config, workers_lock

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.config.workers} workers"

    def check_paths(self, *, shared: list[Path] = (), readable: list[Path] = ()) -> None:
        pass  # one machine: the caller has already checked them

    def map(self, fn: Callable[..., Any], tasks: list[tuple[Any, ...]]) -> Iterator[TaskResult]:
        return run_in_processes(fn, tasks, workers=self.config.workers, workers_lock=self.workers_lock)


def open_executor(config: ExecutorConfig, *, workers_lock: str | os.PathLike | None = None):
    """The executor for `config`, to use as a context manager (Ray: connects, or starts a local
    instance that is stopped on exit). Raises ExecutorError for a misconfiguration."""
    config.validate()
    if config.kind == "ray":
        from mfsa_pipe.ray_executor import RayExecutor

        return RayExecutor(config)
    return LocalExecutor(config, workers_lock=None if workers_lock is None else str(workers_lock))


# --------------------------------------------------------------------------------------------
# checks run on every node


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


__all__ = ["EXECUTORS", "RAY_INSTALL_HINT", "ExecutorConfig", "ExecutorError", "LocalExecutor", "TaskLostError",
           "guard_worker", "open_executor", "probe_paths", "run_in_processes", "set_threads"]
