"""Model selection and early stopping on the validation task loss (L1 = MAE for regression,
cross-entropy for classification / multilabel, the sum over heads for multihead, as MulT selects
its best epoch). Their counters live in TrainState, so a resumed run decides as an uninterrupted
one would."""

from __future__ import annotations

import math
from typing import Any

from mfsa_pipe.training.state import TrainState

MIN_DELTA = 1e-6  # a lower loss by less than this is not an improvement


class EarlyStopping:
    """`selection` "best": the epoch with the lowest validation task loss is kept; "last": every
    epoch with a finite loss replaces the kept one. `patience` (None = never): stop after that
    many epochs without a lower loss."""

    def __init__(self, *, patience: int | None, selection: str) -> None:
        self.patience = patience
        self.selection = selection

    def update(self, state: TrainState, *, epoch: int, loss: float, metrics: dict[str, Any]) -> bool:
        """Record `epoch`'s validation task loss in `state`; True when it becomes the kept epoch."""
        lower = math.isfinite(loss) and loss < state.best_value - MIN_DELTA
        kept = lower if self.selection == "best" else math.isfinite(loss)
        if lower:
            state.best_value, state.bad_epochs = loss, 0
        else:
            state.bad_epochs += 1
            state.stopped_early = self.patience is not None and state.bad_epochs >= self.patience
        if kept:
            state.best_epoch, state.best_valid = epoch, metrics
        return kept
