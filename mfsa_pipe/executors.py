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

The configuration, the errors and what runs inside a worker process are defined in
`executor_base.py`, below this module and `ray_executor.py`, and exported from here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from mfsa_pipe.executor_base import (
    EXECUTORS,
    RAY_INSTALL_HINT,
    ExecutorConfig,
    ExecutorError,
    TaskLostError,
    TaskResult,
    guard_worker,
    probe_paths,
    set_threads,
)
from mfsa_pipe.output_lock import hold_shared
from mfsa_pipe.ray_executor import RayExecutor


# --------------------------------------------------------------------------------------------
# local processes


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
        return RayExecutor(config)
    return LocalExecutor(config, workers_lock=None if workers_lock is None else str(workers_lock))


__all__ = ["EXECUTORS", "RAY_INSTALL_HINT", "ExecutorConfig", "ExecutorError", "LocalExecutor", "TaskLostError",
           "guard_worker", "open_executor", "probe_paths", "run_in_processes", "set_threads"]
