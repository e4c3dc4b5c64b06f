"""The data contract shared by every extractor: one modality as a timed feature sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the modalities, in the order of every per-modality tuple and axis: the one definition, which
# models/, datasets and the application import
MODALITIES = ("text", "audio", "vision")


@dataclass
class Sequence:
    """One modality of one media file, at its native rate.

    features: float32 (T, D); times: float64 (T, 2) start/end seconds of each row;
    columns: D names; rate: rows per second (None for word-rate text);
    source: {"id", "version", "config"} of the extractor that made it;
    tokens: one string per row where rows are words (text), else None;
    meta: extractor-specific extras (e.g. "empty_reason", "oov_rate", "boxes").
    T = 0 is legal: a clip without speech or without a face gives an empty sequence
    whose meta["empty_reason"] says why.
    """

    features: np.ndarray
    times: np.ndarray
    columns: tuple[str, ...]
    rate: float | None
    source: dict[str, Any]
    tokens: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.times = np.asarray(self.times, dtype=np.float64)
        self.columns = tuple(self.columns)
        if self.features.ndim != 2:
            raise ValueError(f"features must be 2-D (T, D), got shape {self.features.shape}")
        if self.features.shape[1] != len(self.columns):
            raise ValueError(
                f"features have {self.features.shape[1]} columns but {len(self.columns)} names were given"
            )
        if self.times.shape != (self.features.shape[0], 2):
            raise ValueError(
                f"times must be (T, 2) = ({self.features.shape[0]}, 2), got {self.times.shape}"
            )
        if self.tokens is not None and len(self.tokens) != self.features.shape[0]:
            raise ValueError(f"{len(self.tokens)} tokens for {self.features.shape[0]} rows")
        for key in ("id", "version"):
            if key not in self.source:
                raise ValueError(f"source must name the extractor's {key!r}: {self.source}")

    @property
    def length(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @classmethod
    def empty(
        cls,
        *,
        columns: tuple[str, ...] | list[str],
        rate: float | None,
        source: dict[str, Any],
        reason: str,
        text: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> "Sequence":
        """A sequence with no rows, recording why (no speech, no face, no audio stream ...)."""
        return cls(
            features=np.zeros((0, len(columns)), np.float32),
            times=np.zeros((0, 2), np.float64),
            columns=tuple(columns),
            rate=rate,
            source=source,
            tokens=[] if text else None,
            meta={**(meta or {}), "empty_reason": reason},
        )

    def spec(self) -> dict[str, Any]:
        """What a model trained on this sequence needs to know about it."""
        return {
            "id": self.source["id"],
            "version": self.source["version"],
            "config": self.source.get("config", {}),
            "dim": self.dim,
            "rate": self.rate,
            "columns": list(self.columns),
        }
