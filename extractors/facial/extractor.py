"""`FacialExtractor`: sampled frames -> a 35-column Facet-like `Sequence` at 15 Hz, by either backend.

Rows: one per sampled frame, times [t, t + 1/rate]. Rows without a face have every column 0
(`face_present` = 0 included) and a NaN box. Which face a row describes: `tracking`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable

import numpy as np

from extractors.config import VisionConfig
from extractors.facial.backend import FaceBackend, FaceRows
from extractors.facial.columns import COLUMNS
from extractors.facial.mesh import CHUNK_ROWS, MeshBackend
from extractors.facial.pyfeat import PyFeatBackend
from extractors.sequence import Sequence

VERSION = "1.0"
IDS = {"mesh": "vision.mesh-fer-au", "py-feat": "vision.py-feat"}


def describe(config: VisionConfig) -> dict[str, Any]:
    """The vision spec without running anything."""
    return {"id": IDS[config.backend], "version": VERSION, "config": asdict(config),
            "dim": len(COLUMNS), "rate": config.rate, "columns": list(COLUMNS)}


def backend_for(config: VisionConfig, *, chunk_rows: int = CHUNK_ROWS) -> FaceBackend:
    """The backend `config.backend` names."""
    if config.backend == "py-feat":
        return PyFeatBackend(config)
    return MeshBackend(config, chunk_rows=chunk_rows)


class FacialExtractor:
    def __init__(self, config: VisionConfig | None = None) -> None:
        self.config = config or VisionConfig()
        self.spec = describe(self.config)

    @property
    def source(self) -> dict[str, Any]:
        return {k: self.spec[k] for k in ("id", "version", "config")}

    def extract(self, frames: Iterable[tuple[float, np.ndarray]], *, duration_s: float,
                frame_size: tuple[int, int] | None = None, chunk_rows: int = CHUNK_ROWS) -> Sequence:
        """Frames (time_s, RGB uint8 HxWx3) sampled at `config.rate` -> Sequence (T = frames).

        `frame_size` (width, height) is the video's size: boxes are given in its pixels when the
        frames were decoded at another size. Without frames: an empty Sequence with a reason.
        Memory stays flat with duration: the mesh backend turns every `chunk_rows` faces into
        their 35 columns and drops their meshes and crops (the columns do not depend on it).
        """
        rows = backend_for(self.config, chunk_rows=chunk_rows).run(frames)
        if not rows.times:
            return Sequence.empty(columns=COLUMNS, rate=self.config.rate, source=self.source,
                                  reason="no video frames to analyse", meta={"face_coverage": 0.0})
        return self._assemble(rows, duration_s=duration_s, frame_size=frame_size)

    def _assemble(self, rows: FaceRows, *, duration_s: float,
                  frame_size: tuple[int, int] | None) -> Sequence:
        present = rows.present
        feats = np.zeros((len(rows.times), len(COLUMNS)), np.float32)
        if present.any():
            feats[present] = rows.features  # the backend's columns, faces only
        times = np.asarray(rows.times, np.float64)
        ends = times + 1.0 / self.config.rate
        if duration_s and duration_s > 0:
            ends = np.maximum(np.minimum(ends, duration_s), times)
        return Sequence(
            features=feats, times=np.stack([times, ends], 1), columns=COLUMNS,
            rate=self.config.rate, source=self.source,
            meta={"boxes": _video_boxes(rows, frame_size), "face_coverage": float(present.mean()),
                  "faces_per_frame": np.asarray(rows.counts, np.int16),
                  "frame_size": list(frame_size or rows.sizes[0])},
        )


def _video_boxes(rows: FaceRows, frame_size: tuple[int, int] | None) -> np.ndarray:
    """(frames, 4) followed-face boxes in the video's pixel grid (frames may come at another size); NaN: none."""
    boxes = np.full((len(rows.times), 4), np.nan)
    for i, (b, (w, h)) in enumerate(zip(rows.boxes, rows.sizes)):
        if b is not None:
            sx, sy = (frame_size[0] / w, frame_size[1] / h) if frame_size else (1.0, 1.0)
            boxes[i] = np.clip(b * [sx, sy, sx, sy], 0, [w * sx, h * sy, w * sx, h * sy])
    return boxes
