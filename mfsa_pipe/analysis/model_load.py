"""The checkpoint's model (torch, weights, network) loaded in a background thread while the
features are extracted: importing torch alone takes ~2.5 CPU s, most of a cold `analyze`'s
fixed cost, and the extraction spends its time in native code that leaves a core free.

    loading = ModelLoad.start(header.path, device="cpu")   # after read_checkpoint_header's checks
    ...                                                     # extraction; loading.raise_if_failed() between stages
    checkpoint, predictor = loading.result()               # joined before the model runs

Imports in two threads: torch's import graph shares only the standard library and leaf packages
(typing_extensions, tqdm) with the extractors' (measured: no package that imports one of the
other thread's packages back), so the two import chains cannot wait on each other; mediapipe and
its TFLite runtime, which do, are imported by the extraction thread before its facial thread
starts (extractors.pipeline._facial_imports).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.checkpoint import Checkpoint, load_checkpoint


def _load(path: Path, device: str) -> tuple[Checkpoint, Predictor]:
    checkpoint = load_checkpoint(path)
    return checkpoint, Predictor(checkpoint, device=device)


class ModelLoad:
    """A (Checkpoint, Predictor) being loaded, or already at hand (`ready`)."""

    def __init__(self, future: "Future[tuple[Checkpoint, Predictor]]") -> None:
        self._future = future

    @classmethod
    def start(cls, path: str | Path, *, device: str) -> "ModelLoad":
        """load_checkpoint(path) and its Predictor, in a thread from now on."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfsa-model")
        future = pool.submit(_load, Path(path), device)
        pool.shutdown(wait=False)  # the thread ends with its one task
        return cls(future)

    @classmethod
    def ready(cls, checkpoint: Checkpoint, predictor: Any) -> "ModelLoad":
        future: Future = Future()
        future.set_result((checkpoint, predictor))
        return cls(future)

    def raise_if_failed(self) -> None:
        """Raise the load's error (e.g. weights that do not fit) as soon as it is known, so that a
        refused checkpoint does not wait for the whole extraction."""
        if self._future.done() and self._future.exception() is not None:
            self._future.result()

    def result(self) -> tuple[Checkpoint, Predictor]:
        """Wait for the load: (checkpoint, predictor), or its error raised here."""
        return self._future.result()
