"""What a facial backend returns (`FaceRows`) and the interface both backends implement (`FaceBackend`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from extractors.facial.columns import COLUMNS


def _no_features() -> np.ndarray:
    return np.zeros((0, len(COLUMNS)), np.float32)


@dataclass
class FaceRows:
    """One video's sampled frames as a backend saw them.

    One entry per frame in `times`, `sizes`, `counts` and `boxes`; `features` holds the 35
    columns of the frames with a face only (those whose box is not None), in frame order.
    """

    times: list[float] = field(default_factory=list)  # frame times, seconds
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) as decoded
    counts: list[int] = field(default_factory=list)  # faces found in the frame
    boxes: list[np.ndarray | None] = field(default_factory=list)  # followed face (x0, y0, x1, y1), frame pixels
    features: np.ndarray = field(default_factory=_no_features)  # (frames with a face, 35)

    def add_frame(self, *, time: float, size: tuple[int, int], count: int, box: np.ndarray | None) -> None:
        self.times.append(float(time))
        self.sizes.append(size)
        self.counts.append(count)
        self.boxes.append(box)

    @property
    def present(self) -> np.ndarray:
        """(frames,) bool: the frame has a followed face (and a row in `features`)."""
        return np.array([b is not None for b in self.boxes])


class FaceBackend(Protocol):
    """A vision backend: sampled frames (time_s, RGB uint8 HxWx3) -> their `FaceRows`."""

    def run(self, frames: Iterable[tuple[float, np.ndarray]]) -> FaceRows: ...
