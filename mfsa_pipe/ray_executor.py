"""The Ray executor: one Ray task per file, on a running cluster or a local instance.

Used through `mfsa_pipe.executors.open_executor` (see there). Ray is an optional extra
(`pip install "mfsa-pipe[ray]"`), imported only by `executor_base.import_ray`. Results are yielded as tasks
finish; at most `IN_FLIGHT_PER_SLOT` tasks per task slot of the cluster are submitted at a
time, so that a 100,000-file job neither holds every task's arguments in the driver nor loses
more than the running tasks when the driver is killed (the rerun resumes from the outputs).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from mfsa_pipe.executor_base import (
    PROBE_TIMEOUT_S,
    ExecutorConfig,
    ExecutorError,
    TaskLostError,
    TaskResult,
    import_ray,
    probe_paths,
    set_threads,
    watch_driver,
)

IN_FLIGHT_PER_SLOT = 2
_THREADS_SET: list[int] = []  # per worker process: threads already set


def _call(fn: Callable[..., Any], args: tuple[Any, ...], threads: int, driver: tuple[str, int]) -> Any:
    """The Ray task: fn(*args) in a reused worker process (threads set and the driver watched
    once per process)."""
    if _THREADS_SET != [threads]:
        set_threads(threads)
        watch_driver(*driver)
        _THREADS_SET[:] = [threads]
    return fn(*args)


def _worker_env() -> dict[str, str]:
    """The driver's OMP_NUM_THREADS for the task's worker processes, "" (OpenMP's default) when
    it has none: Ray would set it to the task's CPUs (1 by default), the libraries read it when
    the worker starts, and the speech recogniser's numbers differ with one OpenMP thread. A local
    worker inherits the driver's environment; a Ray task must give the same outputs."""
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}


class RayExecutor:
    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.ray = import_ray()
        self.started_here = self.connected_here = False

    # -- connection --------------------------------------------------------------------------

    def __enter__(self) -> "RayExecutor":
        ray, c = self.ray, self.config
        address = c.ray_address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
        if address is None:  # a fresh local instance, stopped on exit (never someone else's)
            address = "local"
            kwargs.update(include_dashboard=False)
            if c.workers > 1:
                kwargs["num_cpus"] = max(1, round(c.workers * c.cpus_per_task))
        if ray.is_initialized():  # the caller connected already (a notebook, a test): use that
            self.connected_here = False
            self.started_here = False
        else:
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"cannot reach the Ray cluster at {address!r}: {_first_line(e)}") from None
            self.connected_here, self.started_here = True, address == "local"
        try:
            self._check_resources()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self.connected_here and self.ray.is_initialized():
            self.ray.shutdown()  # disconnects; stops the instance when it was started here
        return False

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _check_resources(self) -> None:
        c = self.config
        fits = [n for n in self._nodes()
                if n["Resources"].get("CPU", 0) >= c.cpus_per_task and n["Resources"].get("GPU", 0) >= c.gpus_per_task]
        if not fits:
            have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                             f"{n['Resources'].get('GPU', 0):g} GPU" for n in self._nodes())
            raise ExecutorError(
                f"no Ray node has {c.cpus_per_task:g} CPU and {c.gpus_per_task:g} GPU for one task "
                f"(--cpus-per-task/--gpus-per-task); nodes: {have or 'none'}"
            )

    def describe(self) -> str:
        slots = self._slots()
        where = "a local Ray instance" if self.started_here else "the Ray cluster"
        return f"{slots} task slots on {where}"

    def _slots(self) -> int:
        c, total = self.config, self.ray.cluster_resources()
        slots = int(total.get("CPU", 0) // c.cpus_per_task)
        if c.gpus_per_task > 0:
            slots = min(slots, int(total.get("GPU", 0) // c.gpus_per_task))
        return max(1, slots)

    # -- checks ------------------------------------------------------------------------------

    def check_paths(self, *, shared: list[Path] = (), readable: list[Path] = ()) -> None:
        """Run `probe_paths` on every alive node; raise ExecutorError naming the first node
        that cannot read the inputs or write the (shared) outputs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray, token = self.ray, f".mfsa-pipe-shared-check.{uuid.uuid4().hex}"
        shared_s, readable_s = [str(p) for p in shared], [str(p) for p in readable]
        for folder in shared_s:
            Path(folder).mkdir(parents=True, exist_ok=True)  # e.g. a feature cache not made yet
            Path(folder, token).touch()
        try:
            probe = ray.remote(probe_paths)
            refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(shared_s, readable_s, token): n["NodeManagerAddress"] for n in self._nodes()}
            try:
                answers = ray.get(list(refs), timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise ExecutorError(f"the Ray nodes did not answer a path check within {PROBE_TIMEOUT_S:.0f} s") from None
        finally:
            for folder in shared_s:
                Path(folder, token).unlink(missing_ok=True)
        for node, problem in zip(refs.values(), answers):
            if problem:
                raise ExecutorError(f"Ray node {node}: {problem}; inputs and --out must be on a filesystem "
                                    "every node mounts at the same path (docs/scale_out.md)")

    # -- the work ----------------------------------------------------------------------------

    def map(self, fn: Callable[..., Any], tasks: list[tuple[Any, ...]]) -> Iterator[TaskResult]:
        ray, c = self.ray, self.config
        remote = ray.remote(max_calls=0)(_call).options(  # max_calls=0: reuse workers, GPU tasks too
            num_cpus=c.cpus_per_task, num_gpus=c.gpus_per_task, max_retries=c.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": _worker_env()},
        )
        threads, driver = max(1, int(c.cpus_per_task)), (socket.gethostname(), os.getpid())
        fn_ref = ray.put(fn)
        window = IN_FLIGHT_PER_SLOT * self._slots()
        pending: dict[Any, int] = {}
        next_task = 0
        try:
            while pending or next_task < len(tasks):
                while next_task < len(tasks) and len(pending) < window:
                    pending[remote.remote(fn_ref, tasks[next_task], threads, driver)] = next_task
                    next_task += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield self._outcome(pending.pop(ref), ref)
        finally:
            for ref in pending:  # the caller stopped early or was interrupted
                ray.cancel(ref, force=True)

    def _outcome(self, index: int, ref: Any) -> TaskResult:
        ray = self.ray
        try:
            return index, ray.get(ref), None
        except ray.exceptions.RayTaskError as e:  # fn raised: not retried, reported as it is
            return index, None, e.as_instanceof_cause()
        except ray.exceptions.RayError as e:  # worker or node died: Ray retried it max_retries times
            return index, None, TaskLostError(
                f"its worker was lost {self.config.max_retries + 1} times (process killed or node down): {_first_line(e)}"
            )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
