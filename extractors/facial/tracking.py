"""Which face a row describes: the selection rule among the faces found, and following it.

`VisionConfig.face` ("largest" or "center") picks among the faces of a frame; once picked, a
face is followed while its box overlaps the previous row's (IoU >= FOLLOW_IOU), and the choice
is made afresh when it is lost (no face in a frame, or no overlapping one).
"""

from __future__ import annotations

import numpy as np

FOLLOW_IOU = 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def select_face(boxes: list[np.ndarray], *, previous: np.ndarray | None, rule: str,
                frame_wh: tuple[float, float]) -> int:
    """Index of the face to follow among `boxes` (x0, y0, x1, y1), see the module docstring."""
    if previous is not None:
        overlaps = [_iou(b, previous) for b in boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= FOLLOW_IOU:
            return best
    if rule == "center":
        c = np.array(frame_wh) / 2
        return int(np.argmin([np.hypot(*((b[:2] + b[2:]) / 2 - c)) for b in boxes]))
    return int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))


class FaceFollower:
    """`select_face` over one video's frames: remembers the followed face's box between frames."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.previous: np.ndarray | None = None

    def pick(self, boxes: list[np.ndarray], *, frame_wh: tuple[float, float]) -> int:
        """Index of the face this frame's row describes; it becomes the followed face."""
        k = select_face(boxes, previous=self.previous, rule=self.rule, frame_wh=frame_wh)
        self.previous = boxes[k]
        return k

    def lose(self) -> None:
        """A frame without a face: the next face found is chosen afresh."""
        self.previous = None
