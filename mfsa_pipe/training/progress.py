"""What a training run shows on the terminal: a rich progress bar (epochs, the current epoch's
batches with the live loss), one line per epoch, and the summary."""

from __future__ import annotations

import math
from typing import Any, Sequence as Seq

# the validation metrics shown per task
SHOWN = {"regression": ["mae", "corr", "acc2", "acc7"], "classification": ["acc", "macro_f1", "weighted_f1"],
         "multilabel": ["mean_acc", "mean_f1"], "multihead": ["mean_acc", "mean_weighted_f1"]}


def fmt_metrics(metrics: dict[str, Any], keys: Seq[str]) -> str:
    parts = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            parts.append(f"{k} {v:.3f}")
    return "  ".join(parts)


class Progress:
    """A rich progress bar: overall epochs, and the current epoch's batches with the live loss."""

    def __init__(self, *, enabled: bool, total_epochs: int, start: int, header: str = "") -> None:
        self.enabled = enabled
        self.header = header
        self.total_epochs = total_epochs
        self.start = start
        self.progress: Any = None

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.progress.__enter__()
        self.overall = self.progress.add_task("epochs", total=self.total_epochs, completed=self.start, info="")
        self.batch_task = None
        if self.header:
            self.progress.console.print(self.header, markup=False, highlight=False)
        if self.start:
            self.progress.console.print(f"resuming after epoch {self.start}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.progress is None:
            return
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {epoch}", total=batches, info="")

    def advance(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.batch_task, advance=1, info=f"loss {loss:.4f}")

    def end_epoch(self, epoch: int, line: str) -> None:
        if self.progress is None:
            return
        self.progress.update(self.overall, completed=epoch, info="  ".join(line.split("  ")[:2]))
        self.progress.console.print(f"epoch {epoch:3d}  {line}")

    def summary(self, result: Any, keys: Seq[str]) -> None:
        from rich.console import Console

        console = Console(stderr=False, markup=False, emoji=False)  # the out path is the user's text
        console.print(f"best epoch {result.best_epoch}: valid {fmt_metrics(result.valid_metrics, keys)}")
        if result.test_metrics:
            console.print(f"test: {fmt_metrics(result.test_metrics, keys)}")
        console.print(f"checkpoint: {result.checkpoint}")
